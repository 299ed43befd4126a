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

from labeling.studio.config import LabelingConfig
from labeling.studio.tasks import regions_to_spans, task_text
from training.text import Document, Span

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
        row = _to_row(record)
        with self._lock, self._transaction():
            old = self._db.execute(
                f"SELECT {', '.join(COLUMNS)} FROM annotations WHERE annotation_id = ?",
                (record.annotation_id,),
            ).fetchone()
            if old is not None:
                row["deleted"] = int(bool(old[COLUMNS.index("deleted")]) or row["deleted"])
                if _same(old, row):
                    return False
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
            live = [
                r[0]
                for r in self._db.execute(
                    f"SELECT annotation_id FROM annotations WHERE deleted = 0 AND "
                    f"annotation_id IN ({', '.join('?' * len(ids))})",
                    ids,
                )
            ]
            for annotation_id in live:
                self._db.execute(
                    "UPDATE annotations SET deleted = 1, change = ? WHERE annotation_id = ?",
                    (self._bump(), annotation_id),
                )
            return len(live)

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
        "raw": json.dumps(record.raw, ensure_ascii=False, default=str),
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


def _int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        raise ValueError(f"{what} must be an integer, got {value!r}")
    return value


def _object(value, what: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _annotator(completed_by) -> str | None:
    if completed_by is None:
        return None
    if isinstance(completed_by, Mapping):
        for key in ("email", "username", "id"):
            if completed_by.get(key) not in (None, ""):
                return str(completed_by[key])
        return None
    return str(completed_by)


def _project_id(payload: Mapping, annotation: Mapping) -> str:
    project = payload.get("project", annotation.get("project"))
    if isinstance(project, Mapping):
        project = project.get("id")
    return "" if project is None else str(project)


def record_from_annotation(
    annotation: Mapping, task: Mapping, config: LabelingConfig, project: str = ""
) -> AnnotationRecord:
    """A record from one Label Studio annotation object and the task it belongs to."""
    annotation = _object(annotation, "annotation")
    task = _object(task, "task")
    annotation_id = _int(annotation.get("id"), "annotation.id")
    task_id = _int(task.get("id", annotation.get("task")), "task.id")
    owner = annotation.get("task")
    if owner is not None and _int(owner, "annotation.task") != task_id:
        raise ValueError(f"annotation {annotation_id} is of task {owner}, not of task {task_id}")
    text = task_text(task, config)
    result = annotation.get("result")
    if result is None:
        result = []
    if not isinstance(result, list):
        raise ValueError(f"annotation {annotation_id}: result must be a list")
    spans = regions_to_spans(result, config, text)
    prediction = annotation.get("prediction")
    prediction_spans: list[Span] = []
    model_version = None
    if isinstance(prediction, Mapping) and prediction:
        model_version = prediction.get("model_version")
        try:
            prediction_spans = regions_to_spans(prediction.get("result") or [], config, text)
        except ValueError:
            prediction_spans = []  # a stale prediction on edited text is not worth a 4xx
    lead_time = annotation.get("lead_time")
    meta = task.get("meta") if isinstance(task.get("meta"), Mapping) else {}
    data = task.get("data") if isinstance(task.get("data"), Mapping) else {}
    selected_by = meta.get("selected_by") or data.get("selected_by")
    created = annotation.get("created_at")
    return AnnotationRecord(
        annotation_id=annotation_id,
        task_id=task_id,
        project=project,
        text=text,
        spans=spans,
        annotator=_annotator(annotation.get("completed_by")),
        created_at=str(created) if created else _now(),
        updated_at=str(annotation.get("updated_at") or created or _now()),
        lead_time=float(lead_time) if isinstance(lead_time, int | float) else None,
        cancelled=bool(annotation.get("was_cancelled")),
        ground_truth=bool(annotation.get("ground_truth")),
        prediction_model_version=None if model_version is None else str(model_version),
        prediction_spans=prediction_spans,
        selected_by=None if selected_by is None else str(selected_by),
        raw={"annotation": dict(annotation), "task": dict(task)},
    )


def record_from_webhook(payload: Mapping, config: LabelingConfig) -> AnnotationRecord:
    """The record an ANNOTATION_CREATED / ANNOTATION_UPDATED webhook describes
    (`{action, annotation, task, project}`); ValueError naming what is malformed."""
    payload = _object(payload, "the webhook body")
    action = payload.get("action")
    if action not in SINGLE_ACTIONS:
        raise ValueError(f"expected action {' or '.join(SINGLE_ACTIONS)}, got {action!r}")
    annotation = _object(payload.get("annotation"), f"{action} 'annotation'")
    task = _object(payload.get("task"), f"{action} 'task'")
    return record_from_annotation(annotation, task, config, _project_id(payload, annotation))


def records_from_webhook(payload: Mapping, config: LabelingConfig) -> list[AnnotationRecord]:
    """Records of ANNOTATION_CREATED/UPDATED and of the bulk ANNOTATIONS_CREATED (whose
    `annotation` and `task` are lists)."""
    payload = _object(payload, "the webhook body")
    if payload.get("action") != "ANNOTATIONS_CREATED":
        return [record_from_webhook(payload, config)]
    annotations, tasks = payload.get("annotation"), payload.get("task")
    if not isinstance(annotations, list) or not isinstance(tasks, list):
        raise ValueError("ANNOTATIONS_CREATED needs 'annotation' and 'task' lists")
    by_id = {_int(_object(t, "task").get("id"), "task.id"): t for t in tasks}
    records = []
    for annotation in annotations:
        annotation = _object(annotation, "annotation")
        task_id = _int(annotation.get("task"), "annotation.task")
        if task_id not in by_id:
            raise ValueError(f"annotation {annotation.get('id')}: task {task_id} not sent")
        project = _project_id(payload, annotation)
        records.append(record_from_annotation(annotation, by_id[task_id], config, project))
    return records


def deleted_ids_from_webhook(payload: Mapping) -> list[int]:
    """Annotation ids of an ANNOTATIONS_DELETED webhook (`{annotations: [{id}], ...}`)."""
    payload = _object(payload, "the webhook body")
    items = payload.get("annotations")
    if not isinstance(items, list):
        raise ValueError("ANNOTATIONS_DELETED needs an 'annotations' list")
    return [_int(_object(item, "annotation").get("id"), "annotation.id") for item in items]
