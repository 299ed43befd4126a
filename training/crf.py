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
from training.text import TagSet

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

    # buffers (moved with the module, saved in its state, never trained)
    allowed: torch.Tensor
    opening: torch.Tensor
    mask: torch.Tensor

    def __init__(self, tags: Sequence[str], init: Transitions | None = None):
        super().__init__()
        self.tags = tuple(tags)
        n = len(self.tags)
        _, allowed = allowed_transitions(self.tags)
        self.register_buffer("allowed", torch.tensor(allowed))
        # for each tag, the tag that opens its span (I-X -> B-X; others map to themselves)
        i_to_b = TagSet(self.tags).i_to_b
        opening = [i_to_b.get(j, j) for j in range(n)]
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


@dataclass(frozen=True)
class Lattice:
    """The word-tag lattice a decoder reads a document's tags from, as log scores: the
    model whose probabilities a tagger reports.

    A path's probability is exp(start[y0] + sum_w pot[w, y_w] + sum_w matrix[y_w, y_w+1]
    + end[y_last]) / Z, where `pot` is the words' log-probabilities divided by
    `temperature` (`potentials`). Forbidden moves score -inf. A CRF lattice
    (`Lattice.crf`) carries IOB2's constraints and a CRF's learned scores (divided by the
    temperature too, so the marginals change coherently); a free lattice (`Lattice.free`)
    has neither, so its words are independent and its marginals are the tempered
    per-word softmax: a plain checkpoint's emission probabilities.

    Using log-probabilities instead of logits changes nothing: a word's log-softmax
    differs from its logits by one constant per word, which every path pays alike (and
    so does a temperature: log_softmax(l) / T = l / T - c / T).
    """

    tags: tuple[str, ...]
    start: np.ndarray  # (n,)
    matrix: np.ndarray  # (n, n): tag i -> tag j
    end: np.ndarray  # (n,)
    temperature: float = 1.0
    free: bool = False

    @classmethod
    def crf(
        cls, tags: Sequence[str], scores: Transitions | None, temperature: float = 1.0
    ) -> Lattice:
        """IOB2's constraints (no start -> I-X, O -> I-X, B-X/I-X -> I-Y) plus `scores`
        (None: constraints only, what viterbi decoding of a plain model uses)."""
        _check_temperature(temperature)
        tags = tuple(tags)
        start_ok, allowed = allowed_transitions(tags)
        n = len(tags)
        if scores is not None:
            scores = scores.reorder(tags)
            if scores is None:
                raise ValueError(f"CRF scores do not cover the tags {tags}")
        learned = (
            (scores.start, scores.matrix, scores.end)
            if scores is not None
            else (np.zeros(n), np.zeros((n, n)), np.zeros(n))
        )
        start, matrix, end = (np.asarray(s, dtype=np.float64) / temperature for s in learned)
        return cls(
            tags,
            np.where(start_ok, start, -np.inf),
            np.where(allowed, matrix, -np.inf),
            end,
            float(temperature),
        )

    @classmethod
    def free_words(cls, tags: Sequence[str], temperature: float = 1.0) -> Lattice:
        """Independent words: no constraints, no transition scores."""
        _check_temperature(temperature)
        n = len(tags)
        zeros = np.zeros(n)
        return cls(tuple(tags), zeros, np.zeros((n, n)), zeros, float(temperature), True)

    def potentials(self, probs: np.ndarray) -> np.ndarray:
        """Per-word log scores from probabilities (rows summing to 1). A tag of
        probability 0 stays possible, only very unlikely (as in `training.decoding`)."""
        return np.log(np.maximum(np.asarray(probs, dtype=np.float64), 1e-12)) / self.temperature

    def posteriors(self, probs: Sequence[np.ndarray]) -> list[Posterior]:
        """Forward-backward over each document's `probs` (n_words, n_tags)."""
        return forward_backward_many([self.potentials(p) for p in probs], self)


