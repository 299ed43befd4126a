"""Subword alignment and windowing, shared by prediction and training.

A document is tokenized once, without truncation; each subword is tied to the word (see
`training.text.words`) it starts in, and a word is read from its first subword. A word may
cover several of the tokenizer's pieces (`T-SQL` is `t`, `-`, `sql`): all of them belong to
it, the word is read from `t`, and a window never starts inside it. Texts
longer than the model's limit are cut into overlapping windows that start on word
boundaries. Every word is *owned* by exactly one window (the one where it sits furthest
from an edge), so a span crossing a seam is decoded once, from one set of word tags.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from training.text import Word

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True, slots=True)
class WindowConfig:
    """How a long document is cut: the one default for prediction, training and the
    simulator's feature extractor (measured by benchmarks/predict_speed.py, docs/tagger.md).

    `max_tokens` counts the document's own subwords only: special tokens ([CLS] and [SEP]
    for BERT) come on top, so 254 fills a 256-position input. `stride` is how many subwords
    consecutive windows of a long document share. A model whose position embeddings are
    shorter caps `max_tokens` (`usable_window`).
    """

    max_tokens: int = 254
    stride: int = 32

    def __post_init__(self) -> None:
        if not isinstance(self.max_tokens, int) or self.max_tokens < 2:
            raise ValueError(f"max_tokens must be at least 2, got {self.max_tokens!r}")
        if not isinstance(self.stride, int) or self.stride < 0:
            raise ValueError(f"stride must not be negative, got {self.stride!r}")

    def as_keys(self) -> dict[str, int]:
        """The window as the flat keys that project.toml's `[model]`, a checkpoint's
        `skillloop.json` config and a round's `spec.json` write."""
        return {"max_tokens": self.max_tokens, "stride": self.stride}

    @classmethod
    def take_keys(cls, raw: dict) -> WindowConfig:
        """The window that `raw`'s `max_tokens` and `stride` keys give (defaults for those
        missing), taking them out of `raw` (`as_keys` reversed)."""
        return cls(**{key: raw.pop(key) for key in WINDOW_KEYS if key in raw})


WINDOWS = WindowConfig()
WINDOW_KEYS = ("max_tokens", "stride")


@dataclass(slots=True)
class Encoding:
    """A whole document as subwords, with the subword <-> word alignment."""

    input_ids: list[int]
    word_of_token: np.ndarray  # (n_tokens,) word index, -1 for tokens outside any word
    first_token: np.ndarray  # (n_words,) index of a word's first subword, -1 if it has none


@dataclass(slots=True)
class Window:
    """Subwords `[start, end)` of a document, fed to the model as one sequence.

    Words whose first subword lies in `[own_start, own_end)` take their tags from this
    window; the rest of the window is context.
    """

    start: int
    end: int
    own_start: int
    own_end: int


def require_fast_tokenizer(tokenizer) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"{type(tokenizer).__name__} is a slow tokenizer: skillloop needs a fast "
            "(Rust) tokenizer for character offsets"
        )


