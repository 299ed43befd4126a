"""Issue 12's table, one test (or more) a row: hostile and heavy input gets a 4xx JSON
answer or a bounded, documented one, never a 500, never a half-stored annotation.

The tests that store something (or must store nothing) run on both stores: SQLite and a
real PostgreSQL (`both_stores`, the `database_url` fixture)."""

from __future__ import annotations

import json
import threading
import time

import pytest
from service_helpers import annotation_event, make_app, payload, predict_body

from backend.service.requests import KNOWN_ACTIONS
from training.text import Span

TEXT = "We need Python and SQL experience."
FOREIGN_XML = (
    '<View><Labels name="skills" toName="post">'
    '<Label value="Tool" predicted_values="TECHNOLOGY"/><Label value="Method" '
    'predicted_values="TECHNICAL"/><Label value="Biz" predicted_values="BUS"/>'
    '<Label value="soft"/></Labels>'
    '<Text name="post" value="$body"/><Choices name="seniority" toName="post">'
    '<Choice value="senior"/></Choices></View>'
)


both_stores = pytest.mark.usefixtures("database_url")


@pytest.fixture
def services(app):
    return app.extensions["skillloop"]


def everything(store):
    return store.annotations.records(include_deleted=True, include_cancelled=True)


def post_raw(client, route, raw):
    return client.post(route, data=raw, content_type="application/json")


def region(start, end, labels):
    value = {"start": start, "end": end, "text": "Python", "labels": labels}
    return {"id": "r1", "from_name": "label", "to_name": "text", "type": "labels", "value": value}


def event_with(result, annotation_id=7, task_id=70):
    body = annotation_event(annotation_id, task_id, TEXT, [])
    body["annotation"]["result"] = result
    return body


# --- 100k nested [ -------------------------------------------------------------------------
@pytest.mark.parametrize("route", ["/predict", "/webhook", "/setup"])
def test_deeply_nested_json_is_a_400(client, route, caplog):
    reply = post_raw(client, route, "[" * 100_000)
    assert reply.status_code == 400
    assert reply.get_json() == {"error": "request body is nested too deeply"}
    assert "Traceback" not in caplog.text


def test_nan_and_infinity_are_not_json(client):
    reply = post_raw(client, "/predict", '{"tasks": [], "x": NaN}')
    assert reply.status_code == 400 and "NaN is not JSON" in reply.get_json()["error"]


# --- lone surrogates ---------------------------------------------------------------------
def test_a_lone_surrogate_costs_its_task_only(client, caplog):
    body = predict_body(["python", "sql"])
    raw = json.dumps(body).replace('"text": "sql"', '"text": "sql \\ud800 aws"')
    assert "\\ud800" in raw
    reply = post_raw(client, "/predict", raw)
    assert reply.status_code == 200
    results = reply.get_json()["results"]
    assert [len(r["result"]) for r in results] == [1, 0]
    assert results[1]["score"] == 1.0
    assert "lone UTF-16 surrogate" in caplog.text


@both_stores
def test_a_lone_surrogate_in_a_webhook_text_is_replaced_and_recorded(client, services):
    body = annotation_event(8, 80, TEXT, [(8, 14, "Technology")])
    raw = json.dumps(body).replace("We need", "We\\udc00need")
    reply = post_raw(client, "/webhook", raw)
    assert reply.status_code == 200
    record = services.store.annotations.get(8)
    assert record.text == TEXT.replace("We need", "We\ufffdneed")
    assert record.spans == [Span(8, 14, "Technology", "Python")]  # offsets unchanged
    assert record.raw["repairs"] == ["text: 1 lone surrogate(s) replaced by U+FFFD"]
    assert record.raw["task"]["data"]["text"].startswith("We\udc00need")  # kept as sent


@both_stores
def test_a_nul_in_a_webhook_text_is_replaced_and_recorded(client, services):
    body = annotation_event(9, 90, TEXT, [(8, 14, "Technology")])
    raw = json.dumps(body).replace("We need", "We\\u0000need")
    reply = post_raw(client, "/webhook", raw)
    assert reply.status_code == 200, reply.get_json()
    record = services.store.annotations.get(9)
    assert record.text == TEXT.replace("We need", "We\ufffdneed")
    assert record.spans == [Span(8, 14, "Technology", "Python")]
    assert record.raw["repairs"] == ["text: 1 NUL character(s) replaced by U+FFFD"]
    assert record.raw["task"]["data"]["text"].startswith("We\x00need")