@dataclass(frozen=True)
class Posterior:
    """One document's forward (`alpha`) and backward (`beta`) log scores in a lattice.

    `alpha[w, t]`: log-sum of the scores of all path prefixes ending in tag t at word w
    (word w's potential included); `beta[w, t]`: of all suffixes after it (end score
    included); `log_z`: of all paths.
    """

    lattice: Lattice
    potentials: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    log_z: float

    @property
    def marginals(self) -> np.ndarray:
        """(n_words, n_tags): P(word w has tag t); rows sum to 1."""
        if not len(self.potentials):
            return np.zeros((0, len(self.lattice.tags)))
        out = np.exp(self.alpha + self.beta - self.log_z)
        return out / out.sum(axis=1, keepdims=True)  # rounding only

    def span_probability(self, first: int, last: int, label: str) -> float:
        """P(words first..last carry exactly B-label I-label ... I-label and word last+1,
        if any, is not I-label): the probability that this span, and not a longer or
        shorter one, is in the document. Exact: the sum over every path through that
        sub-lattice, from the forward and backward scores (not a product of marginals,
        which would ignore that neighbouring tags depend on each other)."""
        index = {t: i for i, t in enumerate(self.lattice.tags)}
        b, i = index[f"B-{label}"], index[f"I-{label}"]
        pot, matrix = self.potentials, self.lattice.matrix
        score = self.alpha[first, b]
        previous = b
        for w in range(first + 1, last + 1):
            score += matrix[previous, i] + pot[w, i]
            previous = i
        if last + 1 < len(pot):
            leave = matrix[previous] + pot[last + 1] + self.beta[last + 1]
            leave = np.delete(leave, i)
            score += _logsumexp(leave, axis=0)
        else:
            score += self.lattice.end[previous]
        return float(np.exp(min(score - self.log_z, 0.0)))

    def path_log_probability(self, path: Sequence[int]) -> float:
        """log P(the whole tag path) (tag indices, one per word)."""
        if not len(path):
            return 0.0
        lattice, pot = self.lattice, self.potentials
        score = lattice.start[path[0]] + lattice.end[path[-1]]
        score += sum(pot[w, t] for w, t in enumerate(path))
        score += sum(lattice.matrix[a, c] for a, c in zip(path[:-1], path[1:], strict=True))
        return float(min(score - self.log_z, 0.0))


def forward_backward_many(potentials: Sequence[np.ndarray], lattice: Lattice) -> list[Posterior]:
    """`Posterior`s of many documents, one numpy step per word position for all of them
    (as `training.decoding.viterbi_many`); a free lattice needs no steps at all."""
    if lattice.free:
        out = []
        for pot in potentials:
            norm = _logsumexp(pot, axis=1)[:, None] if len(pot) else np.zeros((0, 1))
            alpha, beta = pot - norm, np.zeros_like(pot)
            out.append(Posterior(lattice, pot - norm, alpha, beta, 0.0))
        return out
    lengths = np.array([len(p) for p in potentials], dtype=np.int64)
    n_docs, n_tags = len(potentials), len(lattice.tags)
    longest = int(lengths.max(initial=0))
    padded = np.zeros((n_docs, max(longest, 1), n_tags))
    for d, pot in enumerate(potentials):
        padded[d, : len(pot)] = pot
    alpha = np.empty_like(padded)
    beta = np.empty_like(padded)
    matrix = lattice.matrix[None]  # (1, prev, next)
    alpha[:, 0] = lattice.start + padded[:, 0]
    for w in range(1, longest):
        alpha[:, w] = _logsumexp(alpha[:, w - 1, :, None] + matrix, axis=1) + padded[:, w]
    beta[:, :] = lattice.end
    for w in range(longest - 2, -1, -1):
        after = _logsumexp(matrix + (padded[:, w + 1] + beta[:, w + 1])[:, None, :], axis=2)
        beta[:, w] = np.where((w + 1 < lengths)[:, None], after, lattice.end)
    out = []
    for d, n in enumerate(lengths):
        log_z = float(_logsumexp(alpha[d, n - 1] + lattice.end, axis=0)) if n else 0.0
        out.append(Posterior(lattice, padded[d, :n], alpha[d, :n], beta[d, :n], log_z))
    return out


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    """log(sum(exp(x))) along `axis`, -inf where every entry is -inf."""
    top = np.max(x, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(x - top).sum(axis=axis)) + np.squeeze(top, axis=axis)


def _check_temperature(temperature: float) -> None:
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive number, got {temperature}")
