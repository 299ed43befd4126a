"""Bounded work per turn on the model: texts cut into pieces and grouped into chunks of
about CHUNK_CHARS characters, a lock handed out in arrival order, and pieces' predictions
joined back into one per text (used by backend.service.model_holder.ModelHolder.predict)."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from training.tagger import Prediction

# characters of text per turn on the model (about one job post): a waiting request waits for
# at most one such turn of each request ahead of it (docs/service.md, "Limits")
CHUNK_CHARS = 4000


class FairLock:
    """A mutex granted in arrival order (threading.Lock is not: a thread that releases and
    re-acquires at once usually wins again, which starves the others)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[object] = deque()
        self._held = False

    def __enter__(self) -> FairLock:
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            while self._held or self._queue[0] is not ticket:
                self._cond.wait()
            self._queue.popleft()
            self._held = True
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._held = False
            self._cond.notify_all()


def pieces(text: str, budget: int) -> list[tuple[int, str]]:
    """`(offset, piece)`s of `text`, each at most `budget` characters, cut at the last line
    break, else sentence end, else space in the second half of the budget (a text with no
    space there is cut hard)."""
    pieces, start = [], 0
    while len(text) - start > budget:
        low, high = start + budget // 2, start + budget
        cut = text.rfind("\n", low, high)
        if cut < 0:
            cut = text.rfind(". ", low, high)
            cut = cut + 1 if cut >= 0 else text.rfind(" ", low, high)
        if cut <= start:
            cut = high
        pieces.append((start, text[start:cut]))
        start = cut
    pieces.append((start, text[start:]))
    return pieces


def joined(text: str, parts: list[tuple[int, Prediction | None]]) -> Prediction | None:
    """One Prediction for `text` from its pieces' (None when a piece was not reached): word
    and span offsets shifted back, word rows stacked. A span crossing a cut is two spans."""
    done = [(offset, p) for offset, p in parts if p is not None]
    if not parts or len(done) < len(parts):
        return None
    if len(done) == 1:
        return done[0][1]
    import numpy as np

    from training.tagger import Prediction

    first = done[0][1]
    hidden = [p.hidden for _, p in done if p.hidden is not None]
    return Prediction(
        text=text,
        words=[(s + o, e + o) for o, p in done for s, e in p.words],
        tags=first.tags,
        probs=np.concatenate([p.probs.reshape(-1, len(first.tags)) for _, p in done]),
        spans=[
            replace(span, start=span.start + o, end=span.end + o)
            for o, p in done
            for span in p.spans
        ],
        word_tags=[t for _, p in done for t in p.word_tags],
        hidden=np.concatenate(hidden) if len(hidden) == len(done) else None,
    )


def chunks(lengths: Sequence[int], budget: int) -> list[tuple[int, int]]:
    """`[first, last)` index ranges of consecutive texts totalling about `budget` characters
    (at least one text each)."""
    ranges, first, total = [], 0, 0
    for i, length in enumerate(lengths):
        if i > first and total + length > budget:
            ranges.append((first, i))
            first, total = i, 0
        total += length
    if first < len(lengths):
        ranges.append((first, len(lengths)))
    return ranges
