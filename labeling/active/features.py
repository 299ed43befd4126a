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
from training.windows import encode, make_windows, owned_words, special_tokens, window_inputs

log = logging.getLogger(__name__)


def encode_words(
    texts: Sequence[str],
    source: str | Path | None = None,
    max_tokens: int = 256,
    stride: int = 32,
    batch_size: int = 32,
    cache_dir: str | Path | None = None,
    layers: Sequence[int] = (-1,),
) -> list[np.ndarray]:
    """For each text, a float32 array (n_words, hidden * len(layers)) of its words' encoder
    vectors: the hidden states of `layers` (0 = embeddings, -1 = last), concatenated.
    A word without subwords (rare: characters the tokenizer drops) gets zeros."""
    name = resolve_source(source)
    cache = _cache_path(cache_dir, f"{name}|{list(layers)}", texts, max_tokens, stride)
    if cache is not None and cache.is_file():
        with np.load(cache) as data:
            flat, lengths = data["flat"], data["lengths"]
        return np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else []
    vectors = _encode(texts, name, max_tokens, stride, batch_size, list(layers))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        lengths = np.array([len(v) for v in vectors], dtype=np.int64)
        flat = np.concatenate(vectors) if vectors else np.zeros((0, 0), np.float32)
        np.savez(cache, flat=flat, lengths=lengths)
    return vectors


def _cache_path(cache_dir, name, texts, max_tokens, stride) -> Path | None:
    if cache_dir is None:
        return None
    digest = hashlib.sha256(f"{name}|{max_tokens}|{stride}".encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    return Path(cache_dir) / f"words-{digest.hexdigest()[:16]}.npz"


def _encode(texts, name, max_tokens, stride, batch_size, layers) -> list[np.ndarray]:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name)
    model = AutoModel.from_pretrained(name).eval()
    limit = getattr(model.config, "max_position_embeddings", 512) - 2
    max_tokens = min(max_tokens, limit)
    prefix, suffix = special_tokens(tokenizer)
    specials = (prefix, suffix)
    pad = tokenizer.pad_token_id or 0
    depth = model.config.num_hidden_layers
    # absolute indices; a layer beyond a shallow model's depth falls back to its last
    layers = list(
        dict.fromkeys(min(k % (depth + 1), depth) if k < 0 else min(k, depth) for k in layers)
    )
    hidden_size = model.config.hidden_size * len(layers)

    out = []
    jobs = []  # (doc index, input ids, word indices, positions of their first subwords)
    for d, text in enumerate(texts):
        offsets = words(text)
        out.append(np.zeros((len(offsets), hidden_size), dtype=np.float32))
        if not offsets:
            continue
        enc = encode(tokenizer, text, offsets)
        for window in make_windows(enc, max_tokens, stride):
            owned = owned_words(enc, window)
            if owned.size == 0:
                continue
            positions = enc.first_token[owned] - window.start + len(prefix)
            jobs.append((d, window_inputs(enc, window, specials), owned, positions))
    jobs.sort(key=lambda job: len(job[1]))  # similar lengths together: less padding
    with torch.inference_mode():
        for b in range(0, len(jobs), batch_size):
            batch = jobs[b : b + batch_size]
            width = max(len(job[1]) for job in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (_, inputs, _, _) in enumerate(batch):
                ids[row, : len(inputs)] = torch.tensor(inputs)
                mask[row, : len(inputs)] = 1
            output = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            states = torch.cat([output.hidden_states[k] for k in layers], dim=-1).numpy()
            for row, (d, _, owned, positions) in enumerate(batch):
                out[d][owned] = states[row, positions]
    log.info("encoded %d texts (%d windows) with %s", len(texts), len(jobs), name)
    return out
