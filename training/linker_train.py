"""Fine-tuning the linker's encoder contrastively, with in-batch negatives.

Each step takes a batch of distinct taxonomy entries; for each, an alternative label is the
anchor and the entry's preferred label the positive (later: annotator-confirmed span ->
entry pairs as they arrive). Every other entry's preferred label in the batch is a
negative: the loss is cross-entropy over the scaled cosine matrix, both directions (the
multiple-negatives ranking loss of sentence-transformers). Entries are distinct within a
batch so that no negative is secretly a positive.
"""

from __future__ import annotations

import logging
import random
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from training.linker import LinkerSettings, SentenceEncoder
from training.saving import scratch_path
from training.taxonomy import Taxonomy

log = logging.getLogger(__name__)


@dataclass(slots=True)
class LinkerTrainConfig:
    batch_size: int = 64
    learning_rate: float = 3e-5
    max_seconds: float = 15 * 60  # the time budget; training stops at the first limit
    max_steps: int = 100_000
    warmup_steps: int = 50
    scale: float = 20.0  # cosine -> logit (sentence-transformers' default)
    max_tokens: int = 32
    seed: int = 13
    threads: int | None = None


@dataclass(slots=True)
class LinkerTrainResult:
    path: Path
    steps: int
    pairs_seen: int
    seconds: float
    last_loss: float


def alt_label_pairs(taxonomy: Taxonomy) -> list[tuple[int, list[str]]]:
    """(entry index, its alternative labels) for every entry that has any."""
    return [(i, e.labels[1:]) for i, e in enumerate(taxonomy.entries) if len(e.labels) > 1]


def train_linker(
    taxonomy: Taxonomy,
    out: str | Path,
    base: str | Path | None = None,
    config: LinkerTrainConfig | None = None,
    extra_pairs: Sequence[tuple[str, str]] = (),
    progress: bool = False,
) -> LinkerTrainResult:
    """Fine-tune `base` (default: the MiniLM backbone) and save a linker folder at `out`.

    `extra_pairs` are (span text, entry id) pairs, e.g. annotator-confirmed links: they
    join the alternative labels as anchors of their entry."""
    import torch
    from tqdm.auto import tqdm

    config = config or LinkerTrainConfig()
    if config.threads:
        torch.set_num_threads(config.threads)
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    anchors = dict(alt_label_pairs(taxonomy))
    index = {e.id: i for i, e in enumerate(taxonomy.entries)}
    for text, entry_id in extra_pairs:
        if entry_id not in index:
            raise ValueError(f"extra pair ({text!r}, {entry_id!r}): no such taxonomy entry")
        anchors.setdefault(index[entry_id], []).append(text)
    entries = sorted(anchors)
    if len(entries) < 2:
        raise ValueError("contrastive training needs at least two entries with alternative labels")
    batch_size = min(config.batch_size, len(entries))

    encoder = SentenceEncoder(base)
    encoder.model.train()
    optimizer = torch.optim.AdamW(encoder.model.parameters(), lr=config.learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / max(1, config.warmup_steps))
    )
    started, step, loss_value = time.time(), 0, float("nan")
    order: list[int] = []
    bar = tqdm(disable=not progress, desc="training linker", unit="step", file=sys.stderr)
    while step < config.max_steps and time.time() - started < config.max_seconds:
        if len(order) < batch_size:
            order = entries[:]
            rng.shuffle(order)
        batch, order = order[:batch_size], order[batch_size:]
        queries = [rng.choice(anchors[e]) for e in batch]
        positives = [taxonomy.entries[e].preferred_label for e in batch]
        q = encoder.forward(queries, config.max_tokens)
        p = encoder.forward(positives, config.max_tokens)
        logits = config.scale * q @ p.T
        target = torch.arange(len(batch))
        loss = (
            torch.nn.functional.cross_entropy(logits, target)
            + torch.nn.functional.cross_entropy(logits.T, target)
        ) / 2
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(encoder.model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        step += 1
        loss_value = float(loss.detach())
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.3f}")
    bar.close()
    seconds = time.time() - started
    encoder.model.eval()

    out = Path(out)
    partial = scratch_path(out.absolute(), "partial")  # never a user's own X.partial
    encoder.model.save_pretrained(partial)
    encoder.tokenizer.save_pretrained(partial)
    details = {
        "trained_from": str(encoder.folder) if base else "backbone",
        "taxonomy": taxonomy.name,
        "taxonomy_fingerprint": taxonomy.fingerprint(),
        "steps": step,
        "pairs_seen": step * batch_size,
        "seconds": round(seconds, 1),
        "last_loss": round(loss_value, 4),
        "config": asdict(config),
        "extra_pairs": len(extra_pairs),
    }
    LinkerSettings(encoder=".", details=details).save(partial)
    if out.exists():
        shutil.rmtree(out)
    partial.replace(out)
    log.info("linker saved to %s (%d steps, %.0f s)", out, step, seconds)
    return LinkerTrainResult(out, step, step * batch_size, seconds, loss_value)
