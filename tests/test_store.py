"""The annotation store: durability semantics and Label Studio webhook payload shapes."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap

import pytest

from labeling.store import AnnotationRecord, AnnotationStore
from labeling.studio.config import parse_config
from labeling.studio.payloads import (
    deleted_ids_from_webhook,
    record_from_webhook,
    records_from_webhook,
)
from training.text import Span

CONFIG = parse_config(
    '<View><Labels name="label" toName="text"><Label value="Tech"/><Label value="Soft"/>'
    '</Labels><Text name="text" value="$text"/></View>'
)
TEXT = "we need python and communication skills"

# The shape Label Studio 1.23 sends (webhooks/serializers_for_hooks.py: ModelSerializer
# with fields "__all__", so foreign keys are plain ids).
CREATED = {
    "action": "ANNOTATION_CREATED",
    "annotation": {
        "id": 71,
        "result": [
            {
                "id": "a1",
                "from_name": "label",
                "to_name": "text",
                "type": "labels",
                "origin": "manual",
                "value": {"start": 8, "end": 14, "text": "python", "labels": ["Tech"]},
            },
            {
                "id": "a2",
                "from_name": "label",
                "to_name": "text",
                "type": "labels",
                "value": {"start": 19, "end": 32, "text": "communication", "labels": ["Soft"]},
            },
        ],
        "task": 12,
        "project": 3,
        "completed_by": 1,
        "updated_by": 1,
        "was_cancelled": False,
        "ground_truth": False,
        "created_at": "2026-11-25T17:00:00.123456Z",
        "updated_at": "2026-11-25T17:00:00.123456Z",
        "draft_created_at": None,
        "lead_time": 12.5,
        "result_count": 2,
        "parent_prediction": 40,
        "parent_annotation": None,
        "unique_id": "3f1b",
        "import_id": None,
        "last_action": None,
        "last_created_by": None,
        "bulk_created": False,
        "prediction": {
            "result": [
                {
                    "from_name": "label",
                    "to_name": "text",
                    "type": "labels",
                    "score": 0.8,
                    "value": {"start": 8, "end": 14, "text": "python", "labels": ["Tech"]},
                }
            ],
            "model_version": "v0002",
            "score": 0.4,
        },
    },
    "task": {
        "id": 12,
        "data": {"text": TEXT},
        "meta": {"selected_by": "mnlp"},
        "created_at": "2026-11-25T16:00:00Z",
        "updated_at": "2026-11-25T17:00:00Z",
        "is_labeled": True,
        "overlap": 1,
        "project": 3,
        "file_upload": None,
        "total_annotations": 1,
        "cancelled_annotations": 0,
        "total_predictions": 1,
    },
    "project": {"id": 3, "title": "skills", "label_config": "<View/>"},
}


def record(annotation_id=1, task_id=1, text=TEXT, spans=None, **kw) -> AnnotationRecord:
    spans = [Span(8, 14, "Tech", "python")] if spans is None else spans
    kw.setdefault("updated_at", f"2026-11-25T17:00:{annotation_id:02d}Z")
    return AnnotationRecord(annotation_id, task_id, "3", text, spans, **kw)


def test_webhook_created_payload(tmp_path):
    rec = record_from_webhook(CREATED, CONFIG)
    assert (rec.annotation_id, rec.task_id, rec.project) == (71, 12, "3")
    assert [(s.start, s.end, s.label, s.text) for s in rec.spans] == [
        (8, 14, "Tech", "python"),
        (19, 32, "Soft", "communication"),
    ]
    assert rec.annotator == "1" and rec.lead_time == 12.5 and not rec.cancelled
    assert rec.prediction_model_version == "v0002"
    assert [s.key() for s in rec.prediction_spans] == [(8, 14, "Tech")]
    assert rec.selected_by == "mnlp"
    assert rec.raw["annotation"]["parent_prediction"] == 40

    store = AnnotationStore(tmp_path / "a.sqlite")
    store.upsert(rec)
    assert store.get(71).spans == rec.spans
    assert store.get(71).prediction_spans[0].key() == (8, 14, "Tech")


def test_webhook_variants():
    payload = copy.deepcopy(CREATED)
    payload["action"] = "ANNOTATION_UPDATED"
    payload["annotation"]["completed_by"] = {"id": 4, "email": "ann@example.com"}
    payload["annotation"]["was_cancelled"] = True
    payload["annotation"]["result"] = []
    payload["annotation"]["prediction"] = {}
    payload["project"] = 3
    rec = record_from_webhook(payload, CONFIG)
    assert rec.annotator == "ann@example.com" and rec.cancelled and rec.spans == []
    assert rec.prediction_model_version is None and rec.prediction_spans == []

    bulk = {
        "action": "ANNOTATIONS_CREATED",
        "annotation": [CREATED["annotation"]],
        "task": [CREATED["task"]],
        "project": CREATED["project"],
    }
    assert [r.annotation_id for r in records_from_webhook(bulk, CONFIG)] == [71]
    deleted = {
        "action": "ANNOTATIONS_DELETED",
        "annotations": [{"id": 71}, {"id": 72}],
        "project": {"id": 3},
    }
    assert deleted_ids_from_webhook(deleted) == [71, 72]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p: p.pop("annotation"), "'annotation' must be a JSON object"),
        (lambda p: p.update(action="PROJECT_UPDATED"), "expected action"),
        (lambda p: p["annotation"].update(id="x"), "annotation.id must be an integer"),
        (lambda p: p["annotation"].update(task=99), "is of task 99, not of task 12"),
        (lambda p: p["task"].update(data={"title": "no text"}), "has no data field 'text'"),
        (lambda p: p["annotation"].update(result={"a": 1}), "result must be a list"),
        (lambda p: p["annotation"]["result"][0]["value"].update(end=999), "outside"),
    ],
)
def test_malformed_webhooks(change, message):
    payload = copy.deepcopy(CREATED)
    change(payload)
    with pytest.raises(ValueError, match=message):
        record_from_webhook(payload, CONFIG)
    with pytest.raises(ValueError, match="annotations"):
        deleted_ids_from_webhook({"action": "ANNOTATIONS_DELETED"})
    with pytest.raises(ValueError, match="JSON object"):
        record_from_webhook(["not", "a", "dict"], CONFIG)


def test_upsert_replaces_tombstone_and_cancelled(tmp_path):
    path = tmp_path / "a.sqlite"
    store = AnnotationStore(path)
    assert store.change_counter() == 0
    assert store.upsert(record(1, task_id=1))
    assert not store.upsert(record(1, task_id=1))  # a replayed webhook changes nothing
    assert store.upsert(record(1, task_id=1, spans=[Span(19, 32, "Soft")]))  # update
    store.upsert(record(2, task_id=2))
    store.upsert(record(3, task_id=3, cancelled=True, spans=[]))  # skipped
    store.upsert(
        record(4, task_id=2, updated_at="2026-11-25T18:00:00Z", spans=[Span(0, 2, "Soft")])
    )  # a newer annotation of task 2
    assert store.change_counter() == 5 and store.changes_since(2) == 3

    assert [r.annotation_id for r in store.records()] == [1, 2, 4]
    assert len(store.records(include_cancelled=True)) == 4
    docs = store.training_documents()
    assert [(d.id, [s.key() for s in d.spans]) for d in docs] == [
        ("1", [(19, 32, "Soft")]),
        ("2", [(0, 2, "Soft")]),
    ]
    assert docs[1].meta["annotation_id"] == 4

    assert store.tombstone([4, 4, 999]) == 1
    assert store.tombstone([4]) == 0
    assert store.upsert(record(4, task_id=2)) and store.get(4).deleted  # deletion is final
    assert [d.meta["annotation_id"] for d in store.training_documents()] == [1, 2]
    ids, digest = store.snapshot()
    store.close()

    reopened = AnnotationStore(path)  # everything is on disk
    assert reopened.snapshot() == (ids, digest) and ids == [1, 2]
    assert len(reopened.records(include_deleted=True, include_cancelled=True)) == 4
    assert reopened.get(3).cancelled and reopened.get(4).deleted
    assert reopened.change_counter() == store_counter(path)
    reopened.upsert(record(1, task_id=1, spans=[Span(0, 2, "Tech")]))
    assert reopened.snapshot()[1] != digest
    mode = reopened._db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal" and reopened._db.execute("PRAGMA synchronous").fetchone()[0] == 2


def store_counter(path) -> int:
    import sqlite3

    with sqlite3.connect(path) as db:
        return db.execute("SELECT value FROM counters").fetchone()[0]


def test_acknowledged_upserts_survive_kill_9(tmp_path):
    """A writer process is killed with SIGKILL right after acknowledging writes."""
    path = tmp_path / "a.sqlite"
    script = textwrap.dedent(f"""
        import os, signal, sys
        from labeling.store import AnnotationRecord, AnnotationStore
        store = AnnotationStore({str(path)!r})
        for i in range(1, 21):
            store.upsert(AnnotationRecord(i, i, "3", "text " + str(i), []))
            print(i, flush=True)  # the acknowledgement
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == -9
    acknowledged = [int(x) for x in proc.stdout.split()]
    assert acknowledged == list(range(1, 21))
    store = AnnotationStore(path)
    assert [r.annotation_id for r in store.records()] == acknowledged
