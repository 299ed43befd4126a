"""Exactly one training round per project at a time, across threads, processes and hosts.

    training_lock(state)   a context manager around one round (plan, train, gate)

Which lock depends on where the annotations live (the `ProjectState`'s database URL):

- SQLite (the default): an exclusive `flock` on the state folder's `training.lock`.
  Every process on one machine sees it (gunicorn workers, `skillloop retrain`, `skillloop
  worker`); the kernel drops it when its holder dies, kill -9 included. A file lock is not
  trusted across machines (NFS locking varies): several hosts need PostgreSQL.
- PostgreSQL: a session-level advisory lock, `pg_try_advisory_lock(key)`, taken on a
  connection of its own that the round's process keeps open for the whole round. The key
  is derived from the project's state folder name, so every host that serves the project
  contends for the same lock. PostgreSQL drops the lock with the session: at once when
  the holder's process dies (the kernel closes its socket, kill -9 included), and within
  about half a minute when a whole host vanishes (TCP keepalives below).

Both are tried without blocking; a caller that wants to wait polls (`wait`), so a stopping
worker is never stuck in a blocking lock call.
"""

from __future__ import annotations

import fcntl
import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Protocol

from labeling.state import ProjectState

POLL_SECONDS = 1.0  # between tries while waiting for another round to end
# a host that vanished without closing its connection loses the lock after about
# idle + interval x count seconds
KEEPALIVE: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}


class TrainingBusy(ValueError):
    """Another round (this process or another, on this host or another) holds the lock."""


class RoundLock(Protocol):
    def try_acquire(self) -> bool:
        """Take the lock if it is free; never blocks."""

    def release(self) -> None: ...

    def describe(self) -> str:
        """Where the lock lives, for messages."""


def database_url(url: str | None) -> str | None:
    """The PostgreSQL URL rounds coordinate through, or None for SQLite (the file lock)."""
    if url and url.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres"):
        return url
    return None


def libpq_url(url: str) -> str:
    """`postgresql+psycopg://...` (SQLAlchemy's spelling) as libpq reads it."""
    scheme, rest = url.split(":", 1)
    return "postgresql:" + rest if scheme.startswith("postgres") else url


def lock_key(state_dir: Path) -> int:
    """The advisory lock's 64-bit key: the project's state folder, by its last two path
    parts (`state/linkedin-skills`), so hosts that mount shared storage at different
    paths still agree. Two projects sharing the key would only wait for each other."""
    name = "/".join(Path(state_dir).resolve().parts[-2:])
    digest = hashlib.sha256(f"skillloop training round {name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class FileLock:
    """`flock` on a file: one host."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._handle: IO[str] | None = None

    def try_acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a")  # noqa: SIM115 (kept open while the lock is held)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._handle = handle
        return True

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def describe(self) -> str:
        return str(self.path)


class AdvisoryLock:
    """A PostgreSQL session-level advisory lock on a connection of its own."""

    def __init__(self, url: str, key: int, connect_timeout: float = 10.0):
        self.url, self.key, self.connect_timeout = libpq_url(url), key, connect_timeout
        self._conn: Any = None  # a psycopg.Connection while held

    def try_acquire(self) -> bool:
        import psycopg

        conn = psycopg.connect(
            self.url,
            autocommit=True,
            connect_timeout=max(1, int(self.connect_timeout)),
            application_name="skillloop training round",
            **KEEPALIVE,
        )
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
        except Exception:
            conn.close()
            raise
        if not (row and row[0]):
            conn.close()
            return False
        self._conn = conn
        return True

    def still_held(self) -> bool:
        """Whether the session holding the lock is still alive (a dropped connection, a
        database restart, has released it)."""
        if self._conn is None or self._conn.closed:
            return False
        try:
            self._conn.execute("SELECT 1")
        except Exception:
            return False
        return True

    def release(self) -> None:
        if self._conn is None:
            return
        try:
            if not self._conn.closed:
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
        except Exception:  # the session is gone, and the lock with it
            pass
        finally:
            self._conn.close()
            self._conn = None

    def describe(self) -> str:
        return f"PostgreSQL advisory lock {self.key}"


def round_lock(state: ProjectState) -> RoundLock:
    """The lock for `state`'s rounds: advisory with a PostgreSQL URL, else the file."""
    pg = database_url(state.database_url)
    if pg is not None:
        return AdvisoryLock(pg, lock_key(state.root))
    return FileLock(state.training_lock)


@contextmanager
def training_lock(
    state: ProjectState,
    wait: Callable[[], bool] | None = None,
    *,
    on_busy: Callable[[], None] | None = None,
) -> Iterator[RoundLock]:
    """Hold the project's round lock. Without `wait`, raises TrainingBusy when another
    holds it; with it, polls until the lock is free or `wait()` returns False (then
    raises). `on_busy()` is called once when the first try finds the lock held."""
    lock = round_lock(state)
    told = False
    while not lock.try_acquire():
        if on_busy is not None and not told:
            on_busy()
            told = True
        if wait is None or not wait():
            raise TrainingBusy(f"a round is already training for {state.root} ({lock.describe()})")
        time.sleep(POLL_SECONDS)
    try:
        yield lock
    finally:
        lock.release()
