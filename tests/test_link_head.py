"""The linker's re-ranking head (training/link_head.py): hard negatives from the taxonomy's
own labels (with the tiny random encoder, nothing downloaded) and the listwise training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.link_cross import CrossConfig, CrossEncoder, Group, squash, train_cross_encoder
from training.link_head import HeadConfig, head_scores, taxonomy_hard_negatives, train_head
from training.linker import Linker, LinkerSettings
from training.sentence_encoder import SentenceEncoder
from training.taxonomy import load_csv

TAXONOMY_CSV = """id,preferred_label,alt_labels,type,description
k8s,kubernetes,k8s|container orchestration|kube,S,
py,python,python programming|python coding,K,
sql,sql,structured query language|databases,K,
talk,communication,communication skills|talking,T,
java,java,java programming|jvm,K,
"""


def test_hard_negatives_from_the_taxonomy_with_the_tiny_encoder(tmp_path: Path, tiny_encoder):
    path = tmp_path / "skills.csv"
    path.write_text(TAXONOMY_CSV, encoding="utf-8")
    index = Linker(load_csv(path), SentenceEncoder(tiny_encoder), LinkerSettings()).index
    negatives = taxonomy_hard_negatives(index, queries=100, k=3, seed=1)
    alt_rows = sorted(set(range(len(index.vectors))) - set(index.offsets.tolist()))
    # every alternative label (11 here) is drawn once; none is a preferred label
    assert len(negatives.rows) + negatives.missed == len(alt_rows) == 11
    assert set(negatives.rows.tolist()) <= set(alt_rows)
    assert (
        negatives.top.shape
        == negatives.gold.shape
        == negatives.best.shape
        == (
            len(negatives.rows),
            3,
        )
    )
    entry_of_row = index.entry_of_row
    for row, top, gold, best, pref in zip(
        negatives.rows,
        negatives.top,
        negatives.gold,
        negatives.best,
        negatives.preferred,
        strict=True,
    ):
        # exactly one positive: the query's own entry; the others are wrong entries
        assert gold.sum() == 1 and top[gold][0] == entry_of_row[row]
        assert list(best) == sorted(best, reverse=True)  # the first stage's order
        sims = index.vectors[row] @ index.vectors.T
        for entry, score, pscore in zip(top, best, pref, strict=True):
            rows = [r for r in np.flatnonzero(entry_of_row == entry) if r != row]
            # its own row is masked: the best label's cosine comes from the other rows
            assert score == pytest.approx(max(sims[rows]), abs=1e-5)
            assert pscore == pytest.approx(sims[index.offsets[entry]], abs=1e-5)


def test_the_head_learns_which_score_to_trust():
    """Feature 0 (the first stage's score) puts a wrong candidate first; feature 1 marks the
    gold one with noise. The trained head ranks by feature 1, the first stage cannot."""
    rng = np.random.default_rng(0)
    n, k = 400, 10
    features = rng.normal(size=(n, k, 3)).astype(np.float32)
    gold = np.zeros((n, k), dtype=bool)
    where = rng.integers(1, k, n)
    gold[np.arange(n), where] = True
    features[:, 0, 0] += 3.0  # the first stage's favourite, always wrong
    features[np.arange(n), where, 1] += 4.0
    result = train_head(features, gold, HeadConfig(steps=200, learning_rate=0.1))
    before = gold[np.arange(n), features[..., 0].argmax(1)].mean()
    after = gold[np.arange(n), (features @ result.weights).argmax(1)].mean()
    assert before < 0.05 and after > 0.9
    assert result.weights[1] > abs(result.weights[0]) and result.last_loss < result.first_loss
    assert result.queries == n
    # read in units of feature 1: its weight becomes 1
    scores = head_scores(features, result.weights, unit=1)
    assert np.allclose(scores, features @ (result.weights / result.weights[1]), atol=1e-5)


def test_the_head_refuses_shapes_and_queries_without_gold():
    with pytest.raises(ValueError, match="queries, candidates"):
        train_head(np.zeros((4, 3)), np.zeros((4, 3), dtype=bool))
    with pytest.raises(ValueError, match="no query has a gold"):
        train_head(np.zeros((4, 3, 2)), np.zeros((4, 3), dtype=bool))


def test_the_cross_encoder_learns_its_groups_and_saves(tmp_path: Path, tiny_encoder):
    """The tiny random encoder as a cross-encoder overfits four groups (the positive first)
    and its saved folder scores the same."""
    groups = [
        Group("k8s", ["kubernetes", "java", "sql", "communication"]),
        Group("python coding", ["python", "kubernetes", "java", "sql"]),
        Group("databases", ["sql", "python", "communication", "java"]),
        Group("talking", ["communication", "sql", "kubernetes", "python"]),
    ]
    cross = CrossEncoder(tiny_encoder)
    queries = [g.query for g in groups for _ in g.candidates]
    labels = [c for g in groups for c in g.candidates]
    assert np.allclose(cross.score(queries, labels), 0.0)  # the head starts at zero
    config = CrossConfig(steps=20, groups_per_step=4, learning_rate=5e-3, head_learning_rate=0.1)
    result = train_cross_encoder(cross, groups, config)
    assert result.steps == 20 and result.last_loss < 0.5 * result.first_loss
    scores = cross.score(queries, labels).reshape(len(groups), -1)
    assert (scores.argmax(1) == 0).all()  # every group's positive ranks first
    cross.fit_scale(groups)  # its logits' 5th-95th percentiles on its training pairs
    low, high = cross.scale
    assert low == pytest.approx(np.percentile(scores, 5), abs=1e-4) and low < high
    served = squash(scores, cross.scale)  # linear in 0-1, the order kept
    assert served.min() >= 0.0 and served.max() <= 1.0 and (served.argmax(1) == 0).all()
    loaded = CrossEncoder(cross.save(tmp_path / "cross"))
    assert np.allclose(loaded.score(queries, labels).reshape(len(groups), -1), scores, atol=1e-5)
    assert loaded.scale == pytest.approx(cross.scale)
    with pytest.raises(ValueError, match="a positive and at least one negative"):
        train_cross_encoder(cross, [Group("k8s", ["kubernetes"])], config)
