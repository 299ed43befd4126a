"""Per-word tag decoding: from a (n_words, n_tags) probability matrix to one IOB2 tag per word.

Two methods, chosen by name:
- "argmax": each word takes its most probable tag on its own; `tags_to_spans` then reads
  the sequence leniently (an I- tag with no B- opens a span).
- "viterbi": the most probable tag *sequence* among valid IOB2 sequences, where
  O -> I-X, start -> I-X and B-X/I-X -> I-Y (Y != X) are forbidden. Word probabilities are
  treated as independent, so this is the argmax path under hard transition constraints; it
  repairs broken spans (B-Skill I-Knowledge) by one consistent choice instead of splitting.
  A model trained with a CRF (`training.crf`) adds its learned transition scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.text import OUTSIDE, split_tag

DECODINGS = ("viterbi", "argmax")
# a CRF's learned (start (n,), transitions (n, n), end (n,)) scores, in tag order
Scores = tuple[np.ndarray, np.ndarray, np.ndarray]


def transitions(tags: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """`(start_allowed (n,), allowed (n_prev, n_next))` boolean masks for IOB2 `tags`."""
    parsed = [split_tag(t) for t in tags]
    n = len(tags)
    start = np.array([prefix != "I" for prefix, _ in parsed])
    allowed = np.ones((n, n), dtype=bool)
    for j, (prefix, label) in enumerate(parsed):
        if prefix != "I":
            continue
        for i, (prev_prefix, prev_label) in enumerate(parsed):
            allowed[i, j] = prev_prefix != OUTSIDE and prev_label == label
    return start, allowed


def viterbi(
    log_probs: np.ndarray, start: np.ndarray, allowed: np.ndarray, scores: Scores | None = None
) -> np.ndarray:
    """Indices of the best allowed tag path through `log_probs` (n_words, n_tags)."""
    return viterbi_many([log_probs], start, allowed, scores)[0]


def viterbi_many(
    log_probs: Sequence[np.ndarray],
    start: np.ndarray,
    allowed: np.ndarray,
    scores: Scores | None = None,
) -> list[np.ndarray]:
    """`viterbi` for many documents at once: one numpy step per word position for all of
    them, which costs a tenth of decoding them one by one.

    `scores` adds learned `(start, transitions, end)` scores (a CRF's) to the allowed
    moves. A document shorter than the longest keeps its tag through the padded steps,
    at no cost, so its end score is added at its true last word.
    """
    lengths = np.array([len(lp) for lp in log_probs], dtype=np.int64)
    n_docs, n_tags = len(log_probs), len(start)
    longest = int(lengths.max(initial=0))
    if longest == 0:
        return [np.zeros(0, dtype=np.int64) for _ in lengths]
    padded = np.zeros((n_docs, longest, n_tags))
    for d, lp in enumerate(log_probs):
        padded[d, : len(lp)] = lp
    start_score, matrix, end_score = scores if scores is not None else (0.0, 0.0, 0.0)
    penalty = np.where(allowed, matrix, -np.inf)
    score = np.where(start, padded[:, 0] + start_score, -np.inf)  # (docs, tags)
    back = np.zeros((n_docs, longest, n_tags), dtype=np.int64)
    rows = np.arange(n_docs)[:, None]
    columns = np.arange(n_tags)[None, :]
    for w in range(1, longest):
        candidates = score[:, :, None] + penalty  # (docs, prev, next)
        best = candidates.argmax(axis=1)
        active = (w < lengths)[:, None]
        back[:, w] = np.where(active, best, columns)
        score = np.where(active, candidates[rows, best, columns] + padded[:, w], score)
    path = np.empty((n_docs, longest), dtype=np.int64)
    path[:, -1] = (score + end_score).argmax(axis=1)
    docs = np.arange(n_docs)
    for w in range(longest - 1, 0, -1):
        path[:, w - 1] = back[docs, w, path[:, w]]
    return [path[d, :n] for d, n in enumerate(lengths)]


def no_span_across_lines(
    probs: np.ndarray, word_offsets: Sequence[tuple[int, int]], text: str, tags: Sequence[str]
) -> np.ndarray:
    """`probs` for decoding, with I- tags ruled out for a word that starts a new line.

    Skills never run across a line break in job posts (SkillSpan's sentences never share
    a span either), yet a model can carry a span over a heading ("Consumer Duty" /
    "Requirements"). The returned copy is for decoding only: reported probabilities stay
    the model's.
    """
    inside = [j for j, tag in enumerate(tags) if split_tag(tag)[0] == "I"]
    starts_line = [
        i
        for i in range(1, len(word_offsets))
        if "\n" in text[word_offsets[i - 1][1] : word_offsets[i][0]]
    ]
    if not inside or not starts_line:
        return probs
    fixed = probs.copy()
    fixed[np.ix_(starts_line, inside)] = 0.0
    totals = fixed[starts_line].sum(axis=1, keepdims=True)
    fixed[starts_line] /= np.maximum(totals, 1e-12)
    return fixed


def decode(
    probs: np.ndarray, tags: Sequence[str], method: str = "viterbi", scores: Scores | None = None
) -> list[str]:
    """One tag per word (row of `probs`) by `method` ("viterbi" or "argmax"); viterbi adds
    a CRF's learned `scores` (start, transitions, end) where the model has them."""
    return decode_many([probs], tags, method, scores)[0]


def decode_many(
    probs: Sequence[np.ndarray],
    tags: Sequence[str],
    method: str = "viterbi",
    scores: Scores | None = None,
) -> list[list[str]]:
    """`decode` for several documents' probability matrices at once."""
    if method == "argmax":
        best = [p.argmax(axis=1) if len(p) else np.zeros(0, dtype=np.int64) for p in probs]
    elif method == "viterbi":
        start, allowed = transitions(tags)
        # a word the model calls impossible stays possible, only very unlikely
        log_probs = [np.log(np.maximum(p, 1e-12)) for p in probs]
        best = viterbi_many(log_probs, start, allowed, scores)
    else:
        raise ValueError(f"unknown decoding {method!r}: choose one of {', '.join(DECODINGS)}")
    return [[tags[int(i)] for i in path] for path in best]


def decode_texts(
    probs: Sequence[np.ndarray],
    words: Sequence[Sequence[tuple[int, int]]],
    texts: Sequence[str],
    tags: Sequence[str],
    method: str = "viterbi",
    scores: Scores | None = None,
) -> tuple[list[np.ndarray], list[list[str]]]:
    """Whole texts' per-word probabilities to word tags as the tagger decodes them: no span
    across a line break (`no_span_across_lines`), then `decode_many`. Returns the
    line-aware probabilities (the decoding's own) and the tags."""
    line_aware = [
        no_span_across_lines(p, w, text, tags)
        for p, w, text in zip(probs, words, texts, strict=True)
    ]
    return line_aware, decode_many(line_aware, tags, method, scores)
