"""A linear-chain CRF over word tags (Lafferty et al., 2001; on top of BERT as in
Souza et al., 2019), trained with the encoder and used by viterbi decoding.

The encoder's first-subword logits are the emission scores; the CRF adds one learned
score per tag pair, per first tag and per last tag. IOB2's impossible moves (O -> I-X,
B-X/I-X -> I-Y) stay impossible: they are masked, not learned. (start -> I-X is forbidden
when decoding a document, but allowed in training: a window may begin inside a span.)

The scores live in the checkpoint's `skillloop.json` under "crf" (`Transitions.to_json`),
in tag order, so the model folder itself stays a plain transformers checkpoint. Decoding
adds them to the words' log-probabilities: a word's log-softmax differs from its logits
by one constant per word, which every path pays alike, so the best path is the CRF's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from training.decoding import transitions as allowed_transitions

FORBIDDEN = -1e4  # a masked move's score: finite, so the forward algorithm stays stable


@dataclass(frozen=True)
class Transitions:
    """Learned CRF scores for `tags`: `start[j]`, `matrix[i, j]` (tag i -> tag j), `end[i]`."""

    tags: tuple[str, ...]
    start: np.ndarray
    matrix: np.ndarray
    end: np.ndarray

    def to_json(self) -> dict:
        return {
            "tags": list(self.tags),
            "start": self.start.round(5).tolist(),
            "transitions": self.matrix.round(5).tolist(),
            "end": self.end.round(5).tolist(),
        }

    @classmethod
    def from_json(cls, data: dict) -> Transitions:
        tags = tuple(data["tags"])
        start, matrix, end = (
            np.asarray(data[k], dtype=np.float64) for k in ("start", "transitions", "end")
        )
        n = len(tags)
        if start.shape != (n,) or matrix.shape != (n, n) or end.shape != (n,):
            raise ValueError(f"CRF scores do not match its {n} tags")
        return cls(tags, start, matrix, end)

    def reorder(self, tags: Sequence[str]) -> Transitions | None:
        """The same scores in the order of `tags`; None when a tag is unknown to them."""
        index = {t: i for i, t in enumerate(self.tags)}
        if any(t not in index for t in tags):
            return None
        order = [index[t] for t in tags]
        return Transitions(
            tuple(tags), self.start[order], self.matrix[np.ix_(order, order)], self.end[order]
        )


class CRF(torch.nn.Module):
    """Trainable transition scores with IOB2's impossible moves masked."""

    def __init__(self, tags: Sequence[str], init: Transitions | None = None):
        super().__init__()
        self.tags = tuple(tags)
        n = len(self.tags)
        _, allowed = allowed_transitions(self.tags)
        self.register_buffer("allowed", torch.tensor(allowed))
        # for each tag, the tag that opens its span (I-X -> B-X; others map to themselves)
        index = {t: i for i, t in enumerate(self.tags)}
        opening = [
            index.get("B" + t[1:], i) if t.startswith("I-") else i for i, t in enumerate(self.tags)
        ]
        self.register_buffer("opening", torch.tensor(opening))
        self.register_buffer("mask", torch.tensor(np.where(allowed, 0.0, FORBIDDEN)))
        init = init.reorder(self.tags) if init is not None else None
        self.start = torch.nn.Parameter(_tensor(init.start if init else np.zeros(n)))
        self.matrix = torch.nn.Parameter(_tensor(init.matrix if init else np.zeros((n, n))))
        self.end = torch.nn.Parameter(_tensor(init.end if init else np.zeros(n)))

    def nll(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Summed negative log-likelihood of gold `tags` (batch, words) given `emissions`
        (batch, words, n_tags); `mask` (batch, words) marks real words, which come first.
        Rows without words are skipped."""
        keep = mask[:, 0]
        emissions, tags, mask = emissions[keep].float(), tags[keep], mask[keep]
        if emissions.shape[0] == 0:
            return emissions.sum()
        # a training window may start inside a span (a long post is cut into windows), so
        # an I- first tag is allowed here; decoding a whole document still forbids it
        start = self.start
        matrix = self.matrix + self.mask.float()
        rows = torch.arange(len(tags))
        lengths = mask.sum(dim=1)
        # the gold path's score
        tags = self.repair(tags)
        emitted = emissions.gather(2, tags[:, :, None])[:, :, 0] * mask
        moved = matrix[tags[:, :-1], tags[:, 1:]] * mask[:, 1:]
        gold = start[tags[:, 0]] + emitted.sum(1) + moved.sum(1) + self.end[tags[rows, lengths - 1]]
        # the log-sum over all paths (forward algorithm)
        alpha = start + emissions[:, 0]
        for w in range(1, tags.shape[1]):
            nxt = torch.logsumexp(alpha[:, :, None] + matrix + emissions[:, w, None, :], dim=1)
            alpha = torch.where(mask[:, w, None], nxt, alpha)
        total = torch.logsumexp(alpha + self.end, dim=1)
        return (total - gold).sum()

    def repair(self, tags: torch.Tensor) -> torch.Tensor:
        """Gold tags with every I-X that cannot follow its predecessor read as B-X.

        Such moves come from words the tokenizer gives no subword (skipped in training),
        e.g. the first word of a span (29 of SkillSpan's 120,553 training words in an
        ad-hoc count). Left
        as they are, the gold path would be impossible and its masked score would swamp
        the loss."""
        broken = ~self.allowed[tags[:, :-1], tags[:, 1:]]
        return torch.cat(
            [tags[:, :1], torch.where(broken, self.opening[tags[:, 1:]], tags[:, 1:])], 1
        )

    def transitions(self) -> Transitions:
        def numpy(p: torch.Tensor) -> np.ndarray:
            return p.detach().double().numpy().copy()

        return Transitions(self.tags, numpy(self.start), numpy(self.matrix), numpy(self.end))


def word_emissions(
    logits: torch.Tensor, targets: torch.Tensor, ignore: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gather the logits and gold tags of the positions that carry a target (each word's
    first subword) to the front: `(emissions, tags, mask)` of shape (batch, words, ...)."""
    has_target = targets != ignore
    counts = has_target.sum(dim=1)
    width = max(int(counts.max()), 1)
    # stable sort moves target positions to the front in their original order
    order = torch.sort((~has_target).to(torch.int8), dim=1, stable=True).indices[:, :width]
    mask = torch.arange(width)[None, :] < counts[:, None]
    emissions = logits.gather(1, order[:, :, None].expand(-1, -1, logits.shape[-1]))
    tags = torch.where(mask, targets.gather(1, order), 0)
    return emissions, tags, mask


def _tensor(values: np.ndarray) -> torch.Tensor:
    return torch.tensor(np.asarray(values), dtype=torch.float32)
