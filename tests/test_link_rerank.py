"""The linker's default ranking: the re-ranking scores (training/link_rerank.py), the
settings in linker.json (training/linker_settings.py), and folders written before them.

Label embeddings are set by hand (a LabelIndex of unit vectors), so which entry the first
stage puts on top, and by how much, is known exactly."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from training.link_rerank import LexicalIndex, rerank, sentence_scores
from training.linker import LabelIndex, Linker, SentenceEncoder
from training.linker_settings import (
    BEFORE_RERANK,
    DEFAULT_CONTEXT_WEIGHT,
    DEFAULT_LEXICAL_WEIGHT,
    DEFAULT_PREFERRED_WEIGHT,
    DEFAULT_SENTENCE_WEIGHT,
    DEFAULT_THRESHOLD,
    LinkerSettings,
)
from training.taxonomy import load_csv

TAXONOMY_CSV = """id,preferred_label,alt_labels
adm,kubernetes administration,
orc,container orchestration,
talk,communication,communication skills
"""
FIRST_STAGE = LinkerSettings(sentence_weight=0.0, lexical_weight=0.0)


@pytest.fixture
def taxonomy(tmp_path: Path):
    path = tmp_path / "skills.csv"
    path.write_text(TAXONOMY_CSV, encoding="utf-8")
    return load_csv(path)


def hand_index() -> LabelIndex:
    """adm = e0, orc = e1, talk's two labels = e2 and e3 (4 dimensions)."""
    texts = ["kubernetes administration", "container orchestration"]
    texts += ["communication", "communication skills"]
    return LabelIndex(np.eye(4, dtype=np.float32), np.array([0, 1, 2]), texts)


def linker_with(taxonomy, settings: LinkerSettings, tiny_encoder: Path) -> Linker:
    return Linker.from_index(taxonomy, SentenceEncoder(tiny_encoder), settings, hand_index())


# A query a little nearer orc (0.62) than adm (0.60): the first stage's top is orc.
QUERY = np.array([[0.60, 0.62, 0.0, np.sqrt(1 - 0.60**2 - 0.62**2)]], dtype=np.float32)


def test_the_default_linker_re_ranks_by_the_span_s_written_form(taxonomy, tiny_encoder):
    first = linker_with(taxonomy, FIRST_STAGE, tiny_encoder).rank(QUERY, 2, ["kubernetes admin"])
    assert [c.id for c in first[0]] == ["orc", "adm"]
    linker = linker_with(taxonomy, LinkerSettings(), tiny_encoder)  # the defaults
    (ranked,) = linker.rank(QUERY, 2, ["kubernetes admin"])
    assert [c.id for c in ranked] == ["adm", "orc"]  # the trigrams of "admin" tip it
    lexical = LexicalIndex(hand_index().texts, hand_index().offsets).scores(["kubernetes admin"])
    g, w = DEFAULT_SENTENCE_WEIGHT, DEFAULT_LEXICAL_WEIGHT
    expected = (0.60 + g * 0.60 + w * lexical[0, 0]) / (1 + g + w)  # the query stands in
    assert ranked[0].score == pytest.approx(expected, abs=1e-5)  # for the missing sentence
    assert lexical[0, 0] > 0.5 and lexical[0, 1] == 0.0


def test_the_sentence_re_ranks_the_first_stage_s_top(taxonomy, tiny_encoder):
    settings = LinkerSettings(lexical_weight=0.0)  # the sentence score alone
    linker = linker_with(taxonomy, settings, tiny_encoder)
    about_adm = np.eye(4, dtype=np.float32)[:1]  # the sentence is about kubernetes admin
    (ranked,) = linker.rank(QUERY, 2, ["k8s"], about_adm)
    assert [c.id for c in ranked] == ["adm", "orc"]
    assert ranked[0].score == pytest.approx((0.60 + 0.2 * 1.0) / 1.2, abs=1e-5)
    (without,) = linker_with(taxonomy, FIRST_STAGE, tiny_encoder).rank(QUERY, 2, ["k8s"], about_adm)
    assert [c.id for c in without] == ["orc", "adm"]


def test_scores_over_top_entries_equal_those_over_all_entries():
    index = hand_index()
    rng = np.random.default_rng(0)
    sentences = rng.normal(size=(3, 4)).astype(np.float32)
    top = np.array([[2, 0], [1, 2], [0, 1]])
    full = sentence_scores(index.vectors, index.offsets, sentences)
    assert full.shape == (3, 3)
    assert np.allclose(
        sentence_scores(index.vectors, index.offsets, sentences, top),
        np.take_along_axis(full, top, axis=1),
    )
    assert full[0, 2] == pytest.approx(max(sentences[0, 2], sentences[0, 3]))  # best label
    lexical = LexicalIndex(index.texts, index.offsets)
    texts = ["kubernetes admin", "communication skill", "orchestration"]
    everything = lexical.scores(texts)
    assert np.allclose(lexical.scores(texts, top), np.take_along_axis(everything, top, axis=1))
    assert everything[1].argmax() == 2 and everything[2].argmax() == 1
    assert rerank(np.array([1.0]), 1.0, 1.0, 0.2, 0.1)[0] == pytest.approx(1.0)


