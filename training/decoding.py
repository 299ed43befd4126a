"""Per-word tag decoding: from a (n_words, n_tags) probability matrix to one IOB2 tag per word.

Two methods, chosen by name:
- "argmax": each word takes its most probable tag on its own; `tags_to_spans` then reads
  the sequence leniently (an I- tag with no B- opens a span).
- "viterbi": the most probable tag *sequence* among valid IOB2 sequences, where
  O -> I-X, start -> I-X and B-X/I-X -> I-Y (Y != X) are forbidden. Word probabilities are
  treated as independent, so this is the argmax path under hard transition constraints; it
  repairs broken spans (B-Skill I-Knowledge) by one consistent choice instead of splitting.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.text import OUTSIDE, split_tag

DECODINGS = ("viterbi", "argmax")


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


def viterbi(log_probs: np.ndarray, start: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Indices of the best allowed tag path through `log_probs` (n_words, n_tags)."""
    n_words, n_tags = log_probs.shape
    if n_words == 0:
        return np.zeros(0, dtype=np.int64)
    penalty = np.where(allowed, 0.0, -np.inf)
    score = np.where(start, log_probs[0], -np.inf)
    back = np.empty((n_words, n_tags), dtype=np.int64)
    for w in range(1, n_words):
        candidates = score[:, None] + penalty  # (prev, next)
        back[w] = candidates.argmax(axis=0)
        score = candidates[back[w], np.arange(n_tags)] + log_probs[w]
    path = np.empty(n_words, dtype=np.int64)
    path[-1] = int(score.argmax())
    for w in range(n_words - 1, 0, -1):
        path[w - 1] = back[w, path[w]]
    return path


def decode(probs: np.ndarray, tags: Sequence[str], method: str = "viterbi") -> list[str]:
    """One tag per word (row of `probs`) by `method` ("viterbi" or "argmax")."""
    if method == "argmax":
        best = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=np.int64)
    elif method == "viterbi":
        start, allowed = transitions(tags)
        # a word the model calls impossible stays possible, only very unlikely
        best = viterbi(np.log(np.maximum(probs, 1e-12)), start, allowed)
    else:
        raise ValueError(f"unknown decoding {method!r}: choose one of {', '.join(DECODINGS)}")
    return [tags[i] for i in best]
