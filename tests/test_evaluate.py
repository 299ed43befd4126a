"""Evaluation figures checked against hand-computed examples."""

import pytest

from training.evaluate import OVERALL, Score, evaluate, evaluate_predictions, span_scores
from training.text import Document, Span

TEXT = "we need python and sql and team work"
#       0  3    8      15  19  23  27   32
GOLD = Document(TEXT, [Span(8, 14, "Tech"), Span(19, 22, "Tech"), Span(27, 36, "Soft")])


def test_span_figures_by_hand():
    predicted = [
        Span(8, 14, "Tech"),  # correct
        Span(19, 22, "Soft"),  # wrong label
        Span(27, 31, "Soft"),  # too short
    ]
    report = evaluate_predictions([GOLD], [predicted], labels=["Tech", "Soft"])
    tech, soft, overall = (report.char[k] for k in ("Tech", "Soft", OVERALL))
    assert (tech.precision, tech.recall, tech.support, tech.predicted) == (1.0, 0.5, 2, 1)
    assert tech.f1 == pytest.approx(2 / 3)
    assert (soft.precision, soft.recall, soft.support, soft.predicted) == (0.0, 0.0, 1, 2)
    assert overall.precision == pytest.approx(1 / 3) and overall.recall == pytest.approx(1 / 3)
    # word-level entities agree with character spans here (spans sit on word boundaries)
    assert report.entity["Tech"].f1 == pytest.approx(2 / 3)
    assert report.entity[OVERALL].f1 == pytest.approx(1 / 3)
    assert report.entity["Tech"].support == 2 and report.entity["Soft"].predicted == 2
    assert report.f1 == report.entity[OVERALL].f1


def test_strict_and_default_modes_differ_on_an_orphan_inside_tag():
    # words: we need python and sql and team work
    tags = ["O", "O", "B-Tech", "O", "I-Tech", "O", "B-Soft", "I-Soft"]
    report = evaluate_predictions([GOLD], [[]], ["Tech", "Soft"], predicted_tag_lists=[tags])
    # default mode reads the orphan I-Tech as an entity; strict IOB2 does not
    assert report.entity_default["Tech"].recall == 1.0
    model = report.entity_model
    assert model["Tech"].recall == 0.5 and model["Tech"].precision == 1.0
    assert model["Soft"].f1 == 1.0
    # the headline scores what was served: here, no spans at all
    assert report.entity[OVERALL].predicted == 0 and report.f1 == 0.0


def test_the_headline_scores_the_served_spans_not_the_raw_tags():
    text = "we need Python."
    gold = Document(text, [Span(8, 14, "Tech")])
    raw = ["O", "O", "B-Tech", "I-Tech"]  # the model's tags run over the final period
    served = [Span(8, 14, "Tech", "Python")]  # the decoder trims it: what users get
    report = evaluate_predictions([gold], [served], ["Tech"], predicted_tag_lists=[raw])
    assert report.f1 == 1.0 and report.char[OVERALL].f1 == 1.0
    assert report.entity_model[OVERALL].f1 == 0.0  # the raw tags would have scored 0
    assert report.to_dict()["entity_strict"]["overall"]["f1"] == 1.0


def test_perfect_and_empty_predictions():
    perfect = evaluate_predictions([GOLD], [GOLD.spans])
    assert perfect.labels == ["Tech", "Soft"]
    assert perfect.char[OVERALL].f1 == 1.0 and perfect.entity[OVERALL].f1 == 1.0
    empty = evaluate_predictions([GOLD], [[]])
    assert empty.char[OVERALL] == Score(0.0, 0.0, 0.0, 3, 0)
    assert empty.entity[OVERALL].f1 == 0.0 and empty.entity[OVERALL].support == 3


def test_span_scores_match_exact_offsets_only():
    scores = span_scores([[Span(0, 4, "A")]], [[Span(0, 4, "A"), Span(0, 3, "A")]], ["A"])
    assert scores["A"].precision == 0.5 and scores["A"].recall == 1.0


def test_table_and_dict():
    report = evaluate_predictions([GOLD], [GOLD.spans[:1]], ["Tech", "Soft"])
    lines = report.table().splitlines()
    assert lines[0].split()[:4] == ["strict", "P", "R", "F1"]
    assert lines[2].split()[0] == "Tech" and lines[-1].split()[0] == OVERALL
    assert len({len(line) for line in lines}) == 1  # aligned columns
    d = report.to_dict()
    assert d["char_span"]["Tech"] == {
        "precision": 1.0,
        "recall": 0.5,
        "f1": 0.6667,
        "support": 2,
        "predicted": 1,
    }
    assert d["entity_strict"][OVERALL]["support"] == 3


def test_mismatched_lengths_are_rejected():
    with pytest.raises(ValueError, match="predictions"):
        evaluate_predictions([GOLD], [])
    with pytest.raises(ValueError, match="tags for"):
        evaluate_predictions([GOLD], [[]], predicted_tag_lists=[["O"]])


def test_evaluate_with_a_tagger(tiny_reference_model, reference_label_map):
    from training.tagger import Tagger

    labels = ["Business", "Technology", "Technical", "Soft"]
    tagger = Tagger.load(tiny_reference_model, labels, reference_label_map, quantize=False)
    docs = [Document("we need python", [Span(8, 14, "Technology")]), Document("team work")]
    report = evaluate(tagger, docs)
    predictions = tagger.predict([d.text for d in docs])
    expected = evaluate_predictions(docs, [p.spans for p in predictions], labels)
    assert report.to_dict() == expected.to_dict()
    assert report.char["Technology"].support == 1
