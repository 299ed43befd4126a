"""A cross-encoder re-ranker for the linker: the span and a candidate entry's label read
together by the encoder (the MiniLM backbone the linker already loads, nothing
downloaded), a linear head on the mean-pooled pair giving one score.

It is trained listwise on groups (one query, its positive label and hard negatives:
softmax over the group, the positive the target), e.g. from
`training.link_head.taxonomy_hard_negatives`: ESCO's alternative labels as queries, their
entry's preferred label as the positive, the nearest wrong entries' preferred labels as the
negatives. No validation pair is needed. Every step runs the encoder forward and backward
over group x batch pairs, so on a CPU it is bounded by `max_seconds`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SCALE_FILE = "cross_scale.json"


@dataclass(slots=True)
class CrossConfig:
    steps: int = 200
    max_seconds: float = 10 * 60  # training stops at the first limit
    groups_per_step: int = 8  # queries per step
    group_size: int = 8  # the positive and group_size - 1 hard negatives
    learning_rate: float = 3e-5
    head_learning_rate: float = 1e-2
    max_tokens: int = 40  # query and label together
    seed: int = 13
    threads: int | None = None


@dataclass(slots=True)
class CrossStage:
    """A linker round's cross-encoder stage: how it trains, the weight of its squashed
    score among the re-ranking scores, and how many taxonomy queries it draws its training
    groups from."""

    config: CrossConfig
    weight: float
    queries: int = 4000


@dataclass(slots=True)
class CrossResult:
    steps: int
    seconds: float
    first_loss: float
    last_loss: float


@dataclass(slots=True)
class Group:
    """One training query: its text, and candidate texts with the positive first."""

    query: str
    candidates: list[str]


class CrossEncoder:
    """An encoder folder (a BERT-like model) with a one-score head on its mean-pooled pair."""

    def __init__(self, folder: str | Path | None = None):
        import torch
        from transformers import AutoModel, AutoTokenizer

        from training.checkpoint import resolve_source

        source = Path(resolve_source(None if folder in (None, "backbone") else str(folder)))
        self.folder = source
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.model = AutoModel.from_pretrained(source)
        self.head = torch.nn.Linear(self.model.config.hidden_size, 1)
        torch.nn.init.zeros_(self.head.weight)
        torch.nn.init.zeros_(self.head.bias)
        head_file = source / "cross_head.pt"
        if head_file.is_file():
            self.head.load_state_dict(torch.load(head_file))
        # its logits' range on its training pairs (`fit_scale`), which `squash` maps to 0-1
        scale_file = source / SCALE_FILE
        self.scale: tuple[float, float] | None = None
        if scale_file.is_file():
            low, high = json.loads(scale_file.read_text(encoding="utf-8"))["logit_range"]
            self.scale = (float(low), float(high))
        self._torch = torch

    def forward(self, queries: Sequence[str], labels: Sequence[str], max_tokens: int = 40):
        batch = self.tokenizer(
            list(queries),
            list(labels),
            padding=True,
            truncation=True,
            max_length=max_tokens,
            return_tensors="pt",
        )
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return self.head(pooled).squeeze(-1)

    def score(
        self, queries: Sequence[str], labels: Sequence[str], batch_size: int = 256
    ) -> np.ndarray:
        """One score per (query, label) pair, in order."""
        self.model.eval()
        out = []
        with self._torch.inference_mode():
            for at in range(0, len(queries), batch_size):
                part = slice(at, at + batch_size)
                out.append(self.forward(queries[part], labels[part]).numpy())
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    def fit_scale(self, groups: Sequence[Group], sample: int = 256, seed: int = 13) -> None:
        """Its logits' 5th and 95th percentiles over the pairs of up to `sample` of its
        training groups (positives and hard negatives): the range `squash` maps to 0-1."""
        rng = np.random.default_rng(seed)
        picked = rng.choice(len(groups), min(sample, len(groups)), replace=False)
        queries = [groups[i].query for i in picked for _ in groups[i].candidates]
        labels = [label for i in picked for label in groups[i].candidates]
        logits = self.score(queries, labels)
        self.scale = (float(np.percentile(logits, 5)), float(np.percentile(logits, 95)))

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        self._torch.save(self.head.state_dict(), folder / "cross_head.pt")
        if self.scale is not None:
            text = json.dumps({"logit_range": list(self.scale)}) + "\n"
            (folder / SCALE_FILE).write_text(text, encoding="utf-8")
        return folder


def squash(logits: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """A cross-encoder score on the scale of the linker's others (0 to 1): its logit placed
    linearly between the `scale` the model gives its own training pairs (`fit_scale`: the
    5th and 95th percentiles), clipped. The raw logits are unbounded (a trained ESCO model
    gives the top 20 candidates of a span -35 to -12), where the served score must stay at
    most 1 for the no-match threshold; a logistic squash bends the order it adds
    (measured worse: docs/linking.md), a linear one keeps it."""
    low, high = scale
    placed = (np.asarray(logits, dtype=np.float64) - low) / max(high - low, 1e-6)
    return np.clip(placed, 0.0, 1.0).astype(np.float32)


def train_cross_encoder(
    cross: CrossEncoder, groups: Sequence[Group], config: CrossConfig | None = None
) -> CrossResult:
    """Listwise training: each group's softmax over its candidates, the first the target."""
    torch = cross._torch
    config = config or CrossConfig()
    if not groups or any(len(g.candidates) < 2 for g in groups):
        raise ValueError("every group needs a positive and at least one negative")
    if config.threads:
        torch.set_num_threads(config.threads)
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    optimizer = torch.optim.AdamW(
        [
            {"params": cross.model.parameters(), "lr": config.learning_rate},
            {"params": cross.head.parameters(), "lr": config.head_learning_rate},
        ]
    )
    cross.model.train()
    started, step = time.time(), 0
    first = last = float("nan")
    while step < config.steps and time.time() - started < config.max_seconds:
        picked = rng.choice(len(groups), min(config.groups_per_step, len(groups)), replace=False)
        queries, labels, sizes = [], [], []
        for g in (groups[i] for i in picked):
            cands = g.candidates[: config.group_size]
            queries += [g.query] * len(cands)
            labels += cands
            sizes.append(len(cands))
        scores = cross.forward(queries, labels, config.max_tokens)
        losses = []
        at = 0
        for size in sizes:  # the positive is each group's first candidate
            losses.append(torch.logsumexp(scores[at : at + size], 0) - scores[at])
            at += size
        loss = torch.stack(losses).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        last = float(loss.detach())
        if step == 0:
            first = last
        step += 1
    cross.model.eval()
    return CrossResult(step, round(time.time() - started, 1), round(first, 4), round(last, 4))