# --- malformed regions, labels, offsets, ids: 422 naming the item, nothing stored ---------
BAD_RESULTS = {
    "value a string": ([{**region(8, 14, ["Technology"]), "value": "Python"}], "value must be"),
    "value a list": ([{**region(8, 14, ["Technology"]), "value": [8, 14]}], "value must be"),
    "labels an int": ([region(8, 14, 3)], "value.labels must be a list"),
    "labels a string": ([region(8, 14, "Technology")], "value.labels must be a list"),
    "labels [null]": ([region(8, 14, [None])], "value.labels must be a list"),
    "unknown label": ([region(8, 14, ["NotALabel"])], "['NotALabel'] are not in the labeling"),
    "float offset": ([region(8.0, 14, ["Technology"])], "value.start must be an integer"),
    "string offset": ([region(8, "14", ["Technology"])], "value.end must be an integer"),
    "outside": ([region(8, 140, ["Technology"])], "lies outside"),
    "unknown from_name": (
        [{**region(8, 14, ["Technology"]), "from_name": "nope"}],
        "from_name 'nope' is not a tag",
    ),
    "region a string": (["r1"], "region 1 must be a JSON object"),
    "result a dict": ({"value": {}}, "result must be a list"),
}


@both_stores
@pytest.mark.parametrize("case", sorted(BAD_RESULTS))
def test_malformed_regions_are_a_422_naming_the_region(client, services, case):
    result, message = BAD_RESULTS[case]
    body = event_with([region(0, 2, ["Soft"]), *result] if isinstance(result, list) else result)
    reply = client.post("/webhook", json=body)
    assert reply.status_code == 422, reply.get_json()
    error = reply.get_json()["error"]
    assert message in error and "annotation 7" in error
    if isinstance(result, list) and isinstance(result[0], dict):
        assert "region 1 (id 'r1')" in error
    assert everything(services.store) == []
    assert services.studio.project_id is None  # a refused webhook leaves no trace


@both_stores
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("annotation.id", 2**63),
        ("annotation.id", -1),
        ("annotation.id", 10**400),
        ("task.id", 2**64),
        ("task.id", -5),
        ("annotation.id", 1.5),
    ],
)
def test_ids_past_sqlite_or_negative_are_a_422(client, services, field, value):
    body = annotation_event(9, 90, TEXT, [(8, 14, "Technology")])
    where, key = field.split(".")
    body[where][key] = value
    if where == "task":
        body["annotation"]["task"] = value
    reply = client.post("/webhook", json=body)
    assert reply.status_code == 422
    assert field in reply.get_json()["error"] or "annotation.task" in reply.get_json()["error"]
    assert everything(services.store) == []


@pytest.mark.parametrize("value", [2**63, -1, "x"])
def test_deleted_ids_past_sqlite_or_negative_are_a_422(client, value):
    body = {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 1}, {"id": value}]}
    reply = client.post("/webhook", json=body)
    assert reply.status_code == 422 and "annotation.id" in reply.get_json()["error"]


@both_stores
def test_a_bulk_webhook_with_a_bad_item_stores_none(client, services):
    items = [annotation_event(20 + i, 200 + i, TEXT, [(8, 14, "Technology")]) for i in range(3)]
    items[1]["annotation"]["result"][0]["value"]["labels"] = ["NotALabel"]
    body = {
        "action": "ANNOTATIONS_CREATED",
        "annotation": [i["annotation"] for i in items],
        "task": [i["task"] for i in items],
        "project": items[0]["project"],
    }
    reply = client.post("/webhook", json=body)
    assert reply.status_code == 422
    assert "item 2 of 3: annotation 21" in reply.get_json()["error"]
    assert everything(services.store) == []
    items[1]["annotation"]["result"][0]["value"]["labels"] = ["Soft"]
    assert client.post("/webhook", json=body).get_json()["annotation_ids"] == [20, 21, 22]


