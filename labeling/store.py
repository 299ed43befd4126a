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
import logging
import math
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

from labeling.studio.config import LabelingConfig
from labeling.studio.tasks import (
    lone_surrogates,
    read_annotation_regions,
    regions_to_spans,
    relabel,
    replace_surrogates,
    task_text,
)
from training.text import Document, Span

log = logging.getLogger(__name__)

COUNTER_SQL = "SELECT value FROM counters WHERE name = 'changes'"
SINGLE_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")

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


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def spans_to_json(spans: Iterable[Span]) -> list[dict]:
    return [{"start": s.start, "end": s.end, "label": s.label, "text": s.text} for s in spans]


def spans_from_json(rows: Iterable[Mapping]) -> list[Span]:
    return [Span(int(r["start"]), int(r["end"]), str(r["label"]), r.get("text", "")) for r in rows]


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
        ids = sorted({_int(i, "annotation id") for i in annotation_ids})
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
                "INSERT INTO inbox (received_at, body) VALUES (?, ?)", (_now(), body)
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
        "created_at": record.created_at or _now(),
        "updated_at": record.updated_at or record.created_at or _now(),
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


# ---------------------------------------------------------------------- webhooks


MAX_ID = 2**63 - 1  # SQLite's INTEGER


def _int(value, what: str) -> int:
    """An id as Label Studio sends it: a non-negative integer that fits SQLite's INTEGER
    (an all-digits string is read as one)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, got {_short(value)}")
    if not 0 <= value <= MAX_ID:
        raise ValueError(f"{what} must be between 0 and 2**63-1, got {_short(value)}")
    return value


def _short(value) -> str:
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else "a huge integer"
    return text if len(text) <= 60 else text[:57] + "..."


def _text(value) -> str:
    """A string field for the store (lone surrogates replaced: SQLite takes UTF-8 only)."""
    return replace_surrogates(value if isinstance(value, str) else str(value))


def _object(value, what: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _annotator(annotation: Mapping) -> str | None:
    """Who annotated: the e-mail where Label Studio sends one. Its webhooks carry
    `completed_by` as the user id and `created_username` as "<e-mail>, <id>"; an expanded
    `completed_by` object gives email, then username, then id."""
    completed_by = annotation.get("completed_by")
    if isinstance(completed_by, Mapping):
        for key in ("email", "username", "id"):
            if completed_by.get(key) not in (None, ""):
                return _text(completed_by[key])
        return None
    created = annotation.get("created_username")
    if isinstance(created, str) and "@" in created:
        email = created.rsplit(",", 1)[0].strip()
        if email:
            return _text(email)
    return None if completed_by is None else _text(completed_by)


def _project_id(payload: Mapping, annotation: Mapping) -> str:
    project = payload.get("project", annotation.get("project"))
    if isinstance(project, Mapping):
        project = project.get("id")
    return "" if project is None else str(project)


def record_from_annotation(
    annotation: Mapping,
    task: Mapping,
    config: LabelingConfig,
    project: str = "",
    label_names: Mapping[str, str] | None = None,
) -> AnnotationRecord:
    """A record from one Label Studio annotation object and the task it belongs to.

    `config` is the config the annotation was made with and `label_names` maps its label
    values to the project's (None: the same). Every region is checked
    (tasks.read_annotation_regions): a malformed one raises ValueError naming it. A lone
    surrogate in the text is replaced by U+FFFD (offsets unchanged) and the repair noted in
    `raw["repairs"]`; the raw payload keeps the original.
    """
    annotation = _object(annotation, "annotation")
    task = _object(task, "task")
    annotation_id = _int(annotation.get("id"), "annotation.id")
    task_id = _int(task.get("id", annotation.get("task")), "task.id")
    owner = annotation.get("task")
    if owner is not None and _int(owner, "annotation.task") != task_id:
        raise ValueError(f"annotation {annotation_id} is of task {owner}, not of task {task_id}")
    original = task_text(task, config)
    text = replace_surrogates(original)
    repairs = []
    if text is not original:
        count = lone_surrogates(original)
        repairs.append(f"text: {count} lone surrogate(s) replaced by U+FFFD")
        log.warning("annotation %d: %s", annotation_id, repairs[-1])
    try:
        spans = read_annotation_regions(annotation.get("result"), config, text, label_names)
    except ValueError as err:
        raise ValueError(f"annotation {annotation_id}: {err}") from None
    prediction = annotation.get("prediction")
    prediction_spans: list[Span] = []
    model_version = None
    if isinstance(prediction, Mapping) and prediction:
        model_version = prediction.get("model_version")
        try:
            result = prediction.get("result") or []
            prediction_spans = relabel(regions_to_spans(result, config, text), label_names or {})
        except (ValueError, TypeError, AttributeError):
            prediction_spans = []  # a stale prediction on edited text is not worth a 4xx
    meta = task.get("meta") if isinstance(task.get("meta"), Mapping) else {}
    data = task.get("data") if isinstance(task.get("data"), Mapping) else {}
    selected_by = meta.get("selected_by") or data.get("selected_by")
    created = annotation.get("created_at")
    raw: dict = {"annotation": dict(annotation), "task": dict(task)}
    if repairs:
        raw["repairs"] = repairs
    return AnnotationRecord(
        annotation_id=annotation_id,
        task_id=task_id,
        project=_text(project),
        text=text,
        spans=spans,
        annotator=_annotator(annotation),
        created_at=_text(created) if created else _now(),
        updated_at=_text(annotation.get("updated_at") or created or _now()),
        lead_time=_seconds(annotation.get("lead_time")),
        cancelled=bool(annotation.get("was_cancelled")),
        ground_truth=bool(annotation.get("ground_truth")),
        prediction_model_version=None if model_version is None else _text(model_version),
        prediction_spans=prediction_spans,
        selected_by=None if selected_by is None else _text(selected_by),
        raw=raw,
    )


def _seconds(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = float(value)
    except OverflowError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def record_from_webhook(
    payload: Mapping, config: LabelingConfig, label_names: Mapping[str, str] | None = None
) -> AnnotationRecord:
    """The record an ANNOTATION_CREATED / ANNOTATION_UPDATED webhook describes
    (`{action, annotation, task, project}`); ValueError naming what is malformed."""
    payload = _object(payload, "the webhook body")
    action = payload.get("action")
    if action not in SINGLE_ACTIONS:
        raise ValueError(f"expected action {' or '.join(SINGLE_ACTIONS)}, got {_short(action)}")
    annotation = _object(payload.get("annotation"), f"{action} 'annotation'")
    task = _object(payload.get("task"), f"{action} 'task'")
    project = _project_id(payload, annotation)
    return record_from_annotation(annotation, task, config, project, label_names)


def records_from_webhook(
    payload: Mapping, config: LabelingConfig, label_names: Mapping[str, str] | None = None
) -> list[AnnotationRecord]:
    """Records of ANNOTATION_CREATED/UPDATED and of the bulk ANNOTATIONS_CREATED (whose
    `annotation` and `task` are lists). All or nothing: any bad item raises ValueError
    naming it (`item 2 of 3: ...`), and the caller stores none."""
    payload = _object(payload, "the webhook body")
    if payload.get("action") != "ANNOTATIONS_CREATED":
        return [record_from_webhook(payload, config, label_names)]
    annotations, tasks = payload.get("annotation"), payload.get("task")
    if not isinstance(annotations, list) or not isinstance(tasks, list):
        raise ValueError("ANNOTATIONS_CREATED needs 'annotation' and 'task' lists")
    by_id = {}
    for index, task in enumerate(tasks):
        try:
            by_id[_int(_object(task, "task").get("id"), "task.id")] = task
        except ValueError as err:
            raise ValueError(f"task {index + 1} of {len(tasks)}: {err}") from None
    records = []
    for index, annotation in enumerate(annotations):
        try:
            annotation = _object(annotation, "annotation")
            task_id = _int(annotation.get("task"), "annotation.task")
            if task_id not in by_id:
                who = _short(annotation.get("id"))
                raise ValueError(f"annotation {who}: task {task_id} not sent")
            project = _project_id(payload, annotation)
            record = record_from_annotation(
                annotation, by_id[task_id], config, project, label_names
            )
        except ValueError as err:
            raise ValueError(f"item {index + 1} of {len(annotations)}: {err}") from None
        records.append(record)
    return records


def deleted_ids_from_webhook(payload: Mapping) -> list[int]:
    """Annotation ids of an ANNOTATIONS_DELETED webhook (`{annotations: [{id}], ...}`)."""
    payload = _object(payload, "the webhook body")
    items = payload.get("annotations")
    if not isinstance(items, list):
        raise ValueError("ANNOTATIONS_DELETED needs an 'annotations' list")
    return [_int(_object(item, "annotation").get("id"), "annotation.id") for item in items]
