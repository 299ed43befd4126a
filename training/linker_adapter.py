"""Training the linker's adapter: a matrix on top of the frozen, cached label embeddings.

Fine-tuning the encoder itself means re-embedding every label with the new weights before
a version can even be scored (52 min for ESCO's 96,135 labels on this machine's shared
cores). The adapter leaves the encoder and the label cache alone: it maps a span's
embedding `q` to `q + qW` (renormalised; W starts at zero, the plain ranking) and is
trained contrastively on embeddings already in the cache, so a round takes minutes.

Training queries: each step samples fresh alternative labels, each standing in for a span
naming its entry (its own row is masked, so it cannot match itself), plus any (span text,
entry id) pairs given, e.g. annotator-confirmed links. Each query is scored against every
label of the taxonomy, entries as the linker scores them at run time (best label's cosine
mixed with the preferred label's), and the loss is cross-entropy over all entries: the
nearest wrong labels, the hard negatives, are always in the denominator (a random
in-batch negative is almost never one: the encoder fine-tune's loss was ~0.1 from step 1).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from training.linker import LabelIndex

log = logging.getLogger(__name__)


@dataclass(slots=True)
class AdapterConfig:
    steps: int = 100
    max_seconds: float = 15 * 60  # the time budget; training stops at the first limit
    batch_size: int = 128
    learning_rate: float = 1e-3
    scale: float = 20.0  # cosine -> logit
    preferred_weight: float = 0.5  # how entries are scored (LinkerSettings.preferred_weight)
    extra_share: float = 0.25  # share of each batch taken from the extra pairs, if any
    seed: int = 13
    threads: int | None = None


@dataclass(slots=True)
class AdapterResult:
    adapter: np.ndarray  # (dim, dim) float32
    steps: int
    seconds: float
    first_loss: float
    last_loss: float
    queries: int  # alternative labels available as queries
    extra_pairs: int


def train_adapter(
    index: LabelIndex,
    config: AdapterConfig | None = None,
    extra: tuple[np.ndarray, Sequence[int]] | None = None,
    progress: bool = False,
) -> AdapterResult:
    """Train an adapter over `index` (the frozen label embeddings). `extra`: embeddings of
    extra query texts and the entry index each names (e.g. confirmed span -> entry links)."""
    import torch
    from tqdm.auto import tqdm

    config = config or AdapterConfig()
    if config.threads:
        torch.set_num_threads(config.threads)
    if len(index.offsets) < 2:
        raise ValueError("adapter training needs a taxonomy of at least two entries")
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    alt_rows = np.setdiff1d(np.arange(len(index.vectors)), index.offsets)
    n_extra = len(extra[1]) if extra is not None else 0
    if len(alt_rows) == 0 and n_extra == 0:
        raise ValueError("no training queries: the taxonomy has no alternative labels")
    vectors = torch.from_numpy(np.ascontiguousarray(index.vectors, dtype=np.float32))
    entry_of_row = torch.from_numpy(index.entry_of_row)
    preferred = vectors[torch.from_numpy(index.offsets)]
    n_entries = len(index.offsets)
    extra_q = extra_e = None
    if extra is not None and n_extra:
        extra_q = torch.from_numpy(np.ascontiguousarray(extra[0], dtype=np.float32))
        extra_e = torch.as_tensor(np.asarray(extra[1], dtype=np.int64))
    take_extra = (
        min(n_extra, max(1, round(config.batch_size * config.extra_share))) if n_extra else 0
    )
    if len(alt_rows) == 0:
        take_extra = min(n_extra, config.batch_size)
    take_alt = min(len(alt_rows), config.batch_size - take_extra)
    dim = vectors.shape[1]
    weight = torch.nn.Parameter(torch.zeros(dim, dim))
    optimizer = torch.optim.Adam([weight], lr=config.learning_rate)
    w_pref = config.preferred_weight

    def entry_scores(q: torch.Tensor, own_rows: torch.Tensor | None) -> torch.Tensor:
        q = torch.nn.functional.normalize(q + q @ weight, dim=-1)
        sims = q @ vectors.T
        if own_rows is not None:  # a label cannot be its own evidence
            sims = sims.index_put((torch.arange(len(q)), own_rows), torch.tensor(-2.0))
        best = torch.full((len(q), n_entries), -2.0).scatter_reduce(
            1, entry_of_row.expand(len(q), -1), sims, "amax", include_self=True
        )
        return (1 - w_pref) * best + w_pref * (q @ preferred.T)

    started, step = time.time(), 0
    first_loss = last_loss = float("nan")
    bar = tqdm(total=config.steps, disable=not progress, desc="training adapter", file=sys.stderr)
    while step < config.steps and time.time() - started < config.max_seconds:
        losses = []
        if take_alt:
            rows = torch.from_numpy(rng.choice(alt_rows, take_alt, replace=False))
            scores = entry_scores(vectors[rows], rows)
            losses.append(
                torch.nn.functional.cross_entropy(config.scale * scores, entry_of_row[rows])
            )
        if take_extra and extra_q is not None and extra_e is not None:
            pick = torch.from_numpy(rng.choice(n_extra, take_extra, replace=False))
            scores = entry_scores(extra_q[pick], None)
            losses.append(torch.nn.functional.cross_entropy(config.scale * scores, extra_e[pick]))
        loss = torch.stack(losses).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        last_loss = float(loss.detach())
        if step == 0:
            first_loss = last_loss
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{last_loss:.3f}")
    bar.close()
    return AdapterResult(
        adapter=weight.detach().numpy().astype(np.float32),
        steps=step,
        seconds=round(time.time() - started, 1),
        first_loss=round(first_loss, 4),
        last_loss=round(last_loss, 4),
        queries=len(alt_rows),
        extra_pairs=n_extra,
    )
