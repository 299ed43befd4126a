"""The annotation store: every correction Label Studio sends, kept durably.

One project's rows of the `annotations` table and its change counter, in the database a
`labeling.store.Store` opened (a SQLite file or PostgreSQL: labeling/storage/engine.py). A
write is committed, and its log flushed to disk, when `upsert` returns, so once the
webhook has answered, a `kill -9` of the service (or a power cut) loses nothing. An upsert
is one small transaction, a few milliseconds (docs/rounds.md), far under Label Studio's
1 s webhook timeout.

Semantics: an annotation id is one row of its project. An update replaces the row; a
deletion sets a tombstone (the row stays for audit, and a late replay of the same
annotation does not bring it back); skipped/cancelled annotations are stored but never
training data. Every real change bumps the project's counter, which drives automatic
retraining. Each write transaction first locks that counter row, so a project's writers
take turns (on SQLite, `BEGIN IMMEDIATE` does that for the whole file).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import Connection, bindparam, func, insert, select, update

from labeling.storage.engine import Database
from labeling.storage.records import (
    COLUMNS,
    AnnotationRecord,
    check_id,
    documents_sha256,
    fill_times,
    from_row,
    rank,
    same,
    to_row,
)
from labeling.storage.schema import annotation_table, counter_table
from training.text import Document

CHANGES = "changes"  # the counter's name
CHUNK = 500  # ids per IN (...): under SQLite's bound on parameters per statement


class AnnotationStore:
    """One project's annotation records (`key`, its partition) in an opened database, safe
    to share between threads and between processes. Opened through `labeling.store.Store`,
    which also creates the change counter; closing is the Store's."""

    def __init__(self, db: Database, key: str):
        self.db = db
        self.key = key

    # ------------------------------------------------------------------ writes

    def upsert(self, record: AnnotationRecord) -> bool:
        """Insert or replace one annotation; committed (and flushed) before returning.

        Returns whether anything changed (a replayed identical webhook changes nothing).
        An annotation already deleted stays deleted.
        """
        return self.upsert_many([record]) == 1

    def upsert_many(self, records: Sequence[AnnotationRecord]) -> int:
        """`upsert` for many records in ONE transaction (one flush): all are stored or,
        should any write fail, none. Returns how many changed something."""
        rows = [to_row(record) for record in records]
        with self.db.write() as conn:
            return self.write_rows_in(conn, rows)

    def tombstone(self, annotation_ids: Iterable[int]) -> int:
        """Mark annotations deleted; returns how many were live before. Unknown ids are
        ignored (nothing of them was stored, so nothing is trained on)."""
        ids = sorted({check_id(i, "annotation id") for i in annotation_ids})
        if not ids:
            return 0
        with self.db.write() as conn:
            return self.tombstone_in(conn, ids)

    def tombstone_tasks(self, task_ids: Iterable[int]) -> list[int]:
        """Mark deleted every live annotation of these tasks (Label Studio deleted the
        tasks: TASKS_DELETED) in one transaction; the annotation ids it marked. Unknown
        tasks, and tasks whose annotations are all deleted already, change nothing."""
        ids = sorted({check_id(i, "task id") for i in task_ids})
        if not ids:
            return []
        with self.db.write() as conn:
            live = self.live_of_tasks_in(conn, ids)
            if live:
                self.tombstone_in(conn, live)
            return live

    def catch_up(
        self,
        records: Sequence[AnnotationRecord],
        deleted: Iterable[int],
        deleted_with_tasks: Iterable[int] = (),
    ) -> tuple[int, int, int]:
        """`upsert_many` and `tombstone` in ONE transaction (what a catch-up with Label
        Studio found: backend/service/catch_up.py): all or nothing. `deleted`: annotations
        Label Studio no longer holds, `deleted_with_tasks`: annotations of tasks it no
        longer holds. Returns (changed, deleted, of them deleted with their tasks)."""
        rows = [to_row(record) for record in records]
        ids = sorted({check_id(i, "annotation id") for i in deleted})
        of_tasks = sorted({check_id(i, "annotation id") for i in deleted_with_tasks} - set(ids))
        if not rows and not ids and not of_tasks:
            return 0, 0, 0
        with self.db.write() as conn:
            changed = self.write_rows_in(conn, rows) if rows else 0
            gone = self.tombstone_in(conn, ids) if ids else 0
            with_tasks = self.tombstone_in(conn, of_tasks) if of_tasks else 0
            return changed, gone + with_tasks, with_tasks

    # ------------------------------------------------------------------ reads

    def records(
        self, include_deleted: bool = False, include_cancelled: bool = False
    ) -> list[AnnotationRecord]:
        query = select(annotation_table).where(annotation_table.c.project_key == self.key)
        if not include_deleted:
            query = query.where(annotation_table.c.deleted.is_(False))
        if not include_cancelled:
            query = query.where(annotation_table.c.cancelled.is_(False))
        with self.db.read() as conn:
            rows = conn.execute(query.order_by(annotation_table.c.annotation_id)).mappings().all()
        return [from_row(row) for row in rows]

    def get(self, annotation_id: int) -> AnnotationRecord | None:
        query = select(annotation_table).where(
            annotation_table.c.project_key == self.key,
            annotation_table.c.annotation_id == annotation_id,
        )
        with self.db.read() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else from_row(row)

    def live_of_tasks(self, task_ids: Iterable[int]) -> list[int]:
        """The live annotation ids of these tasks, sorted."""
        ids = sorted({check_id(i, "task id") for i in task_ids})
        if not ids:
            return []
        with self.db.read() as conn:
            return self.live_of_tasks_in(conn, ids)

    def training_documents(self) -> list[Document]:
        """One document per task: its ground-truth annotation if any, else its latest
        (by updated_at, then id) non-cancelled, non-deleted one."""
        best: dict[int, AnnotationRecord] = {}
        for record in self.records():
            current = best.get(record.task_id)
            if current is None or rank(record) > rank(current):
                best[record.task_id] = record
        return [best[task].document() for task in sorted(best)]

    def snapshot(self) -> tuple[list[int], str]:
        """The annotation ids training would use now, and the sha256 of their contents."""
        docs = self.training_documents()
        return sorted(d.meta["annotation_id"] for d in docs), documents_sha256(docs)

    def change_counter(self) -> int:
        """Bumped by every stored change (insert, real update, deletion)."""
        with self.db.read() as conn:
            return int(conn.execute(_COUNTER, {"b_key": self.key}).scalar_one())

    def changes_since(self, counter: int) -> int:
        """How many annotations changed after `change_counter()` returned `counter`."""
        query = (
            select(func.count())
            .select_from(annotation_table)
            .where(annotation_table.c.project_key == self.key, annotation_table.c.change > counter)
        )
        with self.db.read() as conn:
            return int(conn.execute(query).scalar_one())

    # ------------------------------------------------------------------ inside a write
    # (a transaction of `self.db.write()`: the webhook inbox stores a queued body's records
    # and marks its row read in one, labeling/storage/webhook_inbox.py)

    def write_rows_in(self, conn: Connection, rows: list[dict], keep_newer: bool = False) -> int:
        """Write the rows (`records.to_row`) that change something, in order (a later row of
        the same id wins, as if written one after the other); each change takes the next
        counter value. `keep_newer`: a row older than what is stored for its id is left out."""
        counter = int(conn.execute(_COUNTER_LOCKED, {"b_key": self.key}).scalar_one())
        stored = self._existing(conn, [row["annotation_id"] for row in rows])
        fresh = {i for i in {row["annotation_id"] for row in rows} if i not in stored}
        latest: dict[int, dict] = {}
        changes = 0
        for row in rows:
            old = stored.get(row["annotation_id"])
            fill_times(row, old)
            if old is not None:
                row["deleted"] = bool(old["deleted"]) or row["deleted"]
                if same(old, row):
                    continue
                if keep_newer and old["updated_at"] > row["updated_at"]:
                    continue  # a queued payload older than what a later webhook stored
            counter += 1
            changes += 1
            row["change"] = counter
            row["project_key"] = self.key
            stored[row["annotation_id"]] = latest[row["annotation_id"]] = row
        if not latest:
            return 0
        inserts = [row for i, row in latest.items() if i in fresh]
        updates = [row for i, row in latest.items() if i not in fresh]
        if inserts:
            conn.execute(insert(annotation_table), inserts)
        if updates:
            conn.execute(_UPDATE_ROW, [{f"b_{k}": v for k, v in row.items()} for row in updates])
        self._set_counter(conn, counter)
        return changes

    def tombstone_in(self, conn: Connection, ids: list[int]) -> int:
        """`tombstone` inside the caller's write transaction; `ids` checked and sorted."""
        counter = int(conn.execute(_COUNTER_LOCKED, {"b_key": self.key}).scalar_one())
        live: list[int] = []
        for first in range(0, len(ids), CHUNK):
            chunk = {"b_key": self.key, "b_ids": ids[first : first + CHUNK]}
            live += [int(i) for i in conn.execute(_LIVE, chunk).scalars()]
        if live:
            changes = [
                {"b_key": self.key, "b_id": i, "b_change": counter + n}
                for n, i in enumerate(live, 1)
            ]
            conn.execute(_TOMBSTONE, changes)
            self._set_counter(conn, counter + len(live))
        return len(live)

    def live_of_tasks_in(self, conn: Connection, task_ids: list[int]) -> list[int]:
        """The live annotation ids of these tasks (`task_ids` checked), sorted."""
        found: list[int] = []
        for first in range(0, len(task_ids), CHUNK):
            chunk = {"b_key": self.key, "b_ids": task_ids[first : first + CHUNK]}
            found += [int(i) for i in conn.execute(_LIVE_OF_TASKS, chunk).scalars()]
        return sorted(found)

    def _existing(self, conn: Connection, ids: list[int]) -> dict[int, dict]:
        unique = sorted(set(ids))
        found: dict[int, dict] = {}
        for first in range(0, len(unique), CHUNK):
            chunk = {"b_key": self.key, "b_ids": unique[first : first + CHUNK]}
            for row in conn.execute(_EXISTING, chunk).mappings():
                found[int(row["annotation_id"])] = dict(row)
        return found

    def _set_counter(self, conn: Connection, value: int) -> None:
        conn.execute(_SET_COUNTER, {"b_key": self.key, "b_value": value})