def test_defaults_are_the_cross_validated_setting():
    settings = LinkerSettings()
    assert (settings.context_weight, settings.preferred_weight) == (0.3, 0.5)
    assert (settings.sentence_weight, settings.lexical_weight, settings.rerank_top) == (
        0.2,
        0.1,
        20,
    )
    assert settings.threshold == DEFAULT_THRESHOLD
    assert (DEFAULT_CONTEXT_WEIGHT, DEFAULT_PREFERRED_WEIGHT) == (0.3, 0.5)


def test_settings_round_trip(tmp_path):
    settings = LinkerSettings(
        encoder="enc",
        threshold=0.5,
        context_weight=0.1,
        preferred_weight=0.7,
        sentence_weight=0.3,
        lexical_weight=0.0,
        rerank_top=30,
        details={"a": 1},
    )
    settings.save(tmp_path)
    assert LinkerSettings.read(tmp_path) == settings
    LinkerSettings().save(tmp_path)
    assert LinkerSettings.read(tmp_path) == LinkerSettings()


def test_a_linker_json_written_before_re_ranking_ranks_as_it_was_tuned(
    taxonomy, tiny_encoder, tmp_path
):
    old = {  # what LinkerSettings saved before it had the re-ranking keys
        "encoder": str(tiny_encoder),
        "threshold": 0.63,
        "context_weight": 0.0,
        "preferred_weight": 0.5,
        "adapter": "",
        "label_precision": "fp32",
        "details": {},
    }
    (tmp_path / "linker.json").write_text(json.dumps(old), encoding="utf-8")
    settings = LinkerSettings.read(tmp_path)
    assert (settings.sentence_weight, settings.lexical_weight) == (0.0, 0.0)
    assert (settings.threshold, settings.preferred_weight) == (0.63, 0.5)
    assert not settings.reranks
    (tmp_path / "linker.json").write_text(json.dumps({"encoder": str(tiny_encoder)}))
    bare = LinkerSettings.read(tmp_path)  # keys left out meant what they meant then
    assert {k: asdict(bare)[k] for k in BEFORE_RERANK} == BEFORE_RERANK
    linker = Linker.load(taxonomy, tmp_path, cache_dir=tmp_path / "cache")
    (link,) = linker.link(["communication skills"], ["We value communication skills."])
    assert (
        link.best is not None and link.best.id == "talk" and link.best.score == pytest.approx(1.0)
    )


def test_entries_written_like_the_span_keep_their_own_order(tmp_path, tiny_encoder):
    """Two entries with a label "k8s": both score 1.0, the one scoring higher without the
    rule first (a 1e-6 tie-break on float32 scores near 1.0 was lost to rounding)."""
    path = tmp_path / "two.csv"
    path.write_text("id,preferred_label,alt_labels\na,kubernetes,k8s\nb,k8s,\n", encoding="utf-8")
    index = LabelIndex(np.eye(3, dtype=np.float32), np.array([0, 2]), ["kubernetes", "k8s", "k8s"])
    best_label = LinkerSettings(preferred_weight=0.0, sentence_weight=0.0, lexical_weight=0.0)
    linker = Linker.from_index(load_csv(path), SentenceEncoder(tiny_encoder), best_label, index)
    queries = np.array([[0.0, 0.61, 0.60], [0.0, 0.60, 0.61]], dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    nearer_a, nearer_b = linker.rank(queries, 2, ["K8s", "k8s "])
    assert [c.id for c in nearer_a] == ["a", "b"] and [c.id for c in nearer_b] == ["b", "a"]
    assert [c.score for c in nearer_a] == [1.0, 1.0]


def test_added_entries_join_a_trigram_index_already_built(taxonomy, tiny_encoder):
    from training.taxonomy import TaxonomyEntry

    linker = Linker(taxonomy, SentenceEncoder(tiny_encoder))
    assert linker.lexical.scores(["helm charts"]).shape == (1, 3)
    assert linker.add_entries([TaxonomyEntry("new:helm", "helm charts", type="added")]) == 1
    scores = linker.lexical.scores(["helm chart"])
    assert scores.shape == (1, 4) and scores[0].argmax() == 3


def test_a_sentence_shared_by_spans_is_embedded_once(taxonomy, tiny_encoder, monkeypatch):
    linker = Linker(taxonomy, SentenceEncoder(tiny_encoder))
    encode, seen = linker.encoder.encode, []

    def spy(texts, **options):
        seen.append(list(texts))
        return encode(texts, **options)

    monkeypatch.setattr(linker.encoder, "encode", spy)
    shared = "We run k8s and sql."
    _, sentences = linker.encode(["k8s", "sql", "python"], [shared, shared, ""])
    assert seen[1] == [shared, "python"]  # distinct; a span without one stands for it
    assert np.array_equal(sentences[0], sentences[1]) and len(sentences) == 3
    assert np.allclose(sentences[2], encode(["python"], max_tokens=128)[0], atol=1e-5)