def encode(tokenizer, text: str, word_offsets: Sequence[Word]) -> Encoding:
    """Tokenize `text` once and tie every subword to the word it starts in."""
    out = tokenizer(
        text,
        add_special_tokens=False,
        return_offsets_mapping=True,
        return_attention_mask=False,
        verbose=False,
    )
    char_to_word = np.full(len(text) + 1, -1, dtype=np.int64)
    for i, (start, end) in enumerate(word_offsets):
        char_to_word[start:end] = i
    offsets = np.asarray(out["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    word_of_token = np.full(len(offsets), -1, dtype=np.int64)
    for t, (start, end) in enumerate(offsets):
        if end <= start:
            continue
        hits = char_to_word[start:end]
        inside = hits[hits >= 0]
        if inside.size:
            word_of_token[t] = inside[0]
    first_token = np.full(len(word_offsets), -1, dtype=np.int64)
    seen = word_of_token >= 0
    tokens = np.flatnonzero(seen)
    words_hit, first_index = np.unique(word_of_token[seen], return_index=True)
    first_token[words_hit] = tokens[first_index]
    return Encoding(list(out["input_ids"]), word_of_token, first_token)


def make_windows(encoding: Encoding, window: WindowConfig) -> list[Window]:
    """Overlapping windows of at most `window.max_tokens` subwords (special tokens excluded).

    Consecutive windows share about `window.stride` subwords (at most half a window); each
    window starts on the first subword of a word, and ownership of the shared stretch is
    split in its middle.
    """
    max_tokens = window.max_tokens
    stride = min(window.stride, max_tokens // 2)
    n = len(encoding.input_ids)
    if n <= max_tokens:
        return [Window(0, n, 0, n)]

    word_of_token = encoding.word_of_token

    def word_start_at_or_before(t: int, floor: int) -> int:
        while t > floor and word_of_token[t] >= 0 and word_of_token[t] == word_of_token[t - 1]:
            t -= 1
        return t

    starts = [0]
    while starts[-1] + max_tokens < n:
        previous = starts[-1]
        target = previous + max_tokens - stride
        nxt = word_start_at_or_before(target, previous)
        if nxt <= previous:  # no word starts in the overlap: take the next word's start
            nxt = target
            limit = previous + max_tokens
            while (
                nxt < limit
                and word_of_token[nxt] >= 0
                and word_of_token[nxt] == word_of_token[nxt - 1]
            ):
                nxt += 1
            if nxt >= limit:  # a single word longer than the window: cut it
                nxt = target
        starts.append(nxt)
    ends = [min(s + max_tokens, n) for s in starts]

    windows = []
    own_start = 0
    for k, (start, end) in enumerate(zip(starts, ends, strict=True)):
        if k + 1 < len(starts):
            middle = (starts[k + 1] + end) // 2
            own_end = max(word_start_at_or_before(middle, starts[k + 1]), own_start)
        else:
            own_end = n
        windows.append(Window(start, end, own_start, own_end))
        own_start = own_end
    return windows


def owned_words(encoding: Encoding, window: Window) -> np.ndarray:
    """Indices of the words whose tags are read from `window`."""
    first = encoding.first_token
    return np.flatnonzero((first >= window.own_start) & (first < window.own_end))


def special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after a single sequence ([CLS] / [SEP] for BERT)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for i in range(len(full) - len(plain) + 1):
        if full[i : i + len(plain)] == plain:
            return full[:i], full[i + len(plain) :]
    raise ValueError(f"cannot locate the special tokens of {type(tokenizer).__name__}")


def window_inputs(
    encoding: Encoding, window: Window, specials: tuple[list[int], list[int]]
) -> list[int]:
    """Model input ids for a window: prefix specials, the window's subwords, suffix specials.
    The window's first subword sits at position `len(specials[0])`."""
    prefix, suffix = specials
    return prefix + encoding.input_ids[window.start : window.end] + suffix


def position_limit(tokenizer, model) -> int:
    """Longest input (special tokens included) the model and tokenizer accept."""
    limits = [getattr(model.config, "max_position_embeddings", None)]
    limits.append(getattr(tokenizer, "model_max_length", None))
    usable = [n for n in limits if isinstance(n, int) and 0 < n < 1_000_000]
    return min(usable) if usable else 512


def usable_window(
    window: WindowConfig, tokenizer, model, specials: tuple[list[int], list[int]]
) -> WindowConfig:
    """`window` with `max_tokens` capped so that a window plus its special tokens fits the
    model, and `stride` at most half of that (as `make_windows` reads it)."""
    limit = position_limit(tokenizer, model) - sum(map(len, specials))
    max_tokens = min(window.max_tokens, limit)
    return WindowConfig(max_tokens, min(window.stride, max_tokens // 2))


# ---------------------------------------------------------------- running windows


@dataclass(slots=True)
class WindowJob:
    """One window of one document, ready for the model."""

    doc: int  # the caller's index of the document
    inputs: list[int]  # model input ids, special tokens included
    owned: np.ndarray  # indices of the words read from this window
    positions: np.ndarray  # where those words' first subwords sit in `inputs`


def window_jobs(
    doc: int,
    encoding: Encoding,
    windows: Sequence[Window],
    specials: tuple[list[int], list[int]],
) -> list[WindowJob]:
    """The jobs for a document's windows; windows that own no word are left out."""
    jobs = []
    for window in windows:
        owned = owned_words(encoding, window)
        if owned.size:
            positions = encoding.first_token[owned] - window.start + len(specials[0])
            jobs.append(WindowJob(doc, window_inputs(encoding, window, specials), owned, positions))
    return jobs


def forward_windows(
    model,
    jobs: Sequence[WindowJob],
    read: Callable[[object], Sequence],
    *,
    pad_id: int,
    batch_tokens: int,
    width: Callable[[int], int] | None = None,
    hidden_states: bool = False,
) -> Iterator[tuple[WindowJob, list[np.ndarray]]]:
    """Run `jobs` through `model` and yield, per job, `read(output)`'s rows at its words.

    Jobs are sorted by length (longest first) and batched while the batch's padded size
    stays within `batch_tokens` subwords (0: one window per pass), so little compute goes
    to padding. `width(n)` pads a batch whose longest input is `n` (default: to `n`).
    `read` takes the model's output and returns tensors of shape (batch, width, ...);
    each is handed back as a float32 array (n_owned, ...). `hidden_states` asks the model
    for every layer's hidden states. Runs under inference mode.
    """
    import torch

    model.eval()  # a trainer's dev evaluation hands over a model in train mode
    with torch.inference_mode():
        for batch, ids, mask in padded_batches(jobs, pad_id, batch_tokens, width):
            extra = {"output_hidden_states": True} if hidden_states else {}
            output = model(input_ids=ids, attention_mask=mask, **extra)
            outputs = [t.float().numpy() for t in read(output)]
            for row, job in enumerate(batch):
                yield job, [out[row, job.positions] for out in outputs]


def padded_batches(
    jobs: Sequence[WindowJob],
    pad_id: int,
    batch_tokens: int,
    width: Callable[[int], int] | None = None,
) -> Iterator[tuple[list[WindowJob], torch.Tensor, torch.Tensor]]:
    """`(batch, input_ids, attention_mask)` for `jobs` sorted by length (longest first) and
    cut into batches under `batch_tokens` (see `forward_windows`)."""
    ordered = sorted(jobs, key=lambda job: len(job.inputs), reverse=True)
    for batch in batches_under_budget(ordered, batch_tokens):
        n = len(batch[0].inputs)
        ids, mask = pad_rows([job.inputs for job in batch], pad_id, width(n) if width else n)
        yield batch, ids, mask


def pad_rows(
    rows: Sequence[Sequence[int]], pad_id: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`rows` as one (len(rows), width) tensor padded with `pad_id`, and its attention mask;
    the one padding of prediction batches and training batches."""
    import torch

    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, values in enumerate(rows):
        ids[row, : len(values)] = torch.tensor(values, dtype=torch.long)
        mask[row, : len(values)] = 1
    return ids, mask


def batches_under_budget(jobs: Sequence, budget: int, length=lambda job: len(job.inputs)):
    """Consecutive runs of length-sorted (longest first) jobs whose padded size (the first
    job's `length` times the run's size) fits `budget`; 0 gives one job per run."""
    batch: list = []
    for job in jobs:
        width = length(batch[0]) if batch else length(job)
        if batch and width * (len(batch) + 1) > budget:
            yield batch
            batch = []
        batch.append(job)
    if batch:
        yield batch
