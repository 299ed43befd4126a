"""Per-word vectors from a frozen encoder, for the simulator's fast mode.

Every text is encoded once: each word is read from the last hidden state of its first
subword, through the same windows as prediction and training (`training.windows`), so a
small head trained on these vectors sees what the tagger's own head sees. Vectors are
cached on disk, keyed by the encoder and the texts.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training.checkpoint import resolve_source
from training.text import words
from training.windows import (
    WINDOWS,
    WindowConfig,
    encode,
    forward_windows,
    make_windows,
    special_tokens,
    usable_window,
    window_jobs,
)

log = logging.getLogger(__name__)


def encode_words(
    texts: Sequence[str],
    source: str | Path | None = None,
    window: WindowConfig = WINDOWS,
    batch_size: int = 32,
    cache_dir: str | Path | None = None,
    layers: Sequence[int] = (-1,),
) -> list[np.ndarray]:
    """For each text, a float32 array (n_words, hidden * len(layers)) of its words' encoder
    vectors: the hidden states of `layers` (0 = embeddings, -1 = last), concatenated.
    A word without subwords (rare: characters the tokenizer drops) gets zeros. Batches
    hold up to `batch_size` full windows' worth of subwords (`training.windows`)."""
    name = resolve_source(source)
    cache = _cache_path(cache_dir, f"{name}|{list(layers)}", texts, window)
    if cache is not None and cache.is_file():
        with np.load(cache) as data:
            flat, lengths = data["flat"], data["lengths"]
        return np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else []
    vectors = _encode(texts, name, window, batch_size, list(layers))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        lengths = np.array([len(v) for v in vectors], dtype=np.int64)
        flat = np.concatenate(vectors) if vectors else np.zeros((0, 0), np.float32)
        np.savez(cache, flat=flat, lengths=lengths)
    return vectors


def _cache_path(cache_dir, name, texts, window: WindowConfig) -> Path | None:
    if cache_dir is None:
        return None
    digest = hashlib.sha256(f"{name}|{window.max_tokens}|{window.stride}".encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    return Path(cache_dir) / f"words-{digest.hexdigest()[:16]}.npz"


def _encode(texts, name, window: WindowConfig, batch_size, layers) -> list[np.ndarray]:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name)
    model = AutoModel.from_pretrained(name).eval()
    specials = special_tokens(tokenizer)
    window = usable_window(window, tokenizer, model, specials)
    depth = model.config.num_hidden_layers
    # absolute indices; a layer beyond a shallow model's depth falls back to its last
    layers = list(
        dict.fromkeys(min(k % (depth + 1), depth) if k < 0 else min(k, depth) for k in layers)
    )
    hidden_size = model.config.hidden_size * len(layers)

    out = []
    jobs = []
    for d, text in enumerate(texts):
        offsets = words(text)
        out.append(np.zeros((len(offsets), hidden_size), dtype=np.float32))
        if not offsets:
            continue
        enc = encode(tokenizer, text, offsets)
        jobs += window_jobs(d, enc, make_windows(enc, window), specials)

    def read(output) -> list:
        return [torch.cat([output.hidden_states[k] for k in layers], dim=-1)]

    budget = batch_size * (window.max_tokens + sum(map(len, specials)))
    for job, (vectors,) in forward_windows(
        model,
        jobs,
        read,
        pad_id=tokenizer.pad_token_id or 0,
        batch_tokens=budget,
        hidden_states=True,
    ):
        out[job.doc][job.owned] = vectors
    log.info("encoded %d texts (%d windows) with %s", len(texts), len(jobs), name)
    return out
