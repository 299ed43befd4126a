"""Query strategies on hand-made probability arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from labeling.active.strategies import (
    BALD,
    ClassBalanced,
    DiverseBatch,
    PoolItem,
    candidate_spans,
    get_strategy,
    strategy_names,
    task_score,
)
from training.tagger import Prediction
from training.text import tag_names, words

TAGS = tag_names(["Skill"])  # O, B-Skill, I-Skill


def word(p_o: float, p_b: float = None, p_i: float = 0.0) -> list[float]:
    p_b = 1.0 - p_o - p_i if p_b is None else p_b
    return [p_o, p_b, p_i]


def item(id: str, rows, embedding=None, hidden=None) -> PoolItem:
    probs = np.array(rows, dtype=float).reshape(-1, len(TAGS))
    return PoolItem(id, probs, TAGS, embedding=embedding, hidden=hidden)


def confident(n: int, p: float = 0.99) -> list[list[float]]:
    return [word(p) for _ in range(n)]


LONG = item("long", confident(60, 0.97))  # every word fairly sure, but many words
SHORT = item("short", [word(0.6), word(0.7), word(0.65)])  # few words, all doubtful


def ids(picks) -> list[str]:
    return [p.id for p in picks]


def test_mnlp_prefers_the_uncertain_short_post_where_least_confidence_takes_the_long_one():
    pool = [LONG, SHORT]
    assert ids(get_strategy("least_confidence").query(pool, 1)) == ["long"]
    assert ids(get_strategy("mnlp").query(pool, 1)) == ["short"]
    # the reason: P(best sequence) of 60 words at 0.97 (0.16) is lower than of 3 words at
    # ~0.65 (0.27); MNLP's per-word mean says the opposite
    least, mnlp = get_strategy("least_confidence"), get_strategy("mnlp")
    assert least.uncertainty(LONG) == pytest.approx(1 - 0.97**60)
    assert least.uncertainty(SHORT) == pytest.approx(1 - 0.6 * 0.7 * 0.65)
    assert mnlp.uncertainty(LONG) == pytest.approx(-math.log(0.97))
    assert mnlp.uncertainty(SHORT) == pytest.approx(-math.log(0.6 * 0.7 * 0.65) / 3)


def test_entropy_mean_and_max_and_margin():
    flat = item("flat", [word(0.34, 0.33, 0.33)] + confident(9))
    mild = item("mild", [word(0.7)] * 10)
    assert ids(get_strategy("entropy_max").query([mild, flat], 1)) == ["flat"]
    assert ids(get_strategy("entropy_mean").query([flat, mild], 1)) == ["mild"]
    assert ids(get_strategy("margin").query([flat, mild], 1)) == ["mild"]
    tie = item("tie", [word(0.5, 0.5)])
    assert get_strategy("margin").uncertainty(tie) == pytest.approx(1.0)


def test_span_level_finds_one_doubtful_span_in_a_long_confident_post():
    rows = confident(80)
    rows[40] = [0.05, 0.55, 0.40]  # B-Skill, unsure
    rows[41] = [0.05, 0.10, 0.85]  # I-Skill
    doubtful_span = item("one-doubt", rows)
    mediocre = item("mediocre", [word(0.8)] * 10)  # no span anywhere, mildly unsure
    span = get_strategy("span")
    assert ids(span.query([mediocre, doubtful_span], 1)) == ["one-doubt"]
    assert ids(get_strategy("mnlp").query([mediocre, doubtful_span], 1)) == ["mediocre"]
    spans = candidate_spans(doubtful_span)
    assert [(s.first, s.last, s.label, s.predicted) for s in spans] == [(40, 41, "Skill", True)]
    assert spans[0].doubt == pytest.approx(1 - 0.55 * 0.85)
    picked = span.query([doubtful_span], 1)[0]
    assert any("Skill" in reason for reason in picked.reasons)


def test_span_level_near_miss():
    rows = confident(10)
    rows[3] = word(0.6, 0.4)  # predicted O, but 40% a skill
    near = candidate_spans(item("near", rows))
    assert [(s.first, s.last, s.predicted) for s in near] == [(3, 3, False)]
    assert near[0].doubt == pytest.approx(0.4)


def test_bald_is_zero_without_dropout_variation_and_positive_with_it():
    rng = np.random.default_rng(0)
    hidden_sure = np.zeros((4, 8))  # dropout cannot change a zero input: no disagreement
    hidden_varied = rng.normal(size=(4, 8)) * 3
    weight, bias = rng.normal(size=(3, 8)), np.zeros(3)
    bald = BALD(weight, bias, dropout=0.5, samples=20)
    sure = item("sure", [word(1 / 3, 1 / 3, 1 / 3)] * 4, hidden=hidden_sure)
    varied = item("varied", [word(0.9)] * 4, hidden=hidden_varied)
    assert bald.uncertainty(sure) == pytest.approx(0.0, abs=1e-9)
    assert ids(bald.query([sure, varied], 1, rng=0)) == ["varied"]
    with pytest.raises(ValueError, match="hidden states"):
        bald.uncertainty(item("x", [word(0.5)]))
    with pytest.raises(ValueError, match="head"):
        get_strategy("bald")
    assert isinstance(get_strategy("bald", weight=weight, bias=bias), BALD)


def test_edge_cases_empty_pool_small_pool_and_posts_without_words():
    empty = item("empty", np.zeros((0, 3)))
    for name in ["random", "least_confidence", "mnlp", "entropy_mean", "margin", "span"]:
        strategy = get_strategy(name)
        assert strategy.query([], 5) == []
        picks = strategy.query([empty, SHORT, LONG], 10, rng=1)
        assert sorted(ids(picks)) == ["long", "short"], name  # the wordless post is never picked
        assert strategy.query([SHORT], 0) == []
    with pytest.raises(ValueError, match="batch size"):
        get_strategy("mnlp").query([SHORT], -1)
    with pytest.raises(ValueError, match="unknown strategy"):
        get_strategy("nope")
    with pytest.raises(ValueError, match="modifier"):
        get_strategy("mnlp+fancy")
    assert "bald" in strategy_names()


def test_token_budget_is_respected_and_shorter_posts_fill_it():
    rng = np.random.default_rng(3)
    pool = [
        item(f"p{i}", [word(rng.uniform(0.4, 0.99)) for _ in range(rng.integers(1, 30))])
        for i in range(40)
    ]
    for name in ["mnlp", "least_confidence", "random", "span"]:
        picks = get_strategy(name).query(pool, 100, budget_tokens=57, rng=0)
        assert picks and sum(p.cost for p in picks) <= 57
        left = 57 - sum(p.cost for p in picks)
        chosen = set(ids(picks))
        # nothing left out would still have fitted in what remains of the budget
        assert all(it.cost > left for it in pool if it.id not in chosen), name
    assert get_strategy("mnlp").query(pool, 100, budget_tokens=0) == []


def test_random_is_reproducible_by_seed():
    pool = [item(f"p{i}", confident(3)) for i in range(30)]
    a = ids(get_strategy("random").query(pool, 5, rng=7))
    assert a == ids(get_strategy("random").query(pool, 5, rng=7))
    assert a != ids(get_strategy("random").query(pool, 5, rng=8))


def test_diversity_avoids_near_duplicates():
    rng = np.random.default_rng(0)
    base = rng.normal(size=16)
    pool = []
    for i in range(6):  # six near-copies of one post, the most uncertain of all
        pool.append(
            item(
                f"dup{i}",
                [word(0.5 + 0.001 * i)] * 5,
                embedding=base + rng.normal(scale=1e-3, size=16),
            )
        )
    for i in range(6):  # distinct posts, a little less uncertain
        pool.append(item(f"other{i}", [word(0.6)] * 5, embedding=rng.normal(size=16)))
    plain = ids(get_strategy("mnlp").query(pool, 4))
    diverse = ids(get_strategy("mnlp+diverse").query(pool, 4, rng=0))
    assert all(i.startswith("dup") for i in plain)
    assert sum(i.startswith("dup") for i in diverse) == 1
    assert diverse[0].startswith("dup")  # the best post still comes first
    with pytest.raises(ValueError, match="embeddings"):
        DiverseBatch(get_strategy("mnlp")).query([item(f"x{i}", [word(0.5)]) for i in range(5)], 2)


def test_class_balancing_favours_rare_labels():
    tags = tag_names(["Common", "Rare"])

    def post(id, column):
        probs = np.full((4, len(tags)), 0.02)
        probs[:, 0] = 0.6
        probs[1, column] = 0.3
        probs /= probs.sum(axis=1, keepdims=True)
        return PoolItem(id, probs, tags)

    common, rare = post("common", tags.index("B-Common")), post("rare", tags.index("B-Rare"))
    balanced = ClassBalanced(get_strategy("mnlp"), {"Common": 500, "Rare": 3})
    assert balanced.uncertainty(rare) > balanced.uncertainty(common)
    assert ids(balanced.query([common, rare], 1)) == ["rare"]


def test_random_balanced_draws_at_random_leaning_to_rare_labels():
    # it used to return the pool's first posts: ClassBalanced scaled random's uncertainty,
    # which is 0 for every post, so every post tied and the pool order decided
    tags = tag_names(["Common", "Rare"])

    def post(id, label):
        probs = np.full((4, len(tags)), 0.02)
        probs[:, 0] = 0.6
        probs[1, tags.index(f"B-{label}")] = 0.3
        return PoolItem(id, probs / probs.sum(axis=1, keepdims=True), tags)

    pool = [post(f"common{i}", "Common") for i in range(10)]
    pool += [post(f"rare{i}", "Rare") for i in range(10)]
    strategy = get_strategy("random+balanced", label_counts={"Common": 500, "Rare": 3})
    batches = [ids(strategy.query(pool, 5, rng=seed)) for seed in range(40)]
    assert len({tuple(b) for b in batches}) > 30  # different seeds, different batches
    assert batches[0] != [f"common{i}" for i in range(5)]
    picked = [i for b in batches for i in b]
    rare_share = sum(i.startswith("rare") for i in picked) / len(picked)
    assert rare_share > 0.6  # weight 1 + 3 * 0.3 vs about 1: rare posts win most draws


def test_task_score_lower_means_more_useful():
    def prediction(rows) -> Prediction:
        probs = np.array(rows, dtype=np.float32).reshape(-1, 3)
        text = " ".join(["w"] * len(probs))
        return Prediction(text, [(2 * i, 2 * i + 1) for i in range(len(probs))], TAGS, probs)

    sure, unsure = prediction(confident(5)), prediction([word(0.5)] * 5)
    for name in ["mnlp", "least_confidence", "entropy_mean", "margin", "span"]:
        a, b = task_score(sure, name), task_score(unsure, name)
        assert 0.0 <= b < a <= 1.0, name
    assert task_score(sure) == pytest.approx(0.99)  # MNLP: the geometric mean of the maxima
    assert task_score(prediction([])) == 1.0  # nothing to label: served last
    ranked = sorted([sure, unsure], key=task_score)
    assert ranked[0] is unsure
    # random's task score carries no information: it varies from call to call, in [0, 1]
    draws = [task_score(sure, "random") for _ in range(20)]
    assert all(0.0 <= d <= 1.0 for d in draws) and len(set(draws)) > 1


def test_doubtful_spans_never_start_or_end_on_a_dangling_joiner():
    # the demo's select showed "real-" and "-time systems" as doubtful spans
    text = "real- and -time systems."
    offsets = words(text)  # real - and - time systems .
    rows = [word(0.3), word(0.3, 0.0, 0.7), word(0.99), word(0.6), word(0.3, 0.0, 0.7)]
    rows += [word(0.3, 0.0, 0.7), word(0.6)]
    pool_item = PoolItem("p", np.array(rows), TAGS, text=text, words=offsets)
    shown = [text[offsets[s.first][0] : offsets[s.last][1]] for s in candidate_spans(pool_item)]
    assert shown == ["real", "time systems"]
