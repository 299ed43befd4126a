"""Where the annotation store lives: a SQLite file (the default, one per project state
folder) or a PostgreSQL database named by a URL (`ProjectState.database_url`), opened through
SQLAlchemy Core with the durability each write relies on.

- SQLite: WAL mode with `synchronous=FULL` (the WAL is fsynced at every commit), and every
  write transaction is `BEGIN IMMEDIATE`, so writers queue for the lock at the start
  instead of failing at commit. One connection per store, shared by its threads behind a
  lock (as before SQLAlchemy); other processes share the file through SQLite's locking.
- PostgreSQL (psycopg 3): `synchronous_commit=on` is set on every connection whatever
  the server's or database's default, so a commit has returned only once its WAL is
  flushed on the server. A small connection pool; threads need no lock (the database
  serialises a project's writers on its counter row, labeling/store.py). Every wait for
  the server's answer ends after ANSWER_S on the client's side too (labeling/storage/
  deadline.py), so a frozen server (SIGSTOPped: TCP stays open, nothing answers) costs a
  request ANSWER_S, not as long as it stays frozen.

`Database.on_back`, when set, is called once the database answers again after operations
failed as unavailable (the service fetches from Label Studio what it missed meanwhile).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

WRITE = "skillloop_write"  # execution option: this transaction writes
# How long one PostgreSQL store operation may wait: to connect, for a pooled connection,
# for a lock, for a statement (a SQLite file waits 10 s for a lock, below). Past it the
# operation fails with StoreUnavailable (the service answers 503) instead of holding the
# request: Label Studio gives a webhook 1 s and does not retry, so waiting saves nothing.
WAIT_S = 5
# The client's own bound on one wait for the server's answer (a statement, a commit, a
# pre-ping): past the server's timeouts, which a server that answers at all enforces first
ANSWER_S = WAIT_S + 1
# SQLAlchemy's errors that mean "the database cannot be reached or does not answer in
# time", as opposed to a bug in a statement (ProgrammingError, IntegrityError, ...)
UNAVAILABLE = (exc.OperationalError, exc.InterfaceError, exc.TimeoutError)


class StoreUnavailable(Exception):
    """The annotation database is down, unreachable or does not answer within WAIT_S."""

    def __init__(self, target: str | Path, cause: BaseException):
        reason = str(getattr(cause, "orig", None) or cause).strip().splitlines()[0][:200]
        super().__init__(f"the annotation database {describe(target)} is unavailable: {reason}")


def is_url(target: str | Path) -> bool:
    return isinstance(target, str) and "://" in target


def sqlalchemy_url(target: str | Path) -> str:
    """A store target (a SQLite file path, ":memory:", or a database URL) as a SQLAlchemy
    URL. `postgresql://` and `postgres://` (libpq's spellings) mean psycopg 3: SQLAlchemy's
    own default driver for them is psycopg2, which is not installed."""
    if not is_url(target):
        return "sqlite://" if str(target) == ":memory:" else f"sqlite:///{Path(target)}"
    url = str(target)
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme) :]
    return url


def describe(target: str | Path) -> str:
    """The target as it may be logged and shown: a path, or the URL without its password."""
    if not is_url(target):
        return str(target)
    return make_url(sqlalchemy_url(target)).render_as_string(hide_password=True)


class Database:
    """One store's engine: `write()` and `read()` hand out a connection inside a transaction
    (committed when the block ends, rolled back on an exception)."""

    def __init__(self, target: str | Path):
        self.target = target
        url = make_url(sqlalchemy_url(target))
        self.dialect = url.get_backend_name()  # "sqlite" or "postgresql"
        if self.dialect == "sqlite":
            self.path: Path | None = None
            if url.database and url.database != ":memory:":
                self.path = Path(url.database)
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self.engine = _sqlite_engine(url)
            # one connection (StaticPool) shared by the store's threads, one at a time
            self._lock: contextlib.AbstractContextManager[Any] = threading.Lock()
        elif self.dialect == "postgresql":
            self.path = None
            self.engine = _postgres_engine(url)
            self._lock = contextlib.nullcontext()
        else:
            raise ValueError(
                f"unsupported database {describe(target)!r}: use a postgresql:// URL "
                "or a SQLite file"
            )
        self.on_back: Callable[[], None] | None = None
        self._away = False  # the last operation failed as unavailable

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        with self._unavailable_as_such(), self._lock, self.engine.connect() as conn:
            conn.execution_options(**{WRITE: True})
            with conn.begin():
                yield conn

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        with self._unavailable_as_such(), self._lock, self.engine.connect() as conn, conn.begin():
            yield conn

    def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers now."""
        with self.read() as conn:
            conn.exec_driver_sql("SELECT 1")

    @contextlib.contextmanager
    def _unavailable_as_such(self) -> Iterator[None]:
        try:
            yield
        except UNAVAILABLE as err:
            self._away = True
            raise StoreUnavailable(self.target, err) from err
        if self._away:  # answered again: a plain read of a flag in the common case
            self._away = False
            if self.on_back is not None:
                self.on_back()

    def durability(self) -> dict[str, str]:
        """The settings each commit's durability rests on, as the database reports them."""
        with self.read() as conn:
            if self.dialect == "sqlite":
                names = ("journal_mode", "synchronous")
                return {n: str(conn.exec_driver_sql(f"PRAGMA {n}").scalar()) for n in names}
            names = ("synchronous_commit", "fsync")
            return {n: str(conn.exec_driver_sql(f"SHOW {n}").scalar()) for n in names}

    def close(self) -> None:
        with self._lock:
            self.engine.dispose()


def _sqlite_engine(url: Any) -> Engine:
    engine = create_engine(
        url,
        poolclass=StaticPool,
        # isolation_level=None: the sqlite3 module emits no BEGIN of its own; the "begin"
        # hook below does (SQLAlchemy's documented recipe for pysqlite transactions)
        connect_args={"timeout": 10.0, "check_same_thread": False, "isolation_level": None},
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # Switching a new file to WAL can answer "database is locked" at once, without the
        # busy timeout, while another connection opens it (seen with 6 first opens at
        # once): the switch is retried for the same 10 s a lock is waited for.
        for attempt in range(200):
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or attempt == 199:
                    raise
                time.sleep(0.05)
        cursor.execute("PRAGMA synchronous=FULL")  # fsync the WAL at every commit
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _postgres_engine(url: Any) -> Engine:
    # psycopg is imported only where PostgreSQL is used (0.1-0.6 s here: not on SQLite)
    from labeling.storage.deadline import bound_answers

    engine = create_engine(
        url,
        pool_size=4,
        max_overflow=8,
        pool_pre_ping=True,  # a server restart costs one retried checkout, not an error
        pool_timeout=WAIT_S,  # every pooled connection busy (stuck on a stalled server)
        connect_args={
            "options": (
                "-c synchronous_commit=on "
                f"-c lock_timeout={WAIT_S * 1000} -c statement_timeout={WAIT_S * 1000}"
            ),
            "connect_timeout": WAIT_S,
            "application_name": "skillloop",
            # a server that stops answering (host gone, network cut) is noticed by the
            # kernel within about WAIT_S instead of TCP's minutes
            "keepalives": 1,
            "keepalives_idle": WAIT_S,
            "keepalives_interval": 1,
            "keepalives_count": 3,
            "tcp_user_timeout": WAIT_S * 1000,
        },
    )
    bound_answers(engine, ANSWER_S)  # ... and one that is frozen, within ANSWER_S
    return engine
