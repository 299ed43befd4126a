"""Fine-tuning a token-classification tagger on documents with gold character spans.

Documents go through the same path as prediction: `training.text.words` and
`spans_to_tags` for word tags, `training.windows.encode` / `make_windows` for subwords and
windows. A word is trained on its first subword; other subwords are ignored (-100).
Whole documents are windowed, never cut, so no word is silently left out of training.

The result is a checkpoint folder (model, tokenizer, `skillloop.json`) that
`training.checkpoint.load` and `Tagger.load` read back.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from training import checkpoint
from training.crf import CRF, word_emissions
from training.text import Document, spans_to_tags, tag_names, words
from training.windows import WINDOWS, encode, make_windows, special_tokens, window_inputs

log = logging.getLogger(__name__)

METADATA_FILE = checkpoint.METADATA_FILE
IGNORE = -100
# written into a CRF checkpoint's folder, for whoever takes the model elsewhere
CRF_NOTE = """# A skillloop checkpoint trained with a CRF

The model folder is a plain transformers token-classification checkpoint, but its tag
scores were trained together with a CRF whose transition scores are in `skillloop.json`
under `"crf"` (`start`, `transitions`, `end`, in the order of `tags`). Decode it with
skillloop (`training.tagger.Tagger.load(folder, labels)`), or add those scores in a
Viterbi pass over the per-word log-softmax. A plain `transformers.pipeline(
"token-classification")` reads the emissions alone and finds far fewer spans (measured on
SkillSpan dev: span F1 0.22 against 0.51 with the CRF, docs/tagger.md). For a checkpoint
that works with argmax alone, train with `skillloop train --no-crf`.
"""
TRAIN_PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class TrainConfig:
    """Defaults are the best recipe measured on SkillSpan (docs/training.md)."""

    epochs: int = 8
    learning_rate: float = 2e-4
    batch_size: int = 4  # windows per step: more, smaller steps beat 16 (docs/training.md)
    max_tokens: int = WINDOWS.max_tokens  # subwords per window, special tokens excluded
    stride: int = WINDOWS.stride  # subwords shared by consecutive windows of a long document
    seed: int = 13
    patience: int = 2  # epochs without dev improvement before stopping
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    num_threads: int = 2
    max_grad_norm: float = 1.0
    decoding: str = "viterbi"  # how dev predictions are decoded (training.decoding)
    # "auto": bf16 autocast where the CPU computes bf16 natively (weights and optimizer
    # stay fp32; epochs about 2x faster on SkillSpan, docs/training.md), else fp32
    precision: str = "auto"
    # a linear-chain CRF over word tags, trained with the encoder (training.crf): +4.0
    # Skill / +2.0 Knowledge dev F1 on SkillSpan, mean of two seeds (docs/training.md);
    # its transition scores learn at their own rate, as they start from zero
    crf: bool = True
    crf_learning_rate: float = 1e-2

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError("epochs, batch_size and learning_rate must be positive")
        if self.precision not in TRAIN_PRECISIONS:
            raise ValueError(
                f"unknown precision {self.precision!r}: choose one of {TRAIN_PRECISIONS}"
            )


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


class TrainingCancelled(Exception):
    """`should_stop` asked to stop; nothing was saved."""


@dataclass(slots=True)
class Example:
    input_ids: list[int]
    labels: list[int]


def make_examples(
    tokenizer, docs: Sequence[Document], labels: Sequence[str], max_tokens: int, stride: int
) -> list[Example]:
    """Model inputs and per-subword targets for every window of every document."""
    tag_index = {t: i for i, t in enumerate(tag_names(labels))}
    specials = special_tokens(tokenizer)
    offset = len(specials[0])
    examples = []
    for doc in docs:
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
        for window in make_windows(enc, max_tokens, stride):
            ids = window_inputs(enc, window, specials)
            targets = [IGNORE] * len(ids)
            inside = np.flatnonzero((first >= window.start) & (first < window.end))
            for w in inside:
                targets[offset + first[w] - window.start] = tag_index[tags[w]]
            examples.append(Example(ids, targets))
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
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    targets = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        mask[row, :n] = 1
        targets[row, :n] = torch.tensor(e.labels)
    return {"input_ids": ids, "attention_mask": mask, "labels": targets}


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
) -> TrainResult:
    """Fine-tune `base` (checkpoint folder, hub name, or None for the backbone) on
    `train_docs` and save the best epoch (by dev entity F1, else the last) to `out_dir`.

    Raises TrainingCancelled when `should_stop()` turns true; nothing is saved then.
    """
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    from training.evaluate import evaluate
    from training.precision import native_bf16
    from training.tagger import Tagger

    config = config or TrainConfig()
    bf16 = config.precision == "bf16" or (config.precision == "auto" and native_bf16())
    labels = list(labels)
    if not train_docs:
        raise ValueError("no training documents")
    started = time.perf_counter()
    torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)  # the fresh head rows are drawn here
    rng = random.Random(config.seed)
    loaded = checkpoint.load(base, labels, label_map, allow_new_labels=True)
    model, tokenizer = loaded.model, loaded.tokenizer
    # dev predictions go through the same code as serving, on the model being trained; it
    # also caps the window at what the model's position embeddings allow
    dev_tagger = Tagger.from_loaded(
        loaded,
        str(base),
        max_tokens=config.max_tokens,
        stride=config.stride,
        decoding=config.decoding,
    )
    max_tokens, stride = dev_tagger.max_tokens, dev_tagger.stride
    crf = CRF(dev_tagger.tags, init=loaded.transitions) if config.crf else None
    examples = make_examples(tokenizer, train_docs, labels, max_tokens, stride)
    if not examples:
        raise ValueError("the training documents hold no words")
    prepared = time.perf_counter()

    steps_per_epoch = math.ceil(len(examples) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if crf is not None:
        groups.append(
            {"params": list(crf.parameters()), "weight_decay": 0.0, "lr": config.crf_learning_rate}
        )
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(config.warmup_ratio * total_steps), total_steps
    )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    losses: list[float] = []
    dev_f1: list[float] = []
    best_state, best_epoch, best_f1, since_best = None, 0, -1.0, 0
    best_crf = None
    eval_seconds = 0.0
    bar = tqdm(total=total_steps, disable=not progress, desc="training", unit="step")
    for epoch in range(1, config.epochs + 1):
        model.train()
        total, count = 0.0, 0
        for batch_ids in batches(examples, config.batch_size, rng):
            if should_stop is not None and should_stop():
                bar.close()
                raise TrainingCancelled("training cancelled")
            inputs = collate([examples[k] for k in batch_ids], pad_id)
            targets = inputs.pop("labels") if crf else None
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = model(**inputs)
            if crf is None:
                loss = out.loss
            else:
                emissions, tags, mask = word_emissions(out.logits.float(), targets, IGNORE)
                loss = crf.nll(emissions, tags, mask) / mask.sum().clamp(min=1)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            total, count = total + loss.item(), count + 1
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{total / count:.4f}")
        losses.append(total / count)
        if dev_docs:
            eval_started = time.perf_counter()
            dev_tagger.transitions = crf.transitions() if crf else None
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                f1 = evaluate(dev_tagger, dev_docs).f1
            eval_seconds += time.perf_counter() - eval_started
            dev_f1.append(float(f1))
            log.info("epoch %d: loss %.4f, dev entity F1 %.4f", epoch, losses[-1], f1)
            if f1 > best_f1:
                best_f1, best_epoch, since_best = float(f1), epoch, 0
                best_state = copy.deepcopy(model.state_dict())
                best_crf = crf.transitions() if crf else None
            else:
                since_best += 1
                if since_best >= config.patience:
                    break
        else:
            best_epoch = epoch
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    elif crf is not None:
        best_crf = crf.transitions()
    trained = time.perf_counter()

    timings = {
        "precision": "bf16" if bf16 else "fp32",
        "prepare_seconds": round(prepared - started, 2),
        "train_seconds": round(trained - prepared - eval_seconds, 2),
        "dev_eval_seconds": round(eval_seconds, 2),
        "total_seconds": round(trained - started, 2),
    }
    result = TrainResult(
        path=Path(out_dir),
        epochs_run=len(losses),
        best_epoch=best_epoch,
        best_dev_f1=best_f1 if dev_docs else None,
        losses=losses,
        dev_f1=dev_f1,
        seconds=round(trained - started, 2),
        n_windows=len(examples),
        timings=timings,
    )
    metadata = {
        "labels": labels,
        "tags": tag_names(labels),
        "base": None if base is None else str(base),
        "label_map": dict(label_map or {}),
        "config": asdict(config),
        "metrics": {"best_dev_f1": result.best_dev_f1, "dev_f1": dev_f1, "losses": losses},
        "timings": timings,
        "epochs_run": result.epochs_run,
        "best_epoch": best_epoch,
        "train_documents": len(train_docs),
        "dev_documents": len(dev_docs or []),
        "windows": len(examples),
    }
    if best_crf is not None:
        metadata["crf"] = best_crf.to_json()
    save(model, tokenizer, Path(out_dir), metadata)
    return result


def save(model, tokenizer, out_dir: Path, metadata: dict) -> None:
    """Write the checkpoint beside `out_dir` and move it into place when complete, so a
    reader never sees half a model."""
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    (partial / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    if metadata.get("crf"):
        (partial / "README.md").write_text(CRF_NOTE)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    partial.rename(out_dir)


def read_metadata(folder: str | Path) -> dict:
    """The `skillloop.json` of a checkpoint folder ({} for checkpoints trained elsewhere)."""
    path = Path(folder) / METADATA_FILE
    return json.loads(path.read_text()) if path.is_file() else {}
