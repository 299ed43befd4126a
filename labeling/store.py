"""A project's database: its annotations, its webhook inbox and its training requests.

A SQLite file in the project's state folder by default, or a PostgreSQL database shared by
several projects and processes (`ProjectState.database_url`, `ProjectState.store()`); one
schema for both (labeling/storage/schema.py, migrated when a store opens). A `Store` opens
the engine once (labeling/storage/engine.py: each commit waits for the disk) and hands out
three views of the project's rows:
- `annotations`: the annotation store (labeling/storage/annotations.py);
- `inbox`: big webhooks kept as sent, read after the answer
  (labeling/storage/webhook_inbox.py);
- `training_requests`: Start Training recorded for a training host
  (labeling/storage/training_requests.py).

`AnnotationRecord` and the id/text checks live in labeling/storage/records.py and are part
of this module's public API, hence imported here.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Connection, inspect, select

from labeling.storage.annotations import CHANGES, AnnotationStore
from labeling.storage.engine import Database, describe
from labeling.storage.records import (
    AnnotationRecord,
    check_id,
    documents_sha256,
    now,
    short_repr,
    store_text,
)
from labeling.storage.schema import counter_table, create_counter, migrate
from labeling.storage.training_requests import TrainingRequests
from labeling.storage.webhook_inbox import WebhookInbox

__all__ = [
    "AnnotationRecord",
    "AnnotationStore",
    "Store",
    "TrainingRequests",
    "WebhookInbox",
    "check_id",
    "documents_sha256",
    "now",
    "short_repr",
    "store_text",
]


class Store:
    """One project's rows in a SQLite file or a PostgreSQL database, safe to share between
    threads and between processes; opened (and migrated) once, closed once.

    `target` is a file path (or ":memory:") or a database URL; `key` is the project's
    partition. None: for a SQLite file, the one project it holds, else its folder's name
    (the state folder's, as `ProjectState.store()` names it); a shared database needs one.
    """

    def __init__(self, target: str | Path, key: str | None = None):
        self.target = target
        self.db = Database(target)
        self.path: Path | None = self.db.path
        try:
            with self.db.write() as conn:
                self.key = key if key is not None else self._default_key(conn)
                migrate(conn, self.key, now())
                conn.execute(create_counter(conn, self.key, CHANGES))
        except Exception:
            self.db.close()
            raise
        self.annotations = AnnotationStore(self.db, self.key)
        self.inbox = WebhookInbox(self.db, self.key, self.annotations)
        self.training_requests = TrainingRequests(self.db, self.key)

    @property
    def location(self) -> str:
        """Where the records are, as it may be shown (no password)."""
        return f"{describe(self.target)} (project {self.key!r})"

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def durability(self) -> dict[str, str]:
        """The database's own report of what each commit waits for (journal_mode and
        synchronous on SQLite; synchronous_commit and fsync on PostgreSQL)."""
        return self.db.durability()

    def _default_key(self, conn: Connection) -> str:
        if self.db.dialect != "sqlite":
            raise ValueError(f"a shared database ({describe(self.target)}) needs a project key")
        if "schema_migrations" in inspect(conn).get_table_names():
            keys = conn.execute(select(counter_table.c.project_key).distinct()).scalars().all()
            if len(keys) == 1:
                return str(keys[0])
            if len(keys) > 1:
                raise ValueError(f"{self.target} holds several projects {keys}: name one")
        return self.path.parent.name if self.path is not None else ""
