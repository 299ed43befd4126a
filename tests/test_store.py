"""The annotation store: durability semantics and Label Studio webhook payload shapes.

The store's own tests run on both stores: a SQLite file, and a fresh database on the real
PostgreSQL server the test run starts (tests/postgres.py)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap

import pytest

from labeling.store import AnnotationRecord, Store
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


@pytest.fixture
def target(tmp_path, database_url):
    """Where a store opens: a SQLite file, or a PostgreSQL URL (both, by parametrisation)."""
    return tmp_path / "state" / "a.sqlite" if database_url is None else database_url


def open_store(target, key="p1") -> Store:
    return Store(target, key=key)


def test_webhook_created_payload(target):
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

    store = open_store(target)
    store.annotations.upsert(rec)
    assert store.annotations.get(71).spans == rec.spans
    assert store.annotations.get(71).prediction_spans[0].key() == (8, 14, "Tech")


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


def test_upsert_replaces_tombstone_and_cancelled(target):
    store = open_store(target)
    assert store.annotations.change_counter() == 0
    assert store.annotations.upsert(record(1, task_id=1))
    assert not store.annotations.upsert(record(1, task_id=1))  # a replayed webhook changes nothing
    assert store.annotations.upsert(record(1, task_id=1, spans=[Span(19, 32, "Soft")]))  # update
    store.annotations.upsert(record(2, task_id=2))
    store.annotations.upsert(record(3, task_id=3, cancelled=True, spans=[]))  # skipped
    store.annotations.upsert(
        record(4, task_id=2, updated_at="2026-11-25T18:00:00Z", spans=[Span(0, 2, "Soft")])
    )  # a newer annotation of task 2
    assert store.annotations.change_counter() == 5 and store.annotations.changes_since(2) == 3

    assert [r.annotation_id for r in store.annotations.records()] == [1, 2, 4]
    assert len(store.annotations.records(include_cancelled=True)) == 4
    docs = store.annotations.training_documents()
    assert [(d.id, [s.key() for s in d.spans]) for d in docs] == [
        ("1", [(19, 32, "Soft")]),
        ("2", [(0, 2, "Soft")]),
    ]
    assert docs[1].meta["annotation_id"] == 4

    assert store.annotations.tombstone([4, 4, 999]) == 1
    assert store.annotations.tombstone([4]) == 0
    assert store.annotations.upsert(record(4, task_id=2))
    assert store.annotations.get(4).deleted  # deletion is final
    assert [d.meta["annotation_id"] for d in store.annotations.training_documents()] == [1, 2]
    ids, digest = store.annotations.snapshot()
    counter = store.annotations.change_counter()
    store.close()

    reopened = open_store(target)  # everything is on disk
    assert reopened.annotations.snapshot() == (ids, digest) and ids == [1, 2]
    assert len(reopened.annotations.records(include_deleted=True, include_cancelled=True)) == 4
    assert reopened.annotations.get(3).cancelled and reopened.annotations.get(4).deleted
    assert reopened.annotations.change_counter() == counter == 7
    reopened.annotations.upsert(record(1, task_id=1, spans=[Span(0, 2, "Tech")]))
    assert reopened.annotations.snapshot()[1] != digest
    reopened.close()


def test_a_replay_without_times_changes_nothing_even_a_second_later(target):
    import time

    store = open_store(target)
    assert store.annotations.upsert(AnnotationRecord(1, 1, "3", TEXT, []))
    first = store.annotations.get(1)
    assert first.created_at and first.updated_at == first.created_at
    time.sleep(1.1)  # now() has moved on
    assert not store.annotations.upsert(AnnotationRecord(1, 1, "3", TEXT, []))
    assert store.annotations.upsert(AnnotationRecord(1, 1, "3", TEXT, [Span(8, 14, "Tech")]))
    assert store.annotations.get(1).created_at == first.created_at
    assert store.annotations.change_counter() == 2


def test_a_bulk_with_one_id_twice_is_written_as_if_one_after_the_other(target):
    store = open_store(target)
    first = record(5, spans=[Span(0, 2, "Tech")])
    second = record(5, spans=[Span(19, 32, "Soft")])
    assert store.annotations.upsert_many([first, record(6), second, second]) == 3
    assert store.annotations.get(5).spans == [Span(19, 32, "Soft")]
    assert store.annotations.change_counter() == 3 and store.annotations.changes_since(0) == 2
    assert store.annotations.upsert_many([]) == 0


def test_each_commit_waits_for_the_disk(tmp_path, postgres):
    """SQLite: WAL, fsynced at every commit. PostgreSQL: synchronous_commit on for the
    store's connections even where the database's default says off."""
    with Store(tmp_path / "a.sqlite") as store:
        assert store.durability() == {"journal_mode": "wal", "synchronous": "2"}
    import psycopg

    url = postgres.create_database("lazy")
    with psycopg.connect(postgres.dsn("lazy"), autocommit=True) as db:
        db.execute("ALTER DATABASE lazy SET synchronous_commit = off")
        assert db.execute("SHOW synchronous_commit").fetchone() == ("on",)  # set per session
    with psycopg.connect(postgres.dsn("lazy")) as db:
        assert db.execute("SHOW synchronous_commit").fetchone() == ("off",)
    with Store(url, key="p1") as store:
        assert store.durability() == {"synchronous_commit": "on", "fsync": "on"}
    postgres.drop_database("lazy")


def test_acknowledged_upserts_survive_kill_9(target):
    """A writer process is killed with SIGKILL right after acknowledging writes."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        from labeling.store import AnnotationRecord, Store
        store = Store({str(target)!r}, key="p1")
        for i in range(1, 21):
            store.annotations.upsert(AnnotationRecord(i, i, "3", "text " + str(i), []))
            print(i, flush=True)  # the acknowledgement
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == -9, proc.stderr
    acknowledged = [int(x) for x in proc.stdout.split()]
    assert acknowledged == list(range(1, 21))
    store = open_store(target)
    assert [r.annotation_id for r in store.annotations.records()] == acknowledged


