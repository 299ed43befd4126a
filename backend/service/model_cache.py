"""The loaded taggers of a process, shared and bounded (issue 22.4).

Projects that serve the same model (on a backend serving several Label Studio projects:
those made from one template, before their first round, or any two whose serving version
is the same checkpoint) hold one loaded copy: the model is keyed by what loading it reads
(its folder, the project's labels and label map, the window options), not by the project.

At most `max_models` are held. Loading one more first unloads the least recently used
model no prediction is running on; a model no prediction used for `idle_s` seconds is
unloaded too (checked by each holder's registry watcher). The holders serving an unloaded
model are told (`ModelHolder.unloaded`), and load it again, in the background, on their
next /predict, which waits for it as for a first load (backend/service/app.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from backend.service.chunks import FairLock

log = logging.getLogger(__name__)

ModelKey = Hashable
T = TypeVar("T")


class Holder(Protocol):
    """What the cache tells a model's users (backend.service.model_holder.ModelHolder)."""

    def unloaded(self, key: ModelKey) -> None: ...


@dataclass
class _Entry:
    tagger: Any
    last_used: float
    users: dict[int, Holder] = field(default_factory=dict)  # id(holder) -> holder
    in_use: int = 0  # predictions running on it now


class ModelCache:
    """Loaded taggers by key. `max_models` 0: no bound; `idle_s` 0: never unloaded for
    idleness. `loads` and `unloads` count what happened (tests and /status read them)."""

    def __init__(
        self,
        max_models: int = 0,
        idle_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.max_models = max_models
        self.idle_s = idle_s
        self.clock = clock
        self.loads = 0
        self.unloads = 0
        self._entries: dict[ModelKey, _Entry] = {}
        self._lock = threading.Lock()
        self._loading: dict[ModelKey, threading.Lock] = {}  # one load of a key at a time
        self._turns: dict[ModelKey, FairLock] = {}  # one forward pass of a model at a time

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def summary(self) -> dict:
        """What /status says: models held, the bound, loads and unloads so far."""
        with self._lock:
            held = len(self._entries)
        return {"held": held, "max": self.max_models, "loads": self.loads, "unloads": self.unloads}

    def held(self) -> list[ModelKey]:
        with self._lock:
            return list(self._entries)

    def acquire(self, key: ModelKey, holder: Holder, load: Callable[[], T]) -> T:
        """The tagger for `key` (or a linker: backend/service/linker_holder.py keeps one
        cache of them), loaded by `load()` unless another holder has it already;
        `holder` is one of its users until it `release`s it. `load` may raise: nothing is
        held then."""
        with self._lock:
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    entry.users[id(holder)] = holder
                    entry.last_used = self.clock()
                    return entry.tagger
                evicted = self._make_room(key, room=1)  # before loading: the bound holds
            self._tell(evicted)
            tagger = load()
            with self._lock:
                self._entries[key] = _Entry(tagger, self.clock(), {id(holder): holder})
                self.loads += 1
                evicted = self._make_room(key, room=0)  # others loaded meanwhile
            self._tell(evicted)
            return tagger

    def turns(self, key: ModelKey) -> FairLock:
        """The lock a model's forward passes take turns on, shared by every project that
        serves it (a tokenizer must not be used by two threads at once: "Already
        borrowed"); projects serving other models do not wait for it."""
        with self._lock:
            return self._turns.setdefault(key, FairLock())

    def release(self, key: ModelKey | None, holder: Holder) -> None:
        """`holder` no longer serves `key` (a swap, or its project closed): a model no one
        serves is unloaded once no prediction runs on it."""
        if key is None:
            return
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return
            entry.users.pop(id(holder), None)
            if not entry.users and not entry.in_use:
                del self._entries[key]
                log.info("model %s unloaded: no project serves it", _name(key))

    @contextmanager
    def using(self, key: ModelKey | None) -> Iterator[None]:
        """A prediction runs on `key`'s model: it is not unloaded meanwhile, and counts as
        used now."""
        with self._lock:
            entry = self._entries.get(key) if key is not None else None
            if entry is not None:
                entry.in_use += 1
                entry.last_used = self.clock()
        try:
            yield
        finally:
            if entry is not None:
                with self._lock:
                    entry.in_use -= 1
                    entry.last_used = self.clock()
                    if not entry.users and not entry.in_use and self._entries.get(key) is entry:
                        del self._entries[key]

    def unload_idle(self) -> int:
        """Unload the models no prediction used for `idle_s` seconds; how many."""
        if self.idle_s <= 0:
            return 0
        with self._lock:
            cutoff = self.clock() - self.idle_s
            idle = [k for k, e in self._entries.items() if not e.in_use and e.last_used <= cutoff]
            evicted = [self._evict(k, "idle") for k in idle]
        self._tell(evicted)
        return len(evicted)

    # --- under self._lock ----------------------------------------------------------------
    def _make_room(self, key: ModelKey, room: int) -> list[tuple[ModelKey, list[Holder]]]:
        """Unload least recently used idle models (never `key`) until `room` more fit."""
        if self.max_models <= 0:
            return []
        evicted = []
        while len(self._entries) + room > self.max_models:
            idle = [(e.last_used, k) for k, e in self._entries.items() if k != key and not e.in_use]
            if not idle:  # every other model is predicting: one more for a while
                log.warning(
                    "%d models held (SKILLLOOP_MAX_MODELS=%d): all in use",
                    len(self._entries) + room,
                    self.max_models,
                )
                break
            evicted.append(self._evict(min(idle, key=lambda pair: pair[0])[1], "least used"))
        return evicted

    def _evict(self, key: ModelKey, why: str) -> tuple[ModelKey, list[Holder]]:
        entry = self._entries.pop(key)
        self.unloads += 1
        log.info("model %s unloaded (%s; %d held)", _name(key), why, len(self._entries))
        return key, list(entry.users.values())

    @staticmethod
    def _tell(evicted: list[tuple[ModelKey, list[Holder]]]) -> None:
        for key, holders in evicted:
            for holder in holders:
                holder.unloaded(key)


def _name(key: ModelKey) -> str:
    return str(key[0]) if isinstance(key, tuple) and key else str(key)
