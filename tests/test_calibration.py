"""Span scores that mean what they say: a CRF tagger reports the brute-force marginals and
span probabilities of its own lattice, ECE is the hand-worked figure, and a temperature
fitted on over-confident predictions is above 1, stored in the checkpoint and applied on
load."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from labeling.active.strategies import BALD, LeastConfidence, item_from_prediction
from tests.conftest import save_tiny_model
from tests.test_crf import random_scores
from tests.test_decoding import TAGS
from tests.test_marginals import brute_force, has_exact_span
from training.calibration import (
    expected_calibration_error,
    fit_temperature,
    reliability,
    reliability_diagram,
    span_nll,
    span_outcomes,
    write_calibration,
)
from training.checkpoint import METADATA_FILE
from training.crf import Lattice
from training.tagger import Tagger
from training.text import Document, Span

LABELS = ["Skill", "Knowledge"]  # tag_names(LABELS) == TAGS
TEXT = "we need python and sql"


def tiny_tagger_folder(folder, scale: float, crf: bool):
    """A tiny model for LABELS whose head is random and `scale` times sharper; with `crf`,
    random CRF scores in its metadata."""
    import torch
    from transformers import AutoModelForTokenClassification

    save_tiny_model(folder, TAGS)
    model = AutoModelForTokenClassification.from_pretrained(folder)
    with torch.no_grad():
        torch.manual_seed(3)
        model.classifier.weight.normal_(0.0, scale)
        model.classifier.bias.normal_(0.0, scale)
    model.save_pretrained(folder)
    if crf:
        (folder / METADATA_FILE).write_text(json.dumps({"crf": random_scores(4).to_json()}))
    return folder


@pytest.fixture(scope="module")
def crf_folder(tmp_path_factory):
    return tiny_tagger_folder(tmp_path_factory.mktemp("crf"), 0.5, crf=True)


def test_ece_matches_a_hand_worked_example():
    # bin [0.9, 1.0]: scores 0.95, 0.95, 0.95, 0.95 -> 2 of 4 right: |0.5 - 0.95| = 0.45
    # bin [0.2, 0.3): scores 0.25, 0.25             -> 1 of 2 right: |0.5 - 0.25| = 0.25
    # bin [0.6, 0.7): score 0.6 (edge goes up)      -> right:        |1.0 - 0.6|  = 0.40
    scores = np.array([0.95, 0.95, 0.95, 0.95, 0.25, 0.25, 0.6])
    correct = np.array([True, False, True, False, True, False, True])
    expected = 4 / 7 * 0.45 + 2 / 7 * 0.25 + 1 / 7 * 0.40
    assert expected_calibration_error(scores, correct) == pytest.approx(expected)
    bins = reliability(scores, correct)
    assert [b.count for b in bins] == [0, 0, 2, 0, 0, 0, 1, 0, 0, 4]
    assert reliability(np.array([1.0]), np.array([True]))[-1].count == 1  # 1.0: last bin
    assert expected_calibration_error(np.array([]), np.array([], dtype=bool)) == 0.0
    assert span_nll(np.array([0.5, 0.5]), np.array([True, False])) == pytest.approx(math.log(2))


def test_span_outcomes_count_only_exact_offsets_and_label():
    doc = Document(TEXT, [Span(8, 14, "Skill"), Span(19, 22, "Knowledge")])

    class Predicted:
        spans = [
            Span(8, 14, "Skill", score=0.9),  # exact
            Span(19, 22, "Skill", score=0.8),  # wrong label
            Span(3, 14, "Skill", score=0.7),  # wrong offsets
        ]

    scores, correct = span_outcomes([Predicted()], [doc])
    assert scores.tolist() == [0.9, 0.8, 0.7] and correct.tolist() == [True, False, False]


def test_a_crf_tagger_reports_its_lattice_brute_force_probabilities(crf_folder):
    tagger = Tagger.load(crf_folder, LABELS, quantize=False)
    assert tagger.transitions is not None
    for temperature in (1.0, 1.8):
        tagger.set_temperature(temperature)
        reading = tagger.read([TEXT])[0]
        prediction = tagger.score([reading])[0]
        lattice = Lattice.crf(TAGS, tagger.transitions, temperature)
        paths = brute_force(reading.decode_probs.astype(np.float64), lattice)
        expected = np.zeros((len(prediction.words), len(TAGS)))
        for path, p in paths.items():
            expected[np.arange(len(path)), path] += p
        np.testing.assert_allclose(prediction.probs.sum(axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(prediction.probs, expected, atol=1e-5)
        # the decoded path is the lattice's best, and its probability is reported
        best = max(paths, key=paths.get)
        assert prediction.word_tags == [TAGS[i] for i in best]
        assert math.exp(prediction.path_log_prob) == pytest.approx(paths[best], rel=1e-5)
        assert prediction.spans, "the random model should predict something"
        starts = [w[0] for w in prediction.words]
        for span in prediction.spans:
            first, last = (
                starts.index(span.start),
                max(i for i, s in enumerate(starts) if s < span.end),
            )
            mass = sum(
                p for path, p in paths.items() if has_exact_span(path, first, last, span.label)
            )
            assert span.score == pytest.approx(mass, abs=1e-6)
        # active learning reads the same numbers
        item = item_from_prediction(prediction)
        np.testing.assert_allclose(item.probs, prediction.probs)
        assert LeastConfidence().uncertainty(item) == pytest.approx(1 - paths[best], rel=1e-5)


def test_bald_samples_the_crf_marginals_with_the_tagger_lattice(crf_folder):
    tagger = Tagger.load(crf_folder, LABELS, quantize=False)
    prediction = tagger.predict([TEXT], hidden=True)[0]
    head = tagger.classifier_head()
    assert not head["lattice"].free
    # with no dropout noise to speak of, every sample is the tagger's own marginals,
    # and the marginals of the first word rule out I- tags (no span starts inside)
    bald = BALD(head["weight"], head["bias"], dropout=1e-9, samples=3, lattice=head["lattice"])
    assert bald.uncertainty(item_from_prediction(prediction)) == pytest.approx(0.0, abs=1e-6)
    logits = prediction.hidden @ head["weight"].T + head["bias"]
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    marginals = head["lattice"].posteriors([softmax])[0].marginals
    # the line rule aside (one line here), these are the reported probabilities
    np.testing.assert_allclose(marginals, prediction.probs, atol=1e-4)


def test_a_plain_tagger_reports_the_emission_softmax_and_a_span_product(tmp_path):
    folder = tiny_tagger_folder(tmp_path / "plain", 0.5, crf=False)
    tagger = Tagger.load(folder, LABELS, quantize=False)
    reading = tagger.read([TEXT])[0]
    prediction = tagger.score([reading])[0]
    assert prediction.path_log_prob is None
    np.testing.assert_allclose(prediction.probs, reading.doc.probs, atol=1e-6)
    starts = [w[0] for w in prediction.words]
    for span in prediction.spans:
        first = starts.index(span.start)
        last = max(i for i, s in enumerate(starts) if s < span.end)
        p = prediction.probs
        b, i = TAGS.index(f"B-{span.label}"), TAGS.index(f"I-{span.label}")
        expected = p[first, b] * np.prod(p[first + 1 : last + 1, i])
        expected *= 1 - p[last + 1, i] if last + 1 < len(p) else 1.0
        assert span.score == pytest.approx(expected, rel=1e-4)


def test_a_temperature_fitted_on_over_confident_spans_is_above_one_and_is_applied_on_load(
    tmp_path,
):
    # a random head made 40 times sharper: spans scored near 1, mostly wrong
    folder = tiny_tagger_folder(tmp_path / "sharp", 40.0, crf=True)
    tagger = Tagger.load(folder, LABELS, quantize=False)
    texts = [TEXT, "python and sql for data work", "we need sql", "team work and python"]
    docs = [
        Document(texts[0], [Span(8, 14, "Skill"), Span(19, 22, "Skill")]),
        Document(texts[1], [Span(0, 6, "Skill"), Span(11, 14, "Skill")]),
        Document(texts[2], [Span(8, 11, "Skill")]),
        Document(texts[3], [Span(0, 9, "Knowledge"), Span(14, 20, "Skill")]),
    ]
    before = tagger.predict(texts)
    scores, correct = span_outcomes(before, docs)
    assert scores.mean() > correct.mean() + 0.3  # over-confident indeed
    fit = fit_temperature(tagger, docs)
    assert fit.temperature > 1.0
    assert fit.nll_after < fit.nll_before and fit.ece_after < fit.ece_before
    assert tagger.temperature == 1.0  # fitting leaves the tagger alone

    write_calibration(folder, fit)
    metadata = json.loads((folder / METADATA_FILE).read_text())
    assert metadata["crf"] and metadata["calibration"]["temperature"] == pytest.approx(
        fit.temperature, rel=1e-4
    )
    loaded = Tagger.load(folder, LABELS, quantize=False)
    assert loaded.temperature == pytest.approx(fit.temperature, rel=1e-4)
    assert "temperature=" in repr(loaded)
    after = loaded.predict(texts)
    assert [p.word_tags for p in after] == [p.word_tags for p in before]  # same decoding
    assert np.mean([s.score for p in after for s in p.spans]) < scores.mean()
    assert span_outcomes(after, docs)[0] == pytest.approx(
        span_outcomes(tagger.score(tagger.read(texts), fit.temperature), docs)[0]
    )


def test_an_invalid_stored_temperature_is_ignored_and_a_diagram_is_written(crf_folder, tmp_path):
    write_calibration(crf_folder, {"temperature": -3})
    assert Tagger.load(crf_folder, LABELS, quantize=False).temperature == 1.0
    write_calibration(crf_folder, {"temperature": 1.0})
    rng = np.random.default_rng(0)
    scores = rng.random(200)
    png = reliability_diagram(
        {"raw": (scores, rng.random(200) < scores**2)}, tmp_path / "r.png", "test"
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_round_fits_the_temperature_on_its_held_out_posts_before_the_gate(tiny_encoder, tmp_path):
    from backend.loop.child import run
    from backend.loop.spec import RoundSpec
    from tests.test_finetune import FAST, corpus
    from tests.test_finetune import LABELS as ROUND_LABELS
    from training.checkpoint import read_metadata
    from training.datasets import write_jsonl

    folder = tmp_path / "round"
    folder.mkdir()
    docs = corpus()
    write_jsonl(docs[:4], folder / "train.jsonl")
    write_jsonl(docs[4:] or docs[:2], folder / "heldout.jsonl")
    config = replace(FAST, epochs=1, crf=True)
    spec = RoundSpec(
        folder,
        str(tiny_encoder),
        ROUND_LABELS,
        tmp_path / "candidate",
        config=config,
        quantize=False,
    )
    result = run(spec)
    stored = read_metadata(tmp_path / "candidate")["calibration"]
    assert result["calibration"] == stored and stored["temperature"] > 0
    assert stored["objective"] == "span_nll" and result["candidate"]["f1"] is not None