def test_projects_sharing_a_database_never_see_each_other(target):
    one, two = open_store(target, "one"), open_store(target, "two")
    one.annotations.upsert(record(1, task_id=1))
    # the same id, elsewhere
    two.annotations.upsert(record(1, task_id=1, spans=[Span(19, 32, "Soft")]))
    two.annotations.upsert(record(2, task_id=2))
    assert one.annotations.tombstone([2]) == 0  # not one's
    inbox_id = two.inbox.enqueue(b"{}")
    assert [r.annotation_id for r in one.annotations.records()] == [1]
    assert one.annotations.get(1).spans == [Span(8, 14, "Tech", "python")]
    assert [r.annotation_id for r in two.annotations.records()] == [1, 2]
    assert (one.annotations.change_counter(), two.annotations.change_counter()) == (1, 2)
    assert one.inbox.pending() == [] and two.inbox.pending() == [(inbox_id, b"{}")]
    assert one.inbox.counts()["pending"] == 0 and two.inbox.counts()["pending"] == 1
    one.close()
    two.close()


def test_the_inbox_keeps_a_body_until_it_is_settled(target):
    store = open_store(target)
    store.annotations.upsert(
        record(9, updated_at="2026-11-25T19:00:00Z", spans=[Span(0, 2, "Soft")])
    )
    first, second = store.inbox.enqueue(b"\x00body one\xff"), store.inbox.enqueue(b"two")
    assert store.inbox.pending() == [(first, b"\x00body one\xff"), (second, b"two")]
    older = record(9, updated_at="2026-11-25T18:00:00Z")  # a later webhook already won
    assert store.inbox.settle(first, [record(7), older], deleted=[7]) == 2  # 7 stored, then deleted
    assert (
        store.annotations.get(9).spans == [Span(0, 2, "Soft")] and store.annotations.get(7).deleted
    )
    assert store.inbox.settle(second, [record(8)], error="item 1: bad \udc00 \x00") == 0
    assert store.annotations.get(8) is None
    assert store.inbox.counts() == {"pending": 0, "stored": 1, "refused": 1}
    (refusal,) = store.inbox.refusals()
    assert refusal["id"] == second and refusal["error"] == "item 1: bad \ufffd \ufffd"
    store.close()


def test_one_database_hands_out_annotations_inbox_and_training_requests(target):
    """The three views of a project's rows share the Store's one engine and key; training
    requests are counted per project and kept across a reopen."""
    one, two = open_store(target, "one"), open_store(target, "two")
    views = (one.annotations, one.inbox, one.training_requests)
    assert all(view.db is one.db and view.key == "one" for view in views)
    assert one.inbox.annotations is one.annotations  # a settle writes this project's rows
    assert one.training_requests.count() == 0
    assert one.training_requests.request() == 1 and one.training_requests.request() == 2
    assert two.training_requests.count() == 0 and two.training_requests.request() == 1
    assert one.annotations.change_counter() == 0  # a request is no annotation change
    one.close()
    two.close()
    with open_store(target, "one") as again:
        assert again.training_requests.count() == 2


def test_text_neither_database_can_hold_is_replaced_in_place(target):
    """A NUL (PostgreSQL's text cannot hold one) and a lone surrogate (SQLite's UTF-8 cannot)
    are stored as U+FFFD, one code point for one; raw keeps them exactly."""
    text = "we\x00need py\ud800thon"
    store = open_store(target)
    raw = {"text": text}
    store.annotations.upsert(record(1, text=text, spans=[Span(3, 7, "Soft", "need")], raw=raw))
    stored = store.annotations.get(1)
    assert stored.text == "we\ufffdneed py\ufffdthon" and len(stored.text) == len(text)
    assert stored.raw == raw