# The statements of a write, built once (building one costs more than running it on
# SQLite); b_key is the store's project key.
_KEY = ("project_key", "annotation_id")
_COUNTER = select(counter_table.c.value).where(
    counter_table.c.project_key == bindparam("b_key"), counter_table.c.name == CHANGES
)
_COUNTER_LOCKED = _COUNTER.with_for_update()  # FOR UPDATE: SQLite leaves it out
_SET_COUNTER = (
    update(counter_table)
    .where(counter_table.c.project_key == bindparam("b_key"), counter_table.c.name == CHANGES)
    .values(value=bindparam("b_value"))
)
_EXISTING = select(*[annotation_table.c[name] for name in COLUMNS]).where(
    annotation_table.c.project_key == bindparam("b_key"),
    annotation_table.c.annotation_id.in_(bindparam("b_ids", expanding=True)),
)
_LIVE = select(annotation_table.c.annotation_id).where(
    annotation_table.c.project_key == bindparam("b_key"),
    annotation_table.c.deleted.is_(False),
    annotation_table.c.annotation_id.in_(bindparam("b_ids", expanding=True)),
)
_LIVE_OF_TASKS = select(annotation_table.c.annotation_id).where(
    annotation_table.c.project_key == bindparam("b_key"),
    annotation_table.c.deleted.is_(False),
    annotation_table.c.task_id.in_(bindparam("b_ids", expanding=True)),
)
_TOMBSTONE = (
    update(annotation_table)
    .where(
        annotation_table.c.project_key == bindparam("b_key"),
        annotation_table.c.annotation_id == bindparam("b_id"),
    )
    .values(deleted=True, change=bindparam("b_change"))
)
_UPDATE_ROW = (
    update(annotation_table)
    .where(
        annotation_table.c.project_key == bindparam("b_project_key"),
        annotation_table.c.annotation_id == bindparam("b_annotation_id"),
    )
    .values(
        {c.name: bindparam(f"b_{c.name}") for c in annotation_table.columns if c.name not in _KEY}
    )
)
