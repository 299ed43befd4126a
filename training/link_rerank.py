"""The linker's second stage: its first stage's top entries re-scored by two more scores.

The first stage (training/linker.py) scores every entry of the taxonomy by its best label's
cosine with the span's query, mixed with its preferred label's (`preferred_weight`). Its top
`rerank_top` entries (20) are then re-scored

    (first + g x sentence + l x lexical) / (1 + g + l)

- sentence (g, `sentence_weight`): the cosine of the span's sentence, embedded alone, with
  the entry's best label for it (what the post is about, beside what the span says);
- lexical (l, `lexical_weight`): the character-trigram TF-IDF cosine of the span's text with
  the entry's best label for it (the span's written form: "kubernetes admin" against
  "administer Kubernetes" rather than a loose synonym near it in the embedding).

A linker folder may add a third, a cross-encoder's score of the span and the entry's
preferred label read together (c, `cross_weight`; training/link_cross.py, squashed to
0-1), weighted in the same sum.

Dividing by 1 + g + l (+ c) keeps a score at most 1, on the scale the no-match threshold is tuned
on; it does not change the order. The weights were chosen on one ESCO validation set and
reported on the other (benchmarks/linking_crossval.py, docs/linking.md), which computes its
grid with these functions over all entries at once; the linker computes them for its top
entries only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RERANK_TOP = 20  # the first stage's top entries the second stage re-scores


def rerank(
    first: np.ndarray,
    sentence: np.ndarray | float,
    lexical: np.ndarray | float,
    sentence_weight: float,
    lexical_weight: float,
    cross: np.ndarray | float = 0.0,
    cross_weight: float = 0.0,
) -> np.ndarray:
    """The second stage's score from the first stage's and the re-ranking scores (arrays
    of one shape; `cross` a cross-encoder's squashed score), at most 1 when each of them is."""
    total = first + sentence_weight * sentence + lexical_weight * lexical + cross_weight * cross
    return total / (1.0 + sentence_weight + lexical_weight + cross_weight)


def best_first(
    scores: np.ndarray,
    k: int,
    exact: set[int] | None = None,
    preferred: np.ndarray | None = None,
) -> np.ndarray:
    """The positions of the k highest scores, highest first; positions in `exact` count at
    least 1.0, ties broken by their own score, then by `preferred` (each position's
    preferred label's cosine: entries sharing the span's label tie on their best label)."""
    order = scores
    if exact:  # in float64: 1e-6 x a float32 score difference is below float32's step at 1.0
        picked = np.fromiter(exact, dtype=np.int64)
        order = scores.astype(np.float64)
        order[picked] = np.maximum(order[picked], 1.0)
        order += 1e-6 * scores.astype(np.float64)
        if preferred is not None:
            order += 1e-9 * preferred.astype(np.float64)
    k = min(k, len(order))
    top = np.argpartition(-order, k - 1)[:k]
    return top[np.argsort(-order[top])]


def entry_rows(offsets: np.ndarray, n_rows: int, entries: np.ndarray) -> tuple[np.ndarray, ...]:
    """The label rows of `entries` (entry positions; rows `offsets[e]:offsets[e+1]` are
    entry e's, every entry has at least one), and where each entry's rows start among them."""
    ends = np.append(offsets[1:], n_rows)[entries]
    starts = offsets[entries]
    rows = np.concatenate([np.arange(a, b) for a, b in zip(starts, ends, strict=True)])
    bounds = np.concatenate([[0], np.cumsum(ends - starts)[:-1]])
    return rows, bounds


def sentence_scores(
    vectors: np.ndarray,
    offsets: np.ndarray,
    sentences: np.ndarray,
    entries: np.ndarray | None = None,
) -> np.ndarray:
    """Each sentence's cosine with each entry's best label for it: (n, n_entries), or with
    `entries` (n, m) the scores of each row's own m entries."""
    if entries is None:
        return np.maximum.reduceat(sentences @ vectors.T, offsets, axis=1)
    out = np.empty(entries.shape, dtype=np.float32)
    for i, row in enumerate(entries):
        rows, bounds = entry_rows(offsets, len(vectors), row)
        out[i] = np.maximum.reduceat(vectors[rows] @ sentences[i], bounds)
    return out


class LexicalIndex:
    """Character-trigram TF-IDF vectors of every label (within word bounds, lower-cased),
    fitted on the labels themselves; an entry's lexical score is its best label's cosine."""

    def __init__(self, texts: Sequence[str], offsets: np.ndarray):
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 3), lowercase=True)
        self.labels = self.vectorizer.fit_transform(list(texts)).tocsr()  # (n_labels, grams)
        self.offsets = np.asarray(offsets)

    def scores(self, texts: Sequence[str], entries: np.ndarray | None = None) -> np.ndarray:
        """Each text's lexical score for each entry: (n, n_entries), or with `entries` (n, m)
        the scores of each row's own m entries."""
        queries = self.vectorizer.transform(list(texts))
        if entries is None:
            sims = (queries @ self.labels.T).toarray().astype(np.float32)
            return np.maximum.reduceat(sims, self.offsets, axis=1)
        out = np.empty(entries.shape, dtype=np.float32)
        for i, row in enumerate(entries):
            rows, bounds = entry_rows(self.offsets, self.labels.shape[0], row)
            sims = (self.labels[rows] @ queries[i].T).toarray().ravel()
            out[i] = np.maximum.reduceat(sims, bounds)
        return out