def test_concurrent_writers_from_two_processes_lose_nothing(target):
    """Two stores (two engines, as two service processes have) and four threads write the
    same project at once: every change is stored and counted exactly once."""
    import threading

    stores = [open_store(target), open_store(target)]
    changed: list[int] = []
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        store = stores[worker % 2]
        try:
            for i in range(25):
                ids = [worker * 100 + i, 1000 + i]  # one id of its own, one shared by all
                spans = [Span(0, 2, "Tech" if worker % 2 else "Soft")]
                batch = [record(n, task_id=n, spans=spans) for n in ids]
                changed.append(store.annotations.upsert_many(batch))
                if i % 5 == 4:
                    changed.append(store.annotations.tombstone([worker * 100 + i - 1]))
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    store = stores[0]
    everything = store.annotations.records(include_deleted=True)
    assert len(everything) == 4 * 25 + 25
    assert len([r for r in everything if r.deleted]) == 4 * 5
    assert store.annotations.change_counter() == sum(changed)
    assert store.annotations.changes_since(0) == len(everything)
    for s in stores:
        s.close()


def test_concurrent_first_opens_migrate_once(target):
    import threading

    opened: list[Store] = []
    errors: list[BaseException] = []

    def open_one(key: str) -> None:
        try:
            opened.append(open_store(target, key))
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=open_one, args=(f"k{i % 2}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors and len(opened) == 6
    assert migrations(opened[0]) == [1, 2]
    for store in opened:
        store.close()


def migrations(store: Store) -> list[int]:
    from sqlalchemy import select

    from labeling.storage.schema import migration_table

    with store.db.read() as conn:
        return list(conn.execute(select(migration_table.c.version)).scalars())


# the schema of a store written before migrations existed (one project a file)
VERSION_1 = """
CREATE TABLE annotations (
    annotation_id INTEGER PRIMARY KEY, task_id INTEGER NOT NULL, project TEXT NOT NULL,
    text TEXT NOT NULL, spans TEXT NOT NULL, annotator TEXT, created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL, lead_time REAL, cancelled INTEGER NOT NULL,
    ground_truth INTEGER NOT NULL, prediction_model_version TEXT,
    prediction_spans TEXT NOT NULL, selected_by TEXT, deleted INTEGER NOT NULL DEFAULT 0,
    raw TEXT NOT NULL, change INTEGER NOT NULL
);
CREATE INDEX annotations_task ON annotations(task_id);
CREATE INDEX annotations_change ON annotations(change);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO counters VALUES ('changes', 3);
CREATE TABLE inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, received_at TEXT NOT NULL, body BLOB NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending', error TEXT, stored INTEGER
);
CREATE INDEX inbox_state ON inbox(state);
INSERT INTO annotations VALUES (1, 10, '3', 'we need python', '[{"start": 8, "end": 14,
    "label": "Tech", "text": "python"}]', 'a@x.org', '2026-11-01', '2026-11-01', 2.5, 0, 1,
    'v0001', '[]', 'mnlp', 0, '{}', 1);
INSERT INTO annotations VALUES (2, 11, '3', 'skipped', '[]', NULL, '2026-11-02',
    '2026-11-02', NULL, 1, 0, NULL, '[]', NULL, 1, '{}', 3);
INSERT INTO inbox (received_at, body) VALUES ('2026-11-03', X'7B7D');
"""


def test_a_store_from_before_migrations_is_migrated_in_place(tmp_path):
    import sqlite3

    path = tmp_path / "linkedin-skills" / "annotations.sqlite"
    path.parent.mkdir()
    with sqlite3.connect(path) as db:
        db.executescript(VERSION_1)
    store = Store(path)  # no key: the state folder's name
    assert store.key == "linkedin-skills" and migrations(store) == [1, 2]
    everything = store.annotations.records(include_deleted=True, include_cancelled=True)
    assert [(r.annotation_id, r.task_id, r.deleted, r.cancelled) for r in everything] == [
        (1, 10, False, False),
        (2, 11, True, True),
    ]
    first = store.annotations.get(1)
    assert first.spans == [Span(8, 14, "Tech", "python")] and first.ground_truth
    assert (first.annotator, first.lead_time, first.selected_by) == ("a@x.org", 2.5, "mnlp")
    assert store.annotations.change_counter() == 3 and store.annotations.changes_since(1) == 1
    assert store.inbox.pending() == [(1, b"{}")]
    assert (
        store.annotations.upsert(record(3, task_id=12)) and store.annotations.change_counter() == 4
    )
    assert store.inbox.enqueue(b"[]") == 2
    store.close()
    again = Store(path)  # the one project the file holds; nothing to migrate
    assert again.key == "linkedin-skills" and migrations(again) == [1, 2]
    assert len(again.annotations.records()) == 2
    again.close()
    with pytest.raises(ValueError, match="several projects"):
        Store(path, key="other").close()
        Store(path)


def test_a_store_newer_than_the_code_is_refused(target):
    from sqlalchemy import insert

    from labeling.storage.schema import migration_table

    store = open_store(target)
    with store.db.write() as conn:
        conn.execute(insert(migration_table).values(version=99, description="x", applied_at="y"))
    store.close()
    with pytest.raises(RuntimeError, match="schema version 99, newer than this skillloop"):
        open_store(target)


def test_a_shared_database_needs_a_project_key(postgres_url):
    with pytest.raises(ValueError, match="needs a project key"):
        Store(postgres_url)
    with pytest.raises(ValueError, match="unsupported database"):
        Store("mysql://u:secret@host/db")
