"""An annotation as the store keeps it (`AnnotationRecord`), its one conversion to and from
a database row, and the checks on what Label Studio sends that the store's types need
(ids that fit a 64-bit integer, text both databases can hold)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from labeling.studio.tasks import replace_surrogates
from training.text import Document, Span


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


# the stored columns of a record, in its field order (the row also has project_key, change)
COLUMNS = tuple(f.name for f in fields(AnnotationRecord))
TEXT_COLUMNS = (
    "project",
    "text",
    "annotator",
    "created_at",
    "updated_at",
    "prediction_model_version",
    "selected_by",
)


def now() -> str:
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


def rank(record: AnnotationRecord) -> tuple:
    """Which of a task's annotations trains: ground truth first, then the latest."""
    return (record.ground_truth, record.updated_at, record.annotation_id)


def to_row(record: AnnotationRecord) -> dict[str, Any]:
    row: dict[str, Any] = {
        "annotation_id": check_id(record.annotation_id, "annotation id"),
        "task_id": check_id(record.task_id, "task id"),
        "project": record.project,
        "text": record.text,
        "spans": json.dumps(spans_to_json(record.spans), ensure_ascii=False),
        "annotator": record.annotator,
        "created_at": record.created_at,  # "" (not sent): filled in by fill_times
        "updated_at": record.updated_at or record.created_at,
        "lead_time": record.lead_time,
        "cancelled": bool(record.cancelled),
        "ground_truth": bool(record.ground_truth),
        "prediction_model_version": record.prediction_model_version,
        "prediction_spans": json.dumps(spans_to_json(record.prediction_spans), ensure_ascii=False),
        "selected_by": record.selected_by,
        "deleted": bool(record.deleted),
        # ASCII-escaped: the raw payload keeps a lone surrogate or a NUL exactly as it came
        # (the text columns hold them replaced), and neither database takes them unescaped
        "raw": json.dumps(record.raw, ensure_ascii=True, default=str),
    }
    for name in TEXT_COLUMNS:  # one code point for one: offsets into the text still hold
        if row[name] is not None:
            row[name] = store_text(row[name])
    return row


def fill_times(row: dict[str, Any], old: Mapping[str, Any] | None) -> None:
    """Times a record came without: the stored row's when there is one (so replaying a
    payload without times changes nothing, even a second later), else now."""
    for name in ("created_at", "updated_at"):
        if not row[name]:
            row[name] = old[name] if old is not None else row["created_at"] or now()


def from_row(row: Mapping[Any, Any]) -> AnnotationRecord:
    values = {name: row[name] for name in COLUMNS}
    values["spans"] = spans_from_json(json.loads(values["spans"]))
    values["prediction_spans"] = spans_from_json(json.loads(values["prediction_spans"]))
    values["raw"] = json.loads(values["raw"])
    for flag in ("cancelled", "ground_truth", "deleted"):
        values[flag] = bool(values[flag])
    return AnnotationRecord(**values)


def same(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether a write would change nothing that matters. raw is bookkeeping (Label Studio
    re-serialises it on every send): not a change."""
    return all(old[name] == new[name] for name in COLUMNS if name != "raw")


# ---------------------------------------------------------------------- ids and text


MAX_ID = 2**63 - 1  # a signed 64-bit integer: SQLite's INTEGER, PostgreSQL's BIGINT


def check_id(value: Any, what: str) -> int:
    """An id as Label Studio sends it: a non-negative integer that fits a signed 64-bit
    integer (an all-digits string is read as one)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, got {short_repr(value)}")
    if not 0 <= value <= MAX_ID:
        raise ValueError(f"{what} must be between 0 and 2**63-1, got {short_repr(value)}")
    return value


def short_repr(value: Any) -> str:
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else "a huge integer"
    return text if len(text) <= 60 else text[:57] + "..."


def store_text(value: Any) -> str:
    """A string both databases can hold: each lone surrogate (SQLite takes UTF-8 only) and
    each NUL (PostgreSQL's text cannot hold one) replaced by U+FFFD."""
    return replace_surrogates(value if isinstance(value, str) else str(value)).replace(
        "\x00", "\ufffd"
    )
