"""Webhooks as Label Studio 1.23 sends them: every event kind, the durable store write
before the answer, training triggers (Start Training, POST /train, every N annotations),
and a real round that trains, is promoted and is then served."""

from __future__ import annotations

import time

import pytest
from service_helpers import annotation_event, make_app, payload, predict_body

from training.text import Span

TEXT = "We need Python and SQL experience."


@pytest.fixture
def store(app):
    return app.extensions["skillloop"].store.annotations


def wait_for(predicate, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_annotation_created_is_stored_before_the_answer(client, store, app):
    reply = client.post("/webhook", json=payload("annotation_created"))
    assert reply.status_code == 200
    assert reply.get_json() == {"status": "stored", "annotation_ids": [501]}
    record = store.get(501)
    assert record.task_id == 101 and record.project == "7"
    assert record.spans == [Span(8, 14, "Technology", "Python")]
    assert record.lead_time == pytest.approx(14.2)
    assert app.extensions["skillloop"].studio.project_id == 7


def test_annotation_updated_replaces(client, store):
    client.post("/webhook", json=annotation_event(5, 50, TEXT, [(8, 14, "Technology")]))
    updated = annotation_event(
        5, 50, TEXT, [(19, 22, "Technology"), (0, 2, "Soft")], action="ANNOTATION_UPDATED"
    )
    assert client.post("/webhook", json=updated).status_code == 200
    (record,) = store.records()
    assert [(s.start, s.end, s.label) for s in record.spans] == [
        (0, 2, "Soft"),
        (19, 22, "Technology"),
    ]


def test_annotations_deleted_tombstones(client, store):
    client.post("/webhook", json=payload("annotation_created"))
    reply = client.post("/webhook", json=payload("annotations_deleted"))
    assert reply.get_json() == {"status": "deleted", "deleted": 1, "annotation_ids": [501]}
    assert store.records() == []
    (record,) = store.records(include_deleted=True)
    assert record.deleted
    # a late replay of the creation does not bring it back
    client.post("/webhook", json=payload("annotation_created"))
    assert store.records() == []


def test_tasks_deleted_tombstones_the_tasks_annotations_once(client, store, app):
    client.post("/webhook", json=payload("annotation_created"))  # 501 on task 101
    skipped = annotation_event(502, 101, TEXT, [], was_cancelled=True)
    for body in (skipped, annotation_event(6, 60, TEXT, [(8, 14, "Technology")])):
        assert client.post("/webhook", json=body).status_code == 200
    counter = store.change_counter()

    reply = client.post("/webhook", json=payload("tasks_deleted"))  # task 101
    assert reply.status_code == 200
    assert reply.get_json() == {
        "status": "deleted",
        "deleted": 2,
        "annotation_ids": [501, 502],
        "task_ids": [101],
    }
    assert store.get(501).deleted and store.get(502).deleted and not store.get(6).deleted
    assert [r.annotation_id for r in store.records()] == [6]
    assert store.change_counter() == counter + 2
    metrics = app.extensions["skillloop"].metrics
    assert metrics.value("annotations_deleted_total") == 2
    # a replay, and a task the store never heard of, change nothing
    again = client.post(
        "/webhook", json={**payload("tasks_deleted"), "tasks": [{"id": 101}, {"id": 9}]}
    )
    assert again.get_json()["deleted"] == 0 and store.change_counter() == counter + 2
    client.post("/webhook", json=payload("annotation_created"))  # a late replay: still deleted
    assert [r.annotation_id for r in store.records()] == [6]


def test_cancelled_annotations_are_stored_but_never_training_data(client, store):
    skipped = annotation_event(6, 60, TEXT, [], was_cancelled=True)
    assert client.post("/webhook", json=skipped).status_code == 200
    assert store.get(6).cancelled
    assert store.training_documents() == []


@pytest.mark.parametrize("name", ["project_updated", None])
def test_other_events_are_acknowledged_and_ignored(client, store, name):
    body = payload(name) if name else {"action": "LABEL_LINK_CREATED", "project": {"id": 7}}
    reply = client.post("/webhook", json=body)
    assert reply.status_code == 200
    assert reply.get_json() == {"status": "ignored", "action": body["action"]}
    assert store.records(include_deleted=True, include_cancelled=True) == []


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"annotation": {}}, 400, "missing 'action'"),
        ({"action": "ANNOTATION_CREATED", "task": {"id": 1}}, 422, "'annotation' must be"),
        ({"action": "ANNOTATIONS_DELETED", "annotations": "501"}, 422, "'annotations' list"),
        ({"action": "ANNOTATIONS_DELETED", "annotations": [{"id": "x"}]}, 422, "integer"),
        ({"action": "TASKS_DELETED"}, 422, "'tasks' list"),
        ({"action": "TASKS_DELETED", "tasks": {"id": 1}}, 422, "'tasks' list"),
        ({"action": "TASKS_DELETED", "tasks": [5]}, 422, "task must be a JSON object"),
        ({"action": "TASKS_DELETED", "tasks": [{"id": -1}]}, 422, "task.id"),
        ({"action": "TASKS_DELETED", "tasks": [{"id": 1}, {"id": 2**63}]}, 422, "task.id"),
    ],
)
def test_malformed_webhooks_get_4xx_json(client, body, status, message):
    reply = client.post("/webhook", json=body)
    assert reply.status_code == status
    assert message in reply.get_json()["error"]


