"""Modifiers over a base strategy: they change which batch its scores pick, not the scores.

`name+diverse` and `name+balanced` in `labeling.active.strategies.get_strategy`.
"""

from __future__ import annotations

import numpy as np

from labeling.active.base import EPS, PoolItem, QueryStrategy
from training.text import split_tag


class DiverseBatch(QueryStrategy):
    """Diversity in a batch: cluster the top `factor * n` candidates of `base` with k-means
    on their post embeddings and take the most uncertain post of each cluster, so a batch
    is not near-duplicates (cluster-margin style, cf. Zhdanov, 2019, "Diverse mini-batch
    Active Learning"; BADGE, Ash et al., 2020, does the same on gradient embeddings)."""

    def __init__(self, base: QueryStrategy, factor: int = 5):
        self.base, self.factor = base, max(int(factor), 1)
        self.name = f"{base.name}+diverse"

    def uncertainty(self, item):
        return self.base.uncertainty(item)

    def confidence(self, u):
        return self.base.confidence(u)

    def explain(self, item, score):
        return self.base.explain(item, score)

    def scores(self, pool, rng):
        return self.base.scores(pool, rng)

    def rank(self, pool, scores, n, budget_tokens, rng) -> list[int]:
        order = [i for i in np.argsort(-scores, kind="stable") if np.isfinite(scores[i])]
        top = order[: n * self.factor]
        if len(top) <= n:
            return top
        missing = [pool[i].id for i in top if pool[i].embedding is None]
        if missing:
            raise ValueError(f"diverse selection needs post embeddings; missing for {missing[0]!r}")
        from sklearn.cluster import KMeans

        x = np.stack([np.asarray(pool[i].embedding, dtype=np.float64) for i in top])
        x /= np.linalg.norm(x, axis=1, keepdims=True) + EPS
        seed = int(rng.integers(2**31))
        clusters = KMeans(n_clusters=n, n_init=3, random_state=seed).fit_predict(x)
        chosen: dict[int, int] = {}
        for i, c in zip(top, clusters, strict=True):
            chosen.setdefault(int(c), i)  # `top` is ranked: the first seen is the best
        firsts = sorted(chosen.values(), key=lambda i: -scores[i])
        # the rest stay available as fallbacks when the budget skips a cluster's best
        chosen_set = set(firsts)
        return firsts + [i for i in order if i not in chosen_set]


class ClassBalanced(QueryStrategy):
    """Class balancing toward rare labels: `base`'s score times 1 + `strength` * the
    expected number of rare-label spans in the post, where a label's rarity is
    1 / (1 + its count among the labelled spans), scaled so the rarest is 1 (cf. Kim et
    al., 2006, MMR-based AL for NER)."""

    def __init__(self, base: QueryStrategy, label_counts: dict[str, int], strength: float = 1.0):
        self.base, self.strength = base, strength
        self.name = f"{base.name}+balanced"
        raw = {label: 1.0 / (1.0 + count) for label, count in label_counts.items()}
        top = max(raw.values(), default=1.0)
        self.rarity = {label: r / top for label, r in raw.items()}

    def weight(self, item: PoolItem) -> float:
        """1 + `strength` * the expected number of rare-label spans (capped at 3)."""
        expected = 0.0
        for column, tag in enumerate(item.tags):
            prefix, label = split_tag(tag)
            if prefix == "B" and label is not None:
                expected += self.rarity.get(label, 1.0) * float(item.probs[:, column].sum())
        return 1.0 + self.strength * min(expected, 3.0)

    def uncertainty(self, item):
        return self.base.uncertainty(item) * self.weight(item)

    def scores(self, pool, rng):
        # the base's own scores (random's draws, BALD's samples), not its uncertainty:
        # random's uncertainty is 0 for every post, which left the pool in its own order
        base = self.base.scores(pool, rng)
        return np.array(
            [s * self.weight(it) if it.cost else s for s, it in zip(base, pool, strict=True)]
        )

    def confidence(self, u):
        return self.base.confidence(u)
