"""Soft targets for distillation: the teachers' averaged per-word tag probabilities, and
the loss that pulls a student's per-word probabilities towards them.

A teacher's per-word probabilities are what it reports when it serves
(`training.tagger.Tagger.predict`: a CRF checkpoint's marginals, else its emission
softmax, at its fitted temperature), read on the whole document as served. The targets
are their plain mean over teachers (`average_marginals`). The student is trained on the
first subword of each word (as its gold loss, `training.train_examples`); its own
probabilities there are, with a CRF, the CRF's marginals over the window
(`crf_log_marginals`, forward-backward in torch so the gradient reaches the emissions and
the transition scores), else its emission softmax. The soft loss is the mean per-word
KL(teacher || student); `mixed_loss` weighs it against the gold loss.

`training.distill` trains the teachers and hands these targets to `training.finetune`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from training.crf import CRF, word_emissions
from training.text import Document
from training.train_examples import IGNORE, Example

# a student probability below this counts as this (the log stays finite where a teacher
# gives mass to a move the student's CRF forbids)
FLOOR = 1e-8


def average_marginals(
    per_teacher: Sequence[Sequence[np.ndarray]],
    teacher_tags: Sequence[Sequence[str]],
    tags: Sequence[str],
) -> list[np.ndarray]:
    """The mean over teachers of each document's (n_words, n_tags) probabilities, columns
    in `tags` order. `per_teacher[k][d]` is teacher k's array for document d, its columns
    in `teacher_tags[k]` order. ValueError when a teacher lacks a tag or a document's
    word count differs between teachers."""
    if not per_teacher:
        raise ValueError("no teachers")
    n_docs = len(per_teacher[0])
    total = [None] * n_docs  # type: list[np.ndarray | None]
    for arrays, names in zip(per_teacher, teacher_tags, strict=True):
        missing = set(tags) - set(names)
        if missing:
            raise ValueError(f"a teacher has no tags {sorted(missing)}")
        if len(arrays) != n_docs:
            raise ValueError("the teachers read different numbers of documents")
        columns = [list(names).index(t) for t in tags]
        for d, probs in enumerate(arrays):
            probs = np.asarray(probs, dtype=np.float64)[:, columns]
            current = total[d]
            if current is not None and current.shape != probs.shape:
                raise ValueError(f"the teachers split document {d} into different words")
            total[d] = probs if current is None else current + probs
    out = []
    for summed in total:
        assert summed is not None
        mean = summed / len(per_teacher)
        out.append((mean / np.maximum(mean.sum(axis=1, keepdims=True), 1e-12)).astype(np.float32))
    return out


def teacher_marginals(
    teachers: Sequence[str | Path],
    docs: Sequence[Document],
    labels: Sequence[str],
    tags: Sequence[str],
    label_map: dict[str, str] | None = None,
) -> list[np.ndarray]:
    """Each document's per-word tag probabilities averaged over the `teachers`
    (checkpoint folders, loaded in fp32 one at a time), columns in `tags` order.
    ValueError for a layered teacher: distillation is for flat models."""
    from training.tagger import Tagger

    per_teacher, teacher_tags = [], []
    texts = [doc.text for doc in docs]
    for path in teachers:
        tagger = Tagger.load(path, labels, label_map, precision="fp32")
        if tagger.layered is not None:
            raise ValueError(f"teacher {path} is layered: distillation supports flat models only")
        per_teacher.append([p.probs for p in tagger.predict(texts)])
        teacher_tags.append(tagger.tags)
        del tagger
    return average_marginals(per_teacher, teacher_tags, tags)


def crf_log_marginals(crf: CRF, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log P(word w has tag t) under `crf` for each row of `emissions` (batch, words,
    n_tags) whose real words (`mask`) come first: forward-backward over the training
    lattice (`CRF.nll`'s: constraints on moves, none on the first tag, as a window may
    start inside a span). Positions past a row's words hold no meaning."""
    emissions = emissions.float()
    matrix = crf.matrix + crf.mask.float()
    n_words = emissions.shape[1]
    lengths = mask.sum(dim=1)
    alphas = [crf.start + emissions[:, 0]]
    for w in range(1, n_words):
        nxt = torch.logsumexp(alphas[-1][:, :, None] + matrix + emissions[:, w, None, :], dim=1)
        alphas.append(torch.where(mask[:, w, None], nxt, alphas[-1]))
    end = crf.end.expand_as(emissions[:, 0])
    betas = [end] * n_words
    for w in range(n_words - 2, -1, -1):
        ahead = (emissions[:, w + 1] + betas[w + 1])[:, None, :]
        after = torch.logsumexp(matrix[None] + ahead, dim=2)
        betas[w] = torch.where((w + 1 < lengths)[:, None], after, end)
    alpha, beta = torch.stack(alphas, dim=1), torch.stack(betas, dim=1)
    last = (lengths - 1).clamp(min=0)
    log_z = torch.logsumexp(alpha[torch.arange(len(last)), last] + crf.end, dim=1)
    return alpha + beta - log_z[:, None, None]


def soft_loss(
    logits: torch.Tensor, targets: torch.Tensor, batch: Sequence[Example], crf: CRF | None
) -> torch.Tensor:
    """Mean over the batch's target words of KL(teacher || student), the student's
    probabilities read from `logits` (batch, width, n_tags) at the positions `targets`
    marks (each word's first subword), through `crf` when there is one."""
    emissions, _, mask = word_emissions(logits.float(), targets, IGNORE)
    teacher = torch.zeros_like(emissions)
    for row, example in enumerate(batch):
        if example.soft is None:
            raise ValueError("a training window has no teacher probabilities")
        soft = torch.from_numpy(example.soft).to(emissions.device)
        teacher[row, : len(soft)] = soft
    if crf is not None:
        log_student = crf_log_marginals(crf, emissions, mask)
    else:
        log_student = torch.log_softmax(emissions, dim=-1)
    log_student = log_student.clamp(min=float(np.log(FLOOR)))
    log_teacher = torch.log(teacher.clamp(min=FLOOR))
    kl = (teacher * (log_teacher - log_student)).sum(dim=-1) * mask
    return kl.sum() / mask.sum().clamp(min=1)


def mixed_loss(
    gold: torch.Tensor,
    logits: torch.Tensor,
    targets: torch.Tensor,
    batch: Sequence[Example],
    crf: CRF | None,
    weight: float,
) -> torch.Tensor:
    """(1 - weight) * the gold loss + weight * the soft loss (weight 1: teachers only)."""
    soft = soft_loss(logits, targets, batch, crf)
    if weight >= 1.0:
        return soft
    return (1.0 - weight) * gold + weight * soft
