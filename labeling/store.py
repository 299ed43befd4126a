"""The local annotation store: every correction Label Studio sends, kept durably.

SQLite in WAL mode with `synchronous=FULL`: a write is in the log and fsynced when
`upsert` returns, so once the webhook has answered, a `kill -9` (or a power cut) loses
nothing. An upsert is one small transaction, a few milliseconds (docs/rounds.md), far
under Label Studio's 1 s webhook timeout.

Semantics: an annotation id is one row. An update replaces the row; a deletion sets a
tombstone (the row stays for audit, and a late replay of the same annotation does not
bring it back); skipped/cancelled annotations are stored but never training data. Every
real change bumps a counter, which drives automatic retraining.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

from labeling.studio.tasks import replace_surrogates
from training.text import Document, Span, span_from_json, span_to_json

COUNTER_SQL = "SELECT value FROM counters WHERE name = 'changes'"

SCHEMA = """
CREATE TABLE IF NOT EXISTS annotations (
    annotation_id INTEGER PRIMARY KEY,
    task_id INTEGER NOT NULL,
    project TEXT NOT NULL,
    text TEXT NOT NULL,
    spans TEXT NOT NULL,
    annotator TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    lead_time REAL,
    cancelled INTEGER NOT NULL,
    ground_truth INTEGER NOT NULL,
    prediction_model_version TEXT,
    prediction_spans TEXT NOT NULL,
    selected_by TEXT,
    deleted INTEGER NOT NULL DEFAULT 0,
    raw TEXT NOT NULL,
    change INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS annotations_task ON annotations(task_id);
CREATE INDEX IF NOT EXISTS annotations_change ON annotations(change);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counters VALUES ('changes', 0);
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,
    body BLOB NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    error TEXT,
    stored INTEGER
);
CREATE INDEX IF NOT EXISTS inbox_state ON inbox(state);
"""
COLUMNS = (
    "annotation_id",
    "task_id",
    "project",
    "text",
    "spans",
    "annotator",
    "created_at",
    "updated_at",
    "lead_time",
    "cancelled",
    "ground_truth",
    "prediction_model_version",
    "prediction_spans",
    "selected_by",
    "deleted",
    "raw",
)


@dataclass(slots=True)
class AnnotationRecord:
    annotation_id: int
    task_id: int
    project: str  # Label Studio project id as a string, "" if unknown
    text: str
    spans: list[Span]
    annotator: str | None = None
    created_at: str = ""
    updated_at: str = ""
    lead_time: float | None = None
    cancelled: bool = False  # skipped / was_cancelled: never training data
    ground_truth: bool = False
    prediction_model_version: str | None = None
    prediction_spans: list[Span] = field(default_factory=list)  # what the annotator started from
    selected_by: str | None = None  # the query strategy that served the task, when known
    deleted: bool = False
    raw: dict = field(default_factory=dict)

    def document(self) -> Document:
        meta = {
            "annotation_id": self.annotation_id,
            "annotator": self.annotator,
            "updated_at": self.updated_at,
        }
        return Document(self.text, list(self.spans), id=str(self.task_id), meta=meta)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def spans_to_json(spans: Iterable[Span]) -> list[dict]:
    """Spans as the store keeps them (link fields ride along when set: training.text)."""
    return [span_to_json(s) for s in spans]


def spans_from_json(rows: Iterable[Mapping]) -> list[Span]:
    return [span_from_json(r) for r in rows]


def documents_sha256(docs: Sequence[Document]) -> str:
    """A content hash of labelled documents: ids, texts and span keys, order-independent."""
    rows = sorted(
        json.dumps([d.id, d.text, sorted(s.key() for s in d.spans)], ensure_ascii=False)
        for d in docs
    )
    digest = hashlib.sha256()
    for row in rows:
        digest.update(row.encode("utf-8") + b"\n")
    return digest.hexdigest()


class AnnotationStore:
    """A SQLite file of annotation records, safe to share between threads (one lock) and
    between processes (SQLite's own locking; WAL lets readers run beside the writer)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, timeout=10.0, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # fsync the WAL at every commit
        self._db.execute("PRAGMA busy_timeout=10000")
        with self._lock:
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> AnnotationStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ writes

    def upsert(self, record: AnnotationRecord) -> bool:
        """Insert or replace one annotation; committed and fsynced before returning.

        Returns whether anything changed (a replayed identical webhook changes nothing).
        An annotation already deleted stays deleted.
        """
        return self.upsert_many([record]) == 1

    def upsert_many(self, records: Sequence[AnnotationRecord]) -> int:
        """`upsert` for many records in ONE transaction (one fsync): all are stored or,
        should any write fail, none. Returns how many changed something."""
        rows = [_to_row(record) for record in records]
        with self._lock, self._transaction():
            return sum(self._upsert_row(row) for row in rows)

    def _upsert_row(self, row: dict, keep_newer: bool = False) -> bool:
        old = self._db.execute(
            f"SELECT {', '.join(COLUMNS)} FROM annotations WHERE annotation_id = ?",
            (row["annotation_id"],),
        ).fetchone()
        if old is not None:
            row["deleted"] = int(bool(old[COLUMNS.index("deleted")]) or row["deleted"])
            if _same(old, row):
                return False
            if keep_newer and old[COLUMNS.index("updated_at")] > row["updated_at"]:
                return False  # a queued payload older than what a later webhook stored
        row["change"] = self._bump()
        names = list(row)
        self._db.execute(
            f"INSERT OR REPLACE INTO annotations ({', '.join(names)}) "
            f"VALUES ({', '.join('?' * len(names))})",
            [row[n] for n in names],
        )
        return True

    def tombstone(self, annotation_ids: Iterable[int]) -> int:
        """Mark annotations deleted; returns how many were live before. Unknown ids are
        ignored (nothing of them was stored, so nothing is trained on)."""
        ids = sorted({check_id(i, "annotation id") for i in annotation_ids})
        if not ids:
            return 0
        with self._lock, self._transaction():
            return self._tombstone(ids)

    def _tombstone(self, ids: list[int]) -> int:
        live: list[int] = []
        for first in range(0, len(ids), 500):  # SQLite's bound on parameters per statement
            chunk = ids[first : first + 500]
            live += [
                r[0]
                for r in self._db.execute(
                    f"SELECT annotation_id FROM annotations WHERE deleted = 0 AND "
                    f"annotation_id IN ({', '.join('?' * len(chunk))})",
                    chunk,
                )
            ]
        for annotation_id in live:
            self._db.execute(
                "UPDATE annotations SET deleted = 1, change = ? WHERE annotation_id = ?",
                (self._bump(), annotation_id),
            )
        return len(live)

    # ------------------------------------------------------------------ the inbox
    # Webhooks too big to read inside Label Studio's 1 s are kept here as sent (one
    # fsynced write) and read afterwards by backend.inbox.Inbox; a row still "pending"
    # after a crash is read at the next start, so an acknowledged payload is never lost.

    def enqueue(self, body: bytes) -> int:
        """Keep a request body for later; committed and fsynced before returning its id."""
        with self._lock, self._transaction():
            cursor = self._db.execute(
                "INSERT INTO inbox (received_at, body) VALUES (?, ?)", (now(), body)
            )
            return int(cursor.lastrowid or 0)

    def pending(self) -> list[tuple[int, bytes]]:
        """Inbox rows not read yet, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, body FROM inbox WHERE state = 'pending' ORDER BY id"
            ).fetchall()
        return [(int(i), bytes(body)) for i, body in rows]

    def settle(
        self,
        inbox_id: int,
        records: Sequence[AnnotationRecord] = (),
        deleted: Sequence[int] = (),
        error: str | None = None,
    ) -> int:
        """Store an inbox row's records (or tombstone its `deleted` ids) and mark it read,
        in one transaction; with `error`, change nothing and mark it refused (its body kept
        for a look). Records older than what is stored for their id (a later webhook won
        the race) are left out. Returns how many annotations changed."""
        rows = [_to_row(record) for record in records] if error is None else []
        with self._lock, self._transaction():
            changed = sum(self._upsert_row(row, keep_newer=True) for row in rows)
            if error is None:
                changed += self._tombstone(sorted(set(deleted))) if deleted else 0
                self._db.execute(
                    "UPDATE inbox SET state = 'stored', stored = ?, body = x'' WHERE id = ?",
                    (changed, inbox_id),
                )
            else:
                self._db.execute(
                    "UPDATE inbox SET state = 'refused', error = ? WHERE id = ?",
                    (replace_surrogates(error)[:2000], inbox_id),
                )
        return changed

    def inbox(self) -> dict[str, int]:
        """Inbox rows by state: pending, stored, refused."""
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM inbox GROUP BY state").fetchall()
        return {"pending": 0, "stored": 0, "refused": 0, **{str(k): int(n) for k, n in rows}}

    def inbox_errors(self, limit: int = 5) -> list[dict]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, received_at, error FROM inbox WHERE state = 'refused' "
                "ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [{"id": i, "received_at": at, "error": e} for i, at, e in rows]

    # ------------------------------------------------------------------ reads

    def records(
        self, include_deleted: bool = False, include_cancelled: bool = False
    ) -> list[AnnotationRecord]:
        where = []
        if not include_deleted:
            where.append("deleted = 0")
        if not include_cancelled:
            where.append("cancelled = 0")
        sql = f"SELECT {', '.join(COLUMNS)} FROM annotations"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY annotation_id").fetchall()
        return [_from_row(row) for row in rows]

    def get(self, annotation_id: int) -> AnnotationRecord | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {', '.join(COLUMNS)} FROM annotations WHERE annotation_id = ?",
                (annotation_id,),
            ).fetchone()
        return None if row is None else _from_row(row)

    def training_documents(self) -> list[Document]:
        """One document per task: its ground-truth annotation if any, else its latest
        (by updated_at, then id) non-cancelled, non-deleted one."""
        best: dict[int, AnnotationRecord] = {}
        for record in self.records():
            current = best.get(record.task_id)
            if current is None or _rank(record) > _rank(current):
                best[record.task_id] = record
        return [best[task].document() for task in sorted(best)]

    def snapshot(self) -> tuple[list[int], str]:
        """The annotation ids training would use now, and the sha256 of their contents."""
        docs = self.training_documents()
        return sorted(d.meta["annotation_id"] for d in docs), documents_sha256(docs)

    def change_counter(self) -> int:
        """Bumped by every stored change (insert, real update, deletion)."""
        with self._lock:
            return self._counter()

    def changes_since(self, counter: int) -> int:
        """How many annotations changed after `change_counter()` returned `counter`."""
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM annotations WHERE change > ?", (counter,)
            ).fetchone()
        return int(row[0])

    # ------------------------------------------------------------------ helpers

    def _bump(self) -> int:
        self._db.execute("UPDATE counters SET value = value + 1 WHERE name = 'changes'")
        return self._counter()

    def _counter(self) -> int:
        return int(self._db.execute(COUNTER_SQL).fetchone()[0])

    def _transaction(self):
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (rolled back on error): one fsync per write."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, *exc) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def _rank(record: AnnotationRecord) -> tuple:
    return (record.ground_truth, record.updated_at, record.annotation_id)


def _to_row(record: AnnotationRecord) -> dict:
    return {
        "annotation_id": record.annotation_id,
        "task_id": record.task_id,
        "project": record.project,
        "text": record.text,
        "spans": json.dumps(spans_to_json(record.spans), ensure_ascii=False),
        "annotator": record.annotator,
        "created_at": record.created_at or now(),
        "updated_at": record.updated_at or record.created_at or now(),
        "lead_time": record.lead_time,
        "cancelled": int(record.cancelled),
        "ground_truth": int(record.ground_truth),
        "prediction_model_version": record.prediction_model_version,
        "prediction_spans": json.dumps(spans_to_json(record.prediction_spans), ensure_ascii=False),
        "selected_by": record.selected_by,
        "deleted": int(record.deleted),
        # ASCII-escaped: the raw payload keeps a lone surrogate exactly as it came (the text
        # columns hold it replaced), and SQLite would refuse it unescaped
        "raw": json.dumps(record.raw, ensure_ascii=True, default=str),
    }


def _same(old: tuple, new: dict) -> bool:
    # raw is bookkeeping (Label Studio re-serialises it on every send): not a change
    return all(old[i] == new[name] for i, name in enumerate(COLUMNS) if name != "raw")


def _from_row(row: tuple) -> AnnotationRecord:
    values = dict(zip(COLUMNS, row, strict=True))
    values["spans"] = spans_from_json(json.loads(values["spans"]))
    values["prediction_spans"] = spans_from_json(json.loads(values["prediction_spans"]))
    values["raw"] = json.loads(values["raw"])
    for flag in ("cancelled", "ground_truth", "deleted"):
        values[flag] = bool(values[flag])
    known = {f.name for f in fields(AnnotationRecord)}
    return AnnotationRecord(**{k: v for k, v in values.items() if k in known})


# ---------------------------------------------------------------------- ids


MAX_ID = 2**63 - 1  # SQLite's INTEGER


def check_id(value, what: str) -> int:
    """An id as Label Studio sends it: a non-negative integer that fits SQLite's INTEGER
    (an all-digits string is read as one)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, got {short_repr(value)}")
    if not 0 <= value <= MAX_ID:
        raise ValueError(f"{what} must be between 0 and 2**63-1, got {short_repr(value)}")
    return value


def short_repr(value) -> str:
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else "a huge integer"
    return text if len(text) <= 60 else text[:57] + "..."


def store_text(value) -> str:
    """A string field for the store (lone surrogates replaced: SQLite takes UTF-8 only)."""
    return replace_surrogates(value if isinstance(value, str) else str(value))
