"""Fine-tuning a token-classification tagger on documents with gold character spans.

Documents go through the same path as prediction (`training.train_examples`: the words,
tags and windows of `training.text` and `training.windows`). Whole documents are
windowed, never cut, so no word is silently left out of training. `train` runs named
steps: `prepare` (model, CRF, examples), `Optimizer.epoch` per epoch, `dev_f1` and
`EarlyStopping` after it (all in `run_epochs`), then the best epoch is saved.

The result is a checkpoint folder (model, tokenizer, `skillloop.json`) that
`training.checkpoint.load` and `Tagger.load` read back.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from training import checkpoint
from training.crf import CRF, word_emissions
from training.devices import Placement, place
from training.early_stopping import EarlyStopping
from training.freezing import freeze_for_epoch
from training.layers import CRF_PREFIX, make_layered_examples
from training.saving import check_out_dir, save
from training.soft_targets import mixed_loss
from training.student import truncate_encoder
from training.text import Document, tag_names
from training.train_config import TrainConfig
from training.train_examples import IGNORE, Example, batches, collate, make_examples

if TYPE_CHECKING:
    from training.tagger import Tagger

log = logging.getLogger(__name__)

METADATA_FILE = checkpoint.METADATA_FILE


@dataclass
class TrainResult:
    path: Path
    epochs_run: int
    best_epoch: int  # 1-based; the epoch whose weights were saved
    best_dev_f1: float | None
    losses: list[float]  # mean training loss per epoch
    dev_f1: list[float]  # dev entity F1 per epoch (empty without a dev set)
    seconds: float
    n_windows: int
    timings: dict = field(default_factory=dict)
    teachers: list[dict] = field(default_factory=list)  # training.distill's, if any


class TrainingCancelled(Exception):
    """`should_stop` asked to stop; nothing was saved."""


StepCallback = Callable[[int, int], None]  # (steps done, total steps)
EpochCallback = Callable[[int, float, float | None], None]  # (epoch, mean loss, dev F1)


@dataclass
class Prepared:
    """What one training run works on, built once before the first step."""

    model: torch.nn.Module
    tokenizer: Any  # a transformers fast tokenizer
    dev_tagger: Tagger  # on `model`
    crf: CRF | None
    examples: list[Example]
    bf16: bool
    pad_id: int
    placement: Placement
    distil_weight: float = 0.0  # with teachers' soft targets on the examples


def prepare(
    base: str | Path | None,
    train_docs: Sequence[Document],
    labels: list[str],
    config: TrainConfig,
    label_map: Mapping[str, str] | None,
    soft: Sequence[np.ndarray] | None = None,
) -> Prepared:
    from training.tagger import Tagger

    placement = place(config.device, config.accelerate)
    torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)  # the fresh head rows are drawn here
    loaded = checkpoint.load(
        base, labels, label_map, allow_new_labels=True, layers=config.layers, crf=config.crf
    )
    layered = loaded.layers is not None  # asked for, or a layered base's own layers
    if config.encoder_layers:
        truncate_encoder(loaded.model, config.encoder_layers)
    # dev predictions go through the same code as serving, on the model being trained; it
    # also caps the window at what the model's position embeddings allow
    dev_tagger = Tagger.from_loaded(
        loaded,
        str(base),
        window=config.window,
        decoding=config.decoding,
    )
    # a layered model holds its CRFs itself (and computes its own loss)
    crf = CRF(dev_tagger.tags, init=loaded.transitions) if config.crf and not layered else None
    loaded.model.to(placement.device)
    if crf is not None:
        crf.to(placement.device)
    window = dev_tagger.window
    if loaded.layers is not None:
        if soft is not None:
            raise ValueError("distillation supports flat models only, not label layers")
        examples = make_layered_examples(loaded.tokenizer, train_docs, loaded.layers, window)
    else:
        examples = make_examples(loaded.tokenizer, train_docs, labels, window, soft)
    if not examples:
        raise ValueError("the training documents hold no words")
    pad = loaded.tokenizer.pad_token_id
    return Prepared(
        model=loaded.model,
        tokenizer=loaded.tokenizer,
        dev_tagger=dev_tagger,
        crf=crf,
        examples=examples,
        bf16=placement.bf16(config.precision),
        pad_id=pad if pad is not None else 0,
        placement=placement,
        distil_weight=config.distil_weight if soft is not None else 0.0,
    )


def trainable_parameters(model: torch.nn.Module, crf: CRF | None) -> list[torch.nn.Parameter]:
    """Everything the optimizer updates, and so everything the gradient clip bounds."""
    return list(model.parameters()) + (list(crf.parameters()) if crf is not None else [])


class Optimizer:
    """AdamW with weight decay on matrices only and the CRF's scores at their own rate, a
    linear warm-up schedule, and the gradient clip over everything it updates."""

    def __init__(
        self, run: Prepared, config: TrainConfig, total_steps: int, on_step: StepCallback | None
    ):
        from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

        decay: list[torch.nn.Parameter] = []
        no_decay: list[torch.nn.Parameter] = []
        crf = list(run.crf.parameters()) if run.crf is not None else []
        for name, param in run.model.named_parameters():
            if name.startswith(CRF_PREFIX):  # a layered model's CRFs
                crf.append(param)
                continue
            (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
        groups = [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        if crf:
            groups.append({"params": crf, "weight_decay": 0.0, "lr": config.crf_learning_rate})
        self.optimizer = torch.optim.AdamW(groups, lr=config.learning_rate)
        schedule = (
            get_cosine_schedule_with_warmup
            if config.schedule == "cosine"
            else get_linear_schedule_with_warmup
        )
        self.scheduler = schedule(
            self.optimizer, int(config.warmup_ratio * total_steps), total_steps
        )
        self.clipped = trainable_parameters(run.model, run.crf)
        self.max_grad_norm = config.max_grad_norm
        self.total_steps, self.done, self.on_step = total_steps, 0, on_step
        self.placement = run.placement

    def step(self, loss: torch.Tensor) -> None:
        """Backward, clip, update, advance the schedule."""
        self.placement.backward(loss)
        self.placement.sync_gradients(self.clipped)  # several processes: their mean
        torch.nn.utils.clip_grad_norm_(self.clipped, self.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def epoch(
        self,
        run: Prepared,
        epoch_batches: list[list[int]],
        bar,
        epoch: int,
        should_stop: Callable[[], bool] | None,
    ) -> float:
        """One pass over `epoch_batches`; the mean training loss."""
        run.model.train()
        total = 0.0
        for count, batch_ids in enumerate(epoch_batches, start=1):
            if should_stop is not None and should_stop():
                raise TrainingCancelled("training cancelled")
            loss = batch_loss(run, [run.examples[k] for k in batch_ids])
            self.step(loss)
            total, self.done = total + loss.item(), self.done + 1
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{total / count:.4f}")
            if self.on_step is not None:
                self.on_step(self.done, self.total_steps)
        return total / len(epoch_batches)


def batch_loss(run: Prepared, batch: list[Example]) -> torch.Tensor:
    # not `windows.forward_windows`: that runs under inference mode, longest first, and
    # reads only owned words; training needs gradients, the seeded shuffled batch order
    # and every word of a window. The windows and the padding (`pad_rows`) are shared.
    inputs = run.placement.to_device(collate(batch, run.pad_id))
    targets = inputs.pop("labels") if run.crf else inputs["labels"]
    with run.placement.autocast(run.bf16):
        out = run.model(**inputs)
    if run.crf is None:
        gold = out.loss
    else:
        emissions, tags, mask = word_emissions(out.logits.float(), targets, IGNORE)
        gold = run.crf.nll(emissions, tags, mask) / mask.sum().clamp(min=1)
    if not run.distil_weight:
        return gold
    return mixed_loss(gold, out.logits, targets, batch, run.crf, run.distil_weight)


def dev_f1(run: Prepared, dev_docs: Sequence[Document]) -> float:
    from training.evaluate import evaluate

    run.dev_tagger.transitions = run.crf.transitions() if run.crf else None
    if run.dev_tagger.layered is not None:
        run.dev_tagger.layered.refresh_transitions()
    # the serving tagger predicts on the CPU: dev scores of a GPU run are taken there
    with (
        run.placement.on_cpu(run.model),
        torch.autocast(
            "cpu", dtype=torch.bfloat16, enabled=run.bf16 and run.placement.device.type == "cpu"
        ),
    ):
        return float(evaluate(run.dev_tagger, dev_docs).f1)


def train(
    base: str | Path | None,
    train_docs: Sequence[Document],
    labels: Sequence[str],
    out_dir: str | Path,
    dev_docs: Sequence[Document] | None = None,
    config: TrainConfig | None = None,
    label_map: Mapping[str, str] | None = None,
    progress: bool = True,
    should_stop: Callable[[], bool] | None = None,
    on_step: StepCallback | None = None,
    on_epoch: EpochCallback | None = None,
    soft_targets: Sequence[np.ndarray] | None = None,
) -> TrainResult:
    """Fine-tune `base` (checkpoint folder, hub name, or None for the backbone) on
    `train_docs` and save the best epoch (by dev entity F1, else the last) to `out_dir`.

    `on_step(done, total)` after every optimizer step and `on_epoch(epoch, loss, dev_f1)`
    after every epoch report progress. Raises TrainingCancelled when `should_stop()` turns
    true (nothing is saved then), and ValueError before any work when `out_dir` is a
    non-empty folder that is not a skillloop checkpoint (it would be replaced).
    `soft_targets` (one (n_words, n_tags) array per training document: teachers' per-word
    probabilities, `training.distill`) adds the soft loss at `config.distil_weight`.
    """
    config = config or TrainConfig()
    if soft_targets is None and (
        config.teachers or config.teacher_bases or config.teacher_checkpoints
    ):
        raise ValueError("the config names teachers: train through training.distill.train")
    labels = list(labels)
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    if not train_docs:
        raise ValueError("no training documents")
    started = time.perf_counter()
    run = prepare(base, train_docs, labels, config, label_map, soft_targets)
    prepared = time.perf_counter()
    history = run_epochs(run, config, dev_docs, progress, should_stop, on_step, on_epoch)
    trained = time.perf_counter()
    timings = {
        "precision": "bf16" if run.bf16 else "fp32",
        "prepare_seconds": round(prepared - started, 2),
        "train_seconds": round(trained - prepared - history.eval_seconds, 2),
        "dev_eval_seconds": round(history.eval_seconds, 2),
        "total_seconds": round(trained - started, 2),
    }
    result = TrainResult(
        path=out_dir,
        epochs_run=len(history.losses),
        best_epoch=history.stopping.best_epoch,
        best_dev_f1=history.stopping.best_f1 if dev_docs else None,
        losses=history.losses,
        dev_f1=history.dev_scores,
        seconds=round(trained - started, 2),
        n_windows=len(run.examples),
        timings=timings,
    )
    metadata = checkpoint_metadata(base, labels, label_map, config, result, train_docs, dev_docs)
    crf_scores = history.stopping.crf_scores_to_save(run.crf, bool(dev_docs))
    if crf_scores is not None:
        metadata["crf"] = crf_scores.to_json()
    timings["device"] = str(run.placement.device)
    timings["processes"] = run.placement.num_processes
    if run.placement.is_main:  # data-parallel processes hold the same weights
        save(run.model.to("cpu"), run.tokenizer, out_dir, metadata)
    return result


@dataclass
class EpochLog:
    """What the epoch loop leaves behind: per-epoch figures and the best epoch's state."""

    stopping: EarlyStopping
    losses: list[float] = field(default_factory=list)
    dev_scores: list[float] = field(default_factory=list)
    eval_seconds: float = 0.0


