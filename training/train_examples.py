"""Training examples: every window of every document with per-subword targets, and the
shuffled, length-grouped batches the trainer steps through.

Windows come from the same `training.windows` code that prediction uses (`encode`,
`make_windows`, `window_inputs`), so a word is cut, placed and read the same way in both.
A word is trained on its first subword; other subwords are ignored (`IGNORE`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from training.text import Document, spans_to_tags, tag_names, words
from training.windows import (
    WindowConfig,
    encode,
    make_windows,
    pad_rows,
    special_tokens,
    window_inputs,
)

IGNORE = -100


@dataclass(slots=True)
class Example:
    input_ids: list[int]
    labels: list[int]
    # with teachers (training.soft_targets): their averaged tag probabilities of the
    # window's target words, in target order, (n_targets, n_tags); else None
    soft: np.ndarray | None = None


def make_examples(
    tokenizer: Any,
    docs: Sequence[Document],
    labels: Sequence[str],
    window: WindowConfig,
    soft: Sequence[np.ndarray] | None = None,
) -> list[Example]:
    """Model inputs and per-subword targets for every window of every document; with
    `soft` (one (n_words, n_tags) array per document), each window's rows of it too."""
    tag_index = {t: i for i, t in enumerate(tag_names(labels))}
    specials = special_tokens(tokenizer)
    offset = len(specials[0])
    examples = []
    for d, doc in enumerate(docs):
        unknown = {s.label for s in doc.spans} - set(labels)
        if unknown:
            raise ValueError(
                f"document {doc.id or ''} has labels {sorted(unknown)} not in {labels}"
            )
        word_offsets = words(doc.text)
        if not word_offsets:
            continue
        tags = spans_to_tags(doc.spans, word_offsets)
        enc = encode(tokenizer, doc.text, word_offsets)
        first = enc.first_token
        for cut in make_windows(enc, window):
            ids = window_inputs(enc, cut, specials)
            targets = [IGNORE] * len(ids)
            inside = np.flatnonzero((first >= cut.start) & (first < cut.end))
            for w in inside:
                targets[offset + first[w] - cut.start] = tag_index[tags[w]]
            rows = None if soft is None else np.asarray(soft[d], dtype=np.float32)[inside]
            examples.append(Example(ids, targets, rows))
    return examples


def batches(examples: Sequence[Example], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar lengths (little padding), in random order."""
    order = list(range(len(examples)))
    rng.shuffle(order)
    pool = batch_size * 50
    out = []
    for i in range(0, len(order), pool):
        chunk = sorted(order[i : i + pool], key=lambda k: len(examples[k].input_ids))
        out += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(out)
    return out


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """One padded batch: the same padding as prediction's (`windows.pad_rows`), plus the
    targets, padded with `IGNORE`."""
    width = max(len(e.input_ids) for e in examples)
    ids, mask = pad_rows([e.input_ids for e in examples], pad_id, width)
    targets, _ = pad_rows([e.labels for e in examples], IGNORE, width)
    return {"input_ids": ids, "attention_mask": mask, "labels": targets}