# --- an annotation made with another Label Studio config ---------------------------------
def foreign_event(labels, annotation_id=30, xml=FOREIGN_XML):
    body = payload("annotation_created")
    body["project"]["label_config"] = xml
    body["task"] = {"id": 300, "data": {"body": TEXT}}
    value = {"start": 8, "end": 14, "text": "Python", "labels": labels}
    body["annotation"].update(
        id=annotation_id,
        task=300,
        result=[
            {"id": "a", "from_name": "skills", "to_name": "post", "type": "labels", "value": value},
            {"id": "b", "from_name": "seniority", "type": "choices", "value": {"choices": ["x"]}},
        ],
    )
    return body


@both_stores
@pytest.mark.parametrize(
    ("label", "stored"), [("Tool", "Technology"), ("Biz", "Business"), ("soft", "Soft")]
)
def test_an_annotation_from_a_foreign_config_is_read_with_its_own_names(
    client, services, label, stored
):
    reply = client.post("/webhook", json=foreign_event([label]))
    assert reply.status_code == 200, reply.get_json()
    assert services.store.annotations.get(30).spans == [Span(8, 14, stored, "Python")]


@both_stores
def test_a_foreign_config_the_project_cannot_map_is_a_422(client, services):
    xml = FOREIGN_XML.replace('<Label value="soft"/>', '<Label value="Degree"/>')
    reply = client.post("/webhook", json=foreign_event(["Tool"], xml=xml))
    assert reply.status_code == 422 and "Degree" in reply.get_json()["error"]
    assert everything(services.store) == []


def test_without_a_config_in_the_webhook_the_one_from_setup_is_used(client, services):
    setup = payload("setup")
    setup["schema"] = FOREIGN_XML
    assert client.post("/setup", json=setup).status_code == 200
    body = foreign_event(["Method"])
    del body["project"]
    assert client.post("/webhook", json=body).status_code == 200
    assert services.store.annotations.get(30).spans == [Span(8, 14, "Technical", "Python")]


# --- heavy /predict: cut texts, a time budget, no starvation -----------------------------
def test_a_long_post_is_read_up_to_the_limit_and_says_so(tmp_path, spanful_model):
    app = make_app(tmp_path, spanful_model, max_text_chars=200)
    try:
        text = "python " * 150_000  # ~1 MB
        reply = app.test_client().post("/predict", json=predict_body([text, "sql"]))
        assert reply.status_code == 200
        long, short = reply.get_json()["results"]
        assert long["text_cut_at"] == 200 and "text_cut_at" not in short
        assert max(r["value"]["end"] for r in long["result"]) <= 200
        assert len(long["result"]) == len(text[:200].split())
    finally:
        app.extensions["skillloop"].close()


class SlowTagger:
    """Wraps a tagger so each model call costs `seconds` (stands in for a big model): slept
    for real, or, given a `WorkClock`, added to that clock, so a budget is spent by counted
    work and nothing depends on how busy the machine is."""

    def __init__(self, tagger, seconds: float, clock: WorkClock | None = None):
        self.tagger, self.seconds, self.clock, self.calls = tagger, seconds, clock, []

    def predict(self, texts, **kw):
        self.calls.append(len(texts))
        if self.clock is None:
            time.sleep(self.seconds)
        else:
            self.clock.now += self.seconds
        return self.tagger.predict(texts, **kw)


