"""What the query strategies share: the post as they see it, a pick, and the base class.

A strategy scores plain per-post data (`PoolItem`) and never calls a model, so the same
class ranks a live pool and a simulated one (`labeling.active.strategies`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from training.reading import Prediction

EPS = 1e-12


@dataclass(slots=True)
class PoolItem:
    """One unlabelled post (or sentence) as the strategies see it."""

    id: str
    probs: np.ndarray  # (n_words, n_tags), rows sum to 1
    tags: Sequence[str]  # column names of probs: tag_names(labels)
    text: str = ""
    words: Sequence[tuple[int, int]] = ()  # character offsets, for readable reasons
    embedding: np.ndarray | None = None  # (d,) post vector, for diversity
    hidden: np.ndarray | None = None  # (n_words, d) encoder states, for BALD
    # log P(best tag sequence) where words are not independent (a CRF); None: the sum of
    # the words' best log-probabilities, which is that for independent words
    path_log_prob: float | None = None

    @property
    def cost(self) -> int:
        """What labelling it costs: its number of words."""
        return int(self.probs.shape[0])


@dataclass(slots=True)
class Pick:
    """A selected post: `score` is the strategy's uncertainty (higher = more useful)."""

    id: str
    index: int  # position in the pool given to `query`
    score: float
    cost: int
    reasons: list[str] = field(default_factory=list)


def item_from_prediction(prediction: Prediction, id: str = "") -> PoolItem:
    """A `PoolItem` from the tagger's `Prediction`."""
    probs = np.asarray(prediction.probs, dtype=np.float64)
    if probs.ndim != 2:
        probs = probs.reshape(0, len(prediction.tags))
    return PoolItem(
        id=str(id),
        probs=probs,
        tags=list(prediction.tags),
        text=prediction.text,
        words=list(prediction.words),
        hidden=prediction.hidden,
        path_log_prob=prediction.path_log_prob,
    )


def max_probs(item: PoolItem) -> np.ndarray:
    return np.clip(item.probs.max(axis=1), EPS, 1.0)


def best_path_log_prob(item: PoolItem) -> float:
    """log P(y*): the CRF's own value where the tagger gave it, else (independent words)
    the sum of each word's best log-probability."""
    if item.path_log_prob is not None:
        return float(item.path_log_prob)
    return float(np.log(max_probs(item)).sum())


def entropy(probs: np.ndarray) -> np.ndarray:
    p = np.clip(probs, EPS, 1.0)
    return -(p * np.log(p)).sum(axis=-1)


def word_text(item: PoolItem, first: int, last: int) -> str:
    if item.text and len(item.words) > last:
        return item.text[item.words[first][0] : item.words[last][1]]
    return f"words {first}-{last}"


class QueryStrategy:
    """Scores posts one by one; `query` takes the highest scores within count and budget."""

    name = "base"

    def uncertainty(self, item: PoolItem) -> float:
        raise NotImplementedError

    def confidence(self, u: float) -> float:
        """Map an uncertainty onto (0, 1], higher = surer; used as Label Studio's score."""
        return math.exp(-u)

    def explain(self, item: PoolItem, score: float) -> list[str]:
        return [f"{self.name}={score:.4f}"]

    def scores(self, pool: Sequence[PoolItem], rng: np.random.Generator) -> np.ndarray:
        return np.array(
            [self.uncertainty(it) if it.cost else -np.inf for it in pool], dtype=np.float64
        )

    def query(
        self,
        pool: Sequence[PoolItem],
        n: int,
        budget_tokens: int | None = None,
        rng: np.random.Generator | int | None = None,
    ) -> list[Pick]:
        """The next batch: at most `n` posts and, with a budget, at most `budget_tokens`
        words in all. Posts too long for what is left of the budget are skipped for
        shorter ones. An empty pool gives an empty batch; a pool smaller than `n` gives
        all its posts that have words, ranked."""
        _check_request(n, budget_tokens)
        if not pool or n == 0:
            return []
        rng = np.random.default_rng(rng)
        scores = self.scores(pool, rng)
        order = self.rank(pool, scores, n, budget_tokens, rng)
        return self._fill(pool, scores, order, n, budget_tokens)

    def rank(self, pool, scores, n, budget_tokens, rng) -> list[int]:
        """Candidate order; ties keep pool order."""
        return [int(i) for i in np.argsort(-scores, kind="stable")]

    def _fill(self, pool, scores, order, n, budget_tokens) -> list[Pick]:
        picks: list[Pick] = []
        left = budget_tokens
        for i in order:
            item = pool[i]
            if not np.isfinite(scores[i]) or item.cost == 0:
                continue
            if left is not None:
                if item.cost > left:
                    continue
                left -= item.cost
            picks.append(
                Pick(item.id, i, float(scores[i]), item.cost, self.explain(item, float(scores[i])))
            )
            if len(picks) >= n or (left is not None and left <= 0):
                break
        return picks


def _check_request(n: int, budget_tokens: int | None) -> None:
    if n < 0:
        raise ValueError(f"batch size must be 0 or more, got {n}")
    if budget_tokens is not None and budget_tokens < 0:
        raise ValueError(f"token budget must be 0 or more, got {budget_tokens}")
