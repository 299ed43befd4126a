"""The promotion gate on hand-made per-post counts (true positives, false positives,
false negatives): a paired bootstrap over posts, backend.loop.gate."""

from __future__ import annotations

import pytest

from backend.loop import gate

GOOD = [3, 0, 0]  # a post where the model finds all 3 skills
HALF = [1, 1, 2]  # ... finds one, gets one wrong, misses two


def result(candidate, champion, name="v0001") -> dict:
    def scored(counts):
        return {"f1": float(gate.corpus_f1(gate.np.asarray(counts))), "per_post": counts}

    return {"candidate": scored(candidate), "baseline": {"version": name, **scored(champion)}}


def test_corpus_f1_from_counts_is_micro_f1():
    # 4 correct, 1 wrong, 2 missed: P 4/5, R 4/6, F1 = 2*4 / (2*4 + 1 + 2)
    assert float(gate.corpus_f1(gate.np.asarray([GOOD, HALF]))) == pytest.approx(8 / 11)
    assert float(gate.corpus_f1(gate.np.asarray([[0, 0, 0]]))) == 0.0


def test_clear_gain_is_promoted_with_its_interval():
    posts = 30
    decision = gate.decide(result([GOOD] * posts, [HALF] * 20 + [GOOD] * 10), 0.01, posts)
    assert decision.promote
    d = decision.details
    assert d["measured"] and d["posts"] == posts and d["resamples"] == 1000
    assert 0 < d["low"] <= d["difference"] <= d["high"]
    assert d["champion"] == "v0001" and "not worse than v0001" in decision.reason
    assert "80% interval" in decision.reason


def test_identical_models_are_promoted_as_not_worse():
    counts = [GOOD, HALF, [0, 2, 1], [2, 0, 1]] * 5
    decision = gate.decide(result(counts, counts), 0.0, len(counts))
    assert decision.promote and decision.details["low"] == decision.details["high"] == 0.0


def test_clear_loss_is_refused():
    posts = 30
    decision = gate.decide(result([HALF] * 20 + [GOOD] * 10, [GOOD] * posts), 0.01, posts)
    assert not decision.promote and decision.details["high"] < 0
    assert "may be worse than v0001" in decision.reason


def test_a_noise_level_gain_on_enough_posts_is_not_a_measured_improvement():
    """The candidate wins 3 posts and loses 2 of 20: a higher F1 on all posts, but the
    bootstrap cannot exclude that it is worse (lower bound below -margin)."""
    champion = [GOOD] * 10 + [HALF] * 10
    candidate = [HALF] * 2 + [GOOD] * 8 + [GOOD] * 3 + [HALF] * 7
    decision = gate.decide(result(candidate, champion), 0.0, 20)
    d = decision.details
    assert d["difference"] > 0 and d["low"] < 0 < d["high"]
    assert not decision.promote and "may be worse" in decision.reason


def test_too_few_heldout_posts_say_so_instead_of_measuring():
    decision = gate.decide(result([GOOD] * 3, [HALF] * 3), 0.01, 3)
    assert decision.promote and not decision.details["measured"]
    assert "only 3 held-out posts" in decision.reason and "too few" in decision.reason
    assert "point F1 alone" in decision.reason and "low" not in decision.details
    assert gate.summary(decision.details) == "not measured (3 held-out posts)"
    refused = gate.decide(result([HALF] * 3, [GOOD] * 3), 0.01, 3)
    assert not refused.promote and "too few" in refused.reason


def test_first_model_and_no_heldout_posts():
    first = gate.decide({"candidate": {"f1": 0.2}, "baseline": {"error": "no head"}}, 0, 3)
    assert first.promote and "first model" in first.reason and "no head" in first.reason
    # the one-line summary says why there is no interval, not that the posts were too few
    assert gate.summary(first.details) == "first model: nothing to compare (3 held-out posts)"
    empty = gate.decide({"candidate": None, "baseline": None}, 0.01, 0)
    assert empty.promote and "no held-out posts" in empty.reason
    broken = gate.decide({"candidate": {"error": "boom"}, "baseline": None}, 0.01, 5)
    assert not broken.promote and "could not be scored: boom" in broken.reason


def test_the_bootstrap_is_seeded_and_paired():
    a = [GOOD, HALF, [0, 1, 3], [2, 1, 0]] * 4
    b = [HALF, GOOD, [1, 0, 2], [2, 0, 1]] * 4
    assert gate.paired_bootstrap(a, b) == gate.paired_bootstrap(a, b)
    # paired: the same draw of posts for both models, so a model against itself is 0
    same = gate.paired_bootstrap(a, a)
    assert same.low == same.high == same.difference == 0.0
    with pytest.raises(ValueError, match="different posts"):
        gate.paired_bootstrap(a, a[:-1])


def test_post_counts_add_up_to_the_evaluation_f1():
    from training.evaluate import evaluate_predictions
    from training.text import Document, Span, spans_to_tags, words

    docs = [
        Document("python and sql for data", [Span(0, 6, "Tech"), Span(11, 14, "Tech")]),
        Document("team work and java", [Span(0, 9, "Soft"), Span(14, 18, "Tech")]),
        Document("nothing here", []),
    ]
    predicted = [[Span(0, 6, "Tech")], [Span(0, 4, "Soft"), Span(14, 18, "Tech")], []]
    report = evaluate_predictions(docs, predicted, ["Tech", "Soft"])
    counts = gate.post_counts(
        [spans_to_tags(d.spans, words(d.text)) for d in docs],
        [spans_to_tags(p, words(d.text)) for p, d in zip(predicted, docs, strict=True)],
    )
    assert counts == [[1, 0, 1], [1, 1, 1], [0, 0, 0]]
    assert float(gate.corpus_f1(gate.np.asarray(counts))) == pytest.approx(report.f1)
