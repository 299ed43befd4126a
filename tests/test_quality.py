"""Label quality figures against hand-computed examples."""

from __future__ import annotations

import numpy as np
import pytest

from labeling.curation.quality import (
    OVERALL,
    agreement,
    likely_label_errors,
    match_spans,
    preannotation_edits,
)
from labeling.store import AnnotationRecord
from training.tagger import Prediction
from training.text import Document, Span, tag_names, words

TEXT = "We need Python and SQL skills"


def span(text: str, part: str, label: str, nth: int = 0) -> Span:
    start = -1
    for _ in range(nth + 1):
        start = text.index(part, start + 1)
    return Span(start, start + len(part), label, part)


def rec(aid, task, spans, who="a", text=TEXT, at=None, **extra) -> AnnotationRecord:
    at = at or f"2026-01-01T00:00:{aid:02d}"
    return AnnotationRecord(
        aid, task, "1", text, spans, annotator=who, created_at=at, updated_at=at, **extra
    )


def test_agreement_matches_hand_computed_figures():
    a = rec(1, 7, [span(TEXT, "Python", "Tech"), span(TEXT, "SQL", "Tech")], "ann")
    b = rec(2, 7, [span(TEXT, "Python", "Tech"), span(TEXT, "SQL skills", "Tech")], "bob")
    single = rec(3, 8, [span(TEXT, "Python", "Tech")], "ann")  # labelled once: not compared
    result = agreement([a, b, single], ["Tech", "Soft"])
    assert (result.posts, result.pairs) == (1, 1)
    tech = result.by_label["Tech"]
    # exact: Python matches, SQL vs "SQL skills" does not: 2 * 1 / (2 + 2)
    assert tech.exact_f1 == pytest.approx(0.5)
    # partial: SQL overlaps "SQL skills": 2 * 2 / 4
    assert tech.partial_f1 == pytest.approx(1.0)
    assert result.by_label["Soft"].spans == 0
    assert result.by_label[OVERALL].exact_f1 == pytest.approx(0.5)
    # word tags  a: O O B O B O   b: O O B O B I
    # p_o = 5/6; p_e = (4*3 + 2*2 + 0*1) / 36 = 16/36; kappa = (30-16)/(36-16) = 0.7
    assert result.kappa == pytest.approx(0.7)
    assert result.to_dict()["span_f1"]["Tech"]["exact"] == 0.5


def test_agreement_counts_each_annotator_once_per_post():
    first = rec(1, 7, [span(TEXT, "SQL", "Tech")], "ann")
    again = rec(2, 7, [span(TEXT, "Python", "Tech")], "ann")  # ann's later word counts
    other = rec(3, 7, [span(TEXT, "Python", "Tech")], "bob")
    skipped = rec(4, 7, [], "cat", cancelled=True)
    result = agreement([first, again, other, skipped])
    assert (result.posts, result.pairs) == (1, 1)
    assert result.by_label["Tech"].exact_f1 == 1.0
    assert result.kappa == 1.0


def test_agreement_label_mismatch_is_no_match():
    a = rec(1, 7, [span(TEXT, "Python", "Tech")], "ann")
    b = rec(2, 7, [span(TEXT, "Python", "Soft")], "bob")
    result = agreement([a, b])
    assert result.by_label["Tech"].partial_f1 == 0.0
    assert result.by_label[OVERALL].spans == 2
    assert result.kappa < 0.5


def test_partial_matching_is_one_to_one():
    x = [Span(0, 10, "L")]
    y = [Span(0, 4, "L"), Span(5, 10, "L")]
    assert len(match_spans(x, y, partial=True)) == 1
    assert match_spans(x, y, partial=False) == []


def test_preannotation_edits_per_label():
    text = "Python, Excel and teamwork plus communication"
    predicted = [
        span(text, "Python", "Technology"),
        span(text, "Excel", "Technology"),
        span(text, "teamwork", "Soft"),
        span(text, "plus", "Soft"),
    ]
    final = [
        span(text, "Python", "Technology"),
        span(text, "Excel", "Technical"),
        span(text, "teamwork plus", "Soft"),
        span(text, "communication", "Soft"),
    ]
    r = rec(1, 1, final, text=text, prediction_spans=predicted, prediction_model_version="v0002")
    scratch = rec(2, 2, [span(text, "Python", "Technology")], text=text)  # no pre-annotation
    edits = preannotation_edits([r, scratch], ["Technology", "Technical", "Soft"])
    assert edits.annotations == 1
    tech, soft = edits.by_label["Technology"], edits.by_label["Soft"]
    assert (tech["accepted"], tech["corrected"], tech["deleted"]) == (1, 1, 0)
    # "teamwork" grew into "teamwork plus" (corrected); "plus" lost its span (deleted)
    assert (soft["corrected"], soft["deleted"], soft["added"]) == (1, 1, 1)
    assert edits.by_label[OVERALL] == {"accepted": 1, "corrected": 2, "deleted": 1, "added": 1}
    assert edits.relabelled[("Technology", "Technical")] == 1
    figures = edits.to_dict()
    assert figures["by_label"]["Technology"]["acceptance"] == 0.5
    assert figures["by_model_version"]["v0002"]["added"] == 1


class FakeTagger:
    """Per-word tag probabilities chosen by the test: what a confident model would say."""

    labels = ["Tech", "Soft"]
    tags = tag_names(labels)
    version = "fake"

    def __init__(self, word_tags: dict[str, tuple[str, float]]):
        self.word_tags = word_tags  # word -> (tag, probability)

    def predict(self, texts):
        out = []
        for text in texts:
            offsets = words(text)
            probs = np.full((len(offsets), len(self.tags)), 0.0, dtype=np.float32)
            spans = []
            for i, (s, e) in enumerate(offsets):
                tag, p = self.word_tags.get(text[s:e], ("O", 0.97))
                probs[i] = (1 - p) / (len(self.tags) - 1)
                probs[i, self.tags.index(tag)] = p
                if tag != "O":
                    spans.append(Span(s, e, tag[2:], text[s:e], p))
            out.append(Prediction(text, offsets, self.tags, probs, spans))
        return out


def test_likely_label_errors_lists_confident_contradictions():
    text = "We need Python and SQL and empathy"
    doc = Document(
        text,
        [span(text, "Python", "Tech"), span(text, "We", "Soft"), span(text, "empathy", "Tech")],
        id="3",
    )
    tagger = FakeTagger(
        {"Python": ("B-Tech", 0.99), "SQL": ("B-Tech", 0.95), "empathy": ("B-Soft", 0.6)}
    )
    issues = likely_label_errors(tagger, [doc], threshold=0.9)
    found = {(i.kind, i.span.text, i.model_label) for i in issues}
    # "We" as Soft: the model says O with 0.97; SQL unlabelled but the model is sure
    assert found == {("disputed", "We", "O"), ("missing", "SQL", "Tech")}
    assert issues[0].confidence >= issues[-1].confidence
    assert "[[SQL]]" in next(i for i in issues if i.kind == "missing").context
    # a lower threshold also catches the unsure disagreement on "empathy"
    lower = likely_label_errors(tagger, [doc], threshold=0.55)
    assert ("disputed", "empathy", "Soft") in {(i.kind, i.span.text, i.model_label) for i in lower}