def run_epochs(
    run: Prepared,
    config: TrainConfig,
    dev_docs: Sequence[Document] | None,
    progress: bool,
    should_stop: Callable[[], bool] | None,
    on_step: StepCallback | None,
    on_epoch: EpochCallback | None,
) -> EpochLog:
    """Train epoch by epoch until `config.epochs` or early stopping, then put the best
    epoch's weights back into `run.model` (the last epoch's without a dev set)."""
    from tqdm.auto import tqdm

    rng = random.Random(config.seed)
    n_batches = math.ceil(len(run.examples) / config.batch_size)
    total_steps = run.placement.steps_per_epoch(n_batches) * config.epochs
    optimizer = Optimizer(run, config, total_steps, on_step)
    history = EpochLog(EarlyStopping(config.patience))
    bar = tqdm(total=total_steps, disable=not progress, desc="training", unit="step")
    try:
        for epoch in range(1, config.epochs + 1):
            epoch_batches = run.placement.shard(batches(run.examples, config.batch_size, rng))
            freeze_for_epoch(run.model, config, epoch)
            history.losses.append(optimizer.epoch(run, epoch_batches, bar, epoch, should_stop))
            f1 = None
            if dev_docs and (config.dev_every_epoch or epoch == config.epochs):
                eval_started = time.perf_counter()
                f1 = dev_f1(run, dev_docs)
                history.eval_seconds += time.perf_counter() - eval_started
                history.dev_scores.append(f1)
                log.info("epoch %d: loss %.4f, dev entity F1 %.4f", epoch, history.losses[-1], f1)
            if on_epoch is not None:
                on_epoch(epoch, history.losses[-1], f1)
            if f1 is None:
                history.stopping.best_epoch = epoch  # without a dev set the last epoch is kept
            elif history.stopping.update(epoch, f1, run.model, run.crf):
                break
    finally:
        bar.close()
    history.stopping.restore(run.model)
    return history


def checkpoint_metadata(
    base: str | Path | None,
    labels: list[str],
    label_map: Mapping[str, str] | None,
    config: TrainConfig,
    result: TrainResult,
    train_docs: Sequence[Document],
    dev_docs: Sequence[Document] | None,
) -> dict:
    """What `skillloop.json` records of how the checkpoint was made."""
    return {
        "labels": labels,
        "tags": tag_names(labels),
        "base": None if base is None else str(base),
        "label_map": dict(label_map or {}),
        "config": config.to_json(),
        "metrics": {
            "best_dev_f1": result.best_dev_f1,
            "dev_f1": result.dev_f1,
            "losses": result.losses,
        },
        "timings": result.timings,
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "train_documents": len(train_docs),
        "dev_documents": len(dev_docs or []),
        "windows": result.n_windows,
    }