def test_annotation_without_the_text_field_is_refused(client, store):
    body = payload("annotation_created")
    body["task"]["data"] = {"html": TEXT}
    reply = client.post("/webhook", json=body)
    assert reply.status_code == 422
    assert "no data field 'text'" in reply.get_json()["error"]
    assert store.get(501) is None


def test_webhooks_answer_well_under_a_second(client, store):
    slowest = 0.0
    for i in range(30):
        started = time.perf_counter()
        reply = client.post(
            "/webhook", json=annotation_event(1000 + i, 2000 + i, TEXT, [(8, 14, "Technology")])
        )
        slowest = max(slowest, time.perf_counter() - started)
        assert reply.status_code == 200
    assert len(store.records()) == 30
    assert slowest < 0.5, f"slowest webhook took {slowest:.3f} s"


def test_start_training_runs_a_round_and_serves_the_promoted_version(client, app):
    """The whole loop: annotations in, Start Training, a round in a child process, the
    gate promotes, the service swaps models and /predict answers with the new version."""
    from backend.loop.rounds import read_rounds

    services = app.extensions["skillloop"]
    first_version = client.get("/health").get_json()["model_version"]
    for i in range(8):
        text = f"python and sql for team {i}"
        event = annotation_event(10 + i, 100 + i, text, [(0, 6, "Technology")])
        assert client.post("/webhook", json=event).status_code == 200
    reply = client.post("/webhook", json=payload("start_training"))
    assert reply.status_code == 200
    started = reply.get_json()  # the reply says what became of the request
    assert started["accepted"] is True and started["state"] in ("started", "starting"), started
    again = client.post("/train").get_json()  # a trigger during a round queues one follow-up
    assert again["accepted"] is True and again["queued"] is True and again["state"] == "queued"
    # the follow-up would train on the same snapshot as the promoted round: skipped
    assert wait_for(lambda: len(read_rounds(services.state)) == 2, timeout=240)
    last, follow_up = read_rounds(services.state)
    assert last["status"] == "promoted", last
    assert follow_up["status"] == "skipped", follow_up
    assert follow_up["reason"].startswith("same training data as the serving version v0001")
    assert wait_for(lambda: services.holder.current().version == "v0001", timeout=30)
    result = client.post("/predict", json=predict_body(["python"])).get_json()
    assert result["model_version"] == "v0001" != first_version
    versions = client.get("/versions").get_json()
    assert versions["versions"][0] == "v0001" and versions["serving"] == "v0001"
    detail = versions["details"][0]
    assert len(detail["snapshot"]["annotation_ids"]) == detail["snapshot"]["documents"]
    metrics = client.get("/metrics").get_data(as_text=True)
    assert "skillloop_rounds_promoted 1" in metrics
    assert 'skillloop_training_requests_total{outcome="accepted",source="studio"} 1' in metrics
    services.worker.stop()  # cancels the queued follow-up round's child, if it started


def test_every_n_annotations_triggers_a_round(tmp_path, spanful_model):
    """Three annotations with every_n_annotations = 3: exactly one automatic round, on a
    snapshot of those three posts, that trains and registers v0001 (and no second one)."""
    from backend.loop.rounds import read_rounds

    app = make_app(tmp_path, spanful_model, every_n=3)
    services = app.extensions["skillloop"]
    try:
        client = app.test_client()
        for i in range(2):
            event = annotation_event(10 + i, 100 + i, f"python job {i}", [(0, 6, "Technology")])
            client.post("/webhook", json=event)
        time.sleep(0.5)
        assert not services.worker.is_running() and read_rounds(services.state) == []
        event = annotation_event(12, 102, "python job 2", [(0, 6, "Technology")])
        client.post("/webhook", json=event)

        assert wait_for(lambda: services.worker.status()["last_round"] is not None, timeout=180)
        last = client.get("/status").get_json()["last_round"]
        assert last["trigger"] == "auto" and last["status"] in ("promoted", "refused"), last
        assert last["change_counter"] == 3 and last["version"] == "v0001"
        assert last["train_documents"] + last["heldout_documents"] == 3
        time.sleep(0.5)  # no change since: no second round
        assert [r["round_id"] for r in read_rounds(services.state)] == [last["round_id"]]
    finally:
        services.close()


def test_start_training_on_a_host_that_does_not_train_is_recorded_for_the_training_host(
    tmp_path, spanful_model, postgres_url, monkeypatch
):
    """Serving hosts beside a `skillloop worker` on the shared database: Start Training
    is recorded there (the worker polls it), not refused."""
    monkeypatch.setenv("SKILLLOOP_DATABASE_URL", postgres_url)
    app = make_app(tmp_path, spanful_model, training=False)
    try:
        client = app.test_client()
        reply = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
        assert reply.status_code == 200, reply.get_json()
        assert reply.get_json()["state"] == "forwarded"
        assert client.post("/train").get_json()["state"] == "forwarded"
        assert app.extensions["skillloop"].store.training_requests.count() == 2
    finally:
        app.extensions["skillloop"].close()


def test_training_can_be_disabled(tmp_path, spanful_model):
    app = make_app(tmp_path, spanful_model, training=False)
    try:
        client = app.test_client()
        reply = client.post("/train")
        assert reply.status_code == 409
        assert "disabled" in reply.get_json()["error"]
        # annotations are still stored
        assert client.post("/webhook", json=payload("annotation_created")).status_code == 200
        assert app.extensions["skillloop"].store.annotations.get(501) is not None
    finally:
        app.extensions["skillloop"].close()