class WorkClock:
    """A clock that moves only when the model works (see SlowTagger)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def slow_down(
    services, seconds: float, chunk_chars: int, clock: WorkClock | None = None
) -> SlowTagger:
    from dataclasses import replace

    model = services.holder.current()
    slow = SlowTagger(model.tagger, seconds, clock)
    services.holder._model = replace(model, tagger=slow)
    services.holder.chunk_chars = chunk_chars
    if clock is not None:
        services.holder.clock = clock
    return slow


def test_the_budget_allows_exactly_the_work_that_fits_in_it(tmp_path, spanful_model):
    app = make_app(tmp_path, spanful_model)
    services = app.extensions["skillloop"]
    try:
        clock = WorkClock()
        slow = slow_down(services, 0.25, chunk_chars=200, clock=clock)
        texts = ["python sql"] * 1000  # 10 characters each: 20 texts a chunk, 50 chunks
        predictions, _ = services.holder.predict(texts, deadline=clock() + 2.0)
        assert slow.calls == [20] * 8  # 2.0 s of budget / 0.25 s a chunk
        assert all(p is not None for p in predictions[:160])
        assert all(p is None for p in predictions[160:])
        # the first chunk is predicted even when the budget is already spent
        slow.calls.clear()
        predictions, _ = services.holder.predict(texts, deadline=clock() - 1.0)
        assert slow.calls == [20] and predictions[19] is not None and predictions[20] is None
    finally:
        services.close()


def test_five_thousand_tasks_are_answered_one_entry_each_within_the_budget(
    tmp_path, spanful_model, caplog
):
    app = make_app(tmp_path, spanful_model, predict_budget_s=2.0, max_tasks=3000)
    services = app.extensions["skillloop"]
    try:
        slow = slow_down(services, 0.25, chunk_chars=200, clock=WorkClock())
        reply = app.test_client().post("/predict", json=predict_body(["python sql"] * 5000))
        results = reply.get_json()["results"]
        assert reply.status_code == 200 and len(results) == 5000  # one entry per task
        assert 1 <= len(slow.calls) <= 8  # no more model work than the budget pays for
        done = [r for r in results if "result" in r]
        assert len(done) == sum(slow.calls)
        assert done and all(len(r["result"]) == 2 for r in done)
        rest = results[len(done) :]
        assert rest and all("result" not in r for r in rest)  # Label Studio stores nothing
        assert rest[0]["not_reached"] == "time budget spent"
        assert rest[-1]["not_reached"] == "past the tasks limit"
        assert "not reached" in caplog.text
    finally:
        services.close()


def test_a_huge_request_cannot_starve_a_small_one(app, services):
    slow = slow_down(services, 0.1, chunk_chars=100)
    big = predict_body(["python " * 600])  # one post, 42 pieces of 0.1 s each: about 4 s
    answers: dict[str, float] = {}

    def send(name, body):
        started = time.perf_counter()
        assert app.test_client().post("/predict", json=body).status_code == 200
        answers[name] = time.perf_counter() - started

    threads = [threading.Thread(target=send, args=("big", big))]
    threads[0].start()
    while not slow.calls:
        time.sleep(0.01)
    threads.append(threading.Thread(target=send, args=("small", predict_body(["sql"]))))
    threads[1].start()
    for thread in threads:
        thread.join(30)
    assert answers["small"] < 1.0 < answers["big"]


def test_a_long_text_predicted_in_pieces_equals_it_predicted_whole(services):
    text = "we need python and sql\nwith aws. " * 40 + "spark " * 30
    model = services.holder.current()
    services.holder.chunk_chars = 10**6
    (whole,), _ = services.holder.predict([text], model)
    services.holder.chunk_chars = 50
    (pieces,), _ = services.holder.predict([text], model)
    assert [s.key() for s in pieces.spans] == [s.key() for s in whole.spans]
    assert all(text[s.start : s.end] == s.text for s in pieces.spans)
    assert pieces.words == whole.words and pieces.probs.shape == whole.probs.shape


def test_a_20_mb_post_is_refused_by_default(client):
    reply = post_raw(client, "/predict", json.dumps(predict_body(["python " * 2_900_000])))
    assert reply.status_code == 413
    assert "larger than 16777216 bytes" in reply.get_json()["error"]


# --- the webhook inbox: a bulk of 5,000 acknowledged at once, stored after ---------------
def bulk(n, first=1000, bad=None):
    items = [
        annotation_event(first + i, first + i, TEXT, [(8, 14, "Technology")]) for i in range(n)
    ]
    if bad is not None:
        items[bad]["annotation"]["result"][0]["value"]["start"] = "8"
    return {
        "action": "ANNOTATIONS_CREATED",
        "annotation": [i["annotation"] for i in items],
        "task": [i["task"] for i in items],
        "project": items[0]["project"],
    }


@both_stores
def test_a_bulk_of_5000_is_acknowledged_within_a_second_then_stored(client, services):
    raw = json.dumps(bulk(5000))
    started = time.perf_counter()
    reply = post_raw(client, "/webhook", raw)
    seconds = time.perf_counter() - started
    assert reply.status_code == 200 and reply.get_json()["status"] == "queued"
    assert seconds < 1.0
    assert services.inbox_reader.wait_idle(120)
    assert len(services.store.annotations.records()) == 5000
    assert services.store.inbox.counts() == {"pending": 0, "stored": 1, "refused": 0}


@both_stores
def test_a_queued_bulk_with_a_bad_item_stores_none_and_says_why(client, services):
    reply = post_raw(client, "/webhook", json.dumps(bulk(400, bad=200)))
    assert reply.get_json()["status"] == "queued"
    assert services.inbox_reader.wait_idle(60)
    assert everything(services.store) == []
    inbox = client.get("/status").get_json()["webhook_inbox"]
    assert inbox["refused"] == 1
    assert "item 201 of 400: annotation 1200" in inbox["refused_last"][0]["error"]
    assert "skillloop_webhook_inbox_refused 1" in client.get("/metrics").get_data(as_text=True)


@both_stores
def test_a_big_deletion_is_queued_and_applied(client, services):
    client.post("/webhook", json=bulk(3, first=10))
    ids = [{"id": i} for i in range(10, 30_010)]  # ~400 kB: over the in-request limit
    reply = client.post("/webhook", json={"action": "ANNOTATIONS_DELETED", "annotations": ids})
    assert reply.get_json()["status"] == "queued"
    assert services.inbox_reader.wait_idle(60)
    assert services.store.annotations.records() == [] and len(everything(services.store)) == 3


@both_stores
def test_a_big_task_deletion_is_queued_and_applied(client, services):
    client.post("/webhook", json=bulk(3, first=10))  # tasks 10, 11, 12
    ids = [{"id": i} for i in range(11, 30_011)]  # ~400 kB: over the in-request limit
    reply = client.post("/webhook", json={"action": "TASKS_DELETED", "tasks": ids})
    assert reply.get_json()["status"] == "queued"
    assert services.inbox_reader.wait_idle(60)
    assert [r.annotation_id for r in services.store.annotations.records()] == [10]
    assert services.store.inbox.counts() == {"pending": 0, "stored": 1, "refused": 0}


@both_stores
def test_a_pending_inbox_row_is_read_at_the_next_start(tmp_path, spanful_model):
    """What kill -9 leaves: a row enqueued (acknowledged) but not read yet."""
    from labeling.project import load_project
    from labeling.store import Store

    first = make_app(tmp_path, spanful_model)
    services = first.extensions["skillloop"]
    services.inbox_reader.stop()  # as if killed before the drain ran
    services.store.inbox.enqueue(json.dumps(bulk(300)).encode())
    where = (services.store.target, services.store.key)
    services.close()
    with Store(*where) as store:
        assert store.inbox.counts()["pending"] == 1 and store.annotations.records() == []
    again = make_app(tmp_path, spanful_model)
    try:
        assert again.extensions["skillloop"].inbox_reader.wait_idle(60)
        assert len(again.extensions["skillloop"].store.annotations.records()) == 300
    finally:
        again.extensions["skillloop"].close()
    assert load_project(tmp_path / "project")


# --- metrics labels and the annotator -----------------------------------------------------
def test_unknown_webhook_actions_are_one_metrics_series(client):
    for i in range(20):
        client.post("/webhook", json={"action": f"MADE_UP_{i}"})
    text = client.get("/metrics").get_data(as_text=True)
    assert 'skillloop_webhook_events_total{action="other"} 20' in text
    assert "MADE_UP" not in text
    assert "ANNOTATION_CREATED" in KNOWN_ACTIONS


def test_the_annotator_is_stored_by_email(client, services):
    assert client.post("/webhook", json=payload("annotation_created")).status_code == 200
    assert services.store.annotations.get(501).annotator == "admin@example.com"
    body = annotation_event(502, 102, TEXT, [], completed_by={"id": 3, "email": "b@x.org"})
    client.post("/webhook", json=body)
    assert services.store.annotations.get(502).annotator == "b@x.org"
    body = annotation_event(503, 103, TEXT, [], completed_by=4)
    body["annotation"].pop("created_username")
    client.post("/webhook", json=body)
    assert services.store.annotations.get(503).annotator == "4"
