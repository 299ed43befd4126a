"""A re-ranking head for the linker, trained on pairs the taxonomy itself provides.

The first stage (cosine against every label, training/linker.py) proposes each span's top
entries; the head rescores them with a few scores per (query, candidate) (the best label's
and the preferred label's cosine, lexical overlaps, an exact-label flag, ...), a linear
function learned listwise: softmax over a query's candidates, the gold ones the target.

Training needs no validation pair: `taxonomy_hard_negatives` takes the taxonomy's
alternative labels as queries (each standing in for a span naming its entry; its own row
masked so it cannot match itself), its entry as the positive, and the first stage's other
top entries for it (the nearest wrong entries in the label cache) as the hard negatives.
Queries whose entry the first stage does not put in its top k teach nothing a re-ranker
could use and are left out (counted).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.link_cross import Group
from training.linker import LabelIndex
from training.taxonomy import Taxonomy


@dataclass(slots=True)
class HeadConfig:
    steps: int = 300
    learning_rate: float = 0.05
    l2: float = 1e-4  # on the weights, not the bias-free scores
    seed: int = 13


@dataclass(slots=True)
class HardNegatives:
    """Alternative labels as queries against the first stage's top k entries."""

    rows: np.ndarray  # (n,) each query's label row in the index
    top: np.ndarray  # (n, k) candidate entries, the first stage's order
    gold: np.ndarray  # (n, k) bool: the candidate is the query's own entry
    best: np.ndarray  # (n, k) the candidate's best-label cosine (the query's own row masked)
    preferred: np.ndarray  # (n, k) the candidate's preferred-label cosine
    missed: int  # sampled queries whose entry was not in their top k (left out)


@dataclass(slots=True)
class HeadResult:
    weights: np.ndarray  # (features,)
    steps: int
    first_loss: float
    last_loss: float
    queries: int


def taxonomy_hard_negatives(
    index: LabelIndex,
    queries: int,
    k: int = 20,
    preferred_weight: float = 0.0,
    seed: int = 13,
    batch: int = 256,
) -> HardNegatives:
    """`queries` alternative labels drawn at random, each ranked against every label (its
    own row masked) as the linker ranks a span; the top k entries are its candidates."""
    alt_rows = np.setdiff1d(np.arange(len(index.vectors)), index.offsets)
    if len(alt_rows) == 0:
        raise ValueError("the taxonomy has no alternative labels to train on")
    k = min(k, len(index.offsets))
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(alt_rows, min(queries, len(alt_rows)), replace=False))
    entry_of_row = index.entry_of_row
    kept: list[tuple[np.ndarray, ...]] = []
    for start in range(0, len(rows), batch):
        part = rows[start : start + batch]
        sims = index.vectors[part] @ index.vectors.T
        sims[np.arange(len(part)), part] = -2.0  # a label is not its own evidence
        best = np.maximum.reduceat(sims, index.offsets, axis=1)
        pref = sims[:, index.offsets]
        first = (1 - preferred_weight) * best + preferred_weight * pref
        top = np.argpartition(-first, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(first, top, axis=1), axis=1)
        top = np.take_along_axis(top, order, axis=1)
        at = np.arange(len(part))[:, None]
        kept.append((part, top, top == entry_of_row[part][:, None], best[at, top], pref[at, top]))
    part, top, gold, best, pref = (np.concatenate(x) for x in zip(*kept, strict=True))
    hit = gold.any(axis=1)
    return HardNegatives(
        part[hit], top[hit], gold[hit], best[hit], pref[hit], missed=int((~hit).sum())
    )


def cross_groups(negatives: HardNegatives, index: LabelIndex, taxonomy: Taxonomy) -> list[Group]:
    """The cross-encoder's training groups from `taxonomy_hard_negatives`: each alternative
    label as the query, its entry's preferred label first, the wrong candidates' after
    (a query that is its entry's preferred label itself teaches nothing and is left out)."""
    entries = taxonomy.entries
    groups = []
    for row, top, gold in zip(negatives.rows, negatives.top, negatives.gold, strict=True):
        positive = entries[int(top[gold][0])].preferred_label
        query = index.texts[row]
        wrong = [entries[int(e)].preferred_label for e in top[~gold]]
        if query != positive:
            groups.append(Group(query, [positive, *wrong]))
    return groups


def train_head(
    features: np.ndarray, gold: np.ndarray, config: HeadConfig | None = None
) -> HeadResult:
    """Linear weights over `features` (n, k, f) maximising each query's gold share of a
    softmax over its k candidates (`gold`: (n, k) bool, at least one per query)."""
    import torch

    config = config or HeadConfig()
    if features.ndim != 3 or gold.shape != features.shape[:2]:
        raise ValueError("features must be (queries, candidates, features), gold (queries, k)")
    keep = gold.any(axis=1)
    if not keep.any():
        raise ValueError("no query has a gold candidate")
    torch.manual_seed(config.seed)
    x = torch.from_numpy(np.ascontiguousarray(features[keep], dtype=np.float32))
    target = torch.from_numpy(gold[keep])
    weights = torch.nn.Parameter(torch.zeros(features.shape[2]))
    optimizer = torch.optim.Adam([weights], lr=config.learning_rate)
    first = last = float("nan")
    for step in range(config.steps):
        scores = x @ weights
        loss = (
            torch.logsumexp(scores, dim=1)
            - torch.logsumexp(scores.masked_fill(~target, -1e9), dim=1)
        ).mean() + config.l2 * (weights**2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        last = float(loss.detach())
        if step == 0:
            first = last
    return HeadResult(
        weights=weights.detach().numpy().astype(np.float32),
        steps=config.steps,
        first_loss=round(first, 4),
        last_loss=round(last, 4),
        queries=int(keep.sum()),
    )


def head_scores(features: np.ndarray, weights: np.ndarray, unit: int = 0) -> np.ndarray:
    """(n, k) scores of the head, divided by its weight on feature `unit` (the best-label
    cosine) when that is positive, so they read in cosine units beside other scores."""
    scores = features @ weights
    scale = float(weights[unit])
    return scores / scale if scale > 0 else scores
