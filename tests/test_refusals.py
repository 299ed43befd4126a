"""A refused request changes nothing, and a body is never acknowledged cut: project ids
parsed strictly, the Label Studio project that updates go to kept when /setup or a
deletion is refused, a chunked body past MAX_CONTENT_LENGTH refused before any route."""

from __future__ import annotations

import io
import json

import pytest
from service_helpers import annotation_event, make_app, payload, predict_body

from backend.service.requests import StudioProjectKey

LIMIT = 4096


@pytest.mark.parametrize(
    "spelling", ["+11", "1_1", "\u0661\u0661", "011", "-5", "-5.1", "11.", "1.5e308", " 11", "0"]
)
def test_project_ids_have_one_spelling(spelling):
    assert StudioProjectKey.of(spelling) is None
    assert StudioProjectKey.of({"id": spelling}) is None


def test_the_spellings_label_studio_sends_are_read():
    assert StudioProjectKey.of("11.1764079200") == StudioProjectKey(11, 1764079200)
    assert StudioProjectKey.of(11) == StudioProjectKey.of("11") == StudioProjectKey(11)
    assert StudioProjectKey.of({"id": 11, "title": "x"}) == StudioProjectKey(11)
    assert StudioProjectKey.of(1.5) is None and StudioProjectKey.of(True) is None


@pytest.fixture
def app(tmp_path, spanful_model):
    app = make_app(tmp_path, spanful_model, max_content_length=LIMIT)
    yield app
    app.extensions["skillloop"].close()


def test_a_refused_setup_keeps_the_project_updates_go_to(app):
    client, studio = app.test_client(), app.extensions["skillloop"].studio
    assert client.post("/setup", json=payload("setup")).status_code == 200
    assert studio.project_id == 7
    refused = payload("setup")
    refused["project"] = "9.1700000000"
    refused["schema"] = '<View><Text name="text" value="$text"/></View>'  # nothing to serve
    assert client.post("/setup", json=refused).status_code == 422
    assert studio.project_id == 7
    assert json.loads(studio.path.read_text())["project_id"] == 7


def test_a_refused_deletion_keeps_the_project_updates_go_to(app):
    client, studio = app.test_client(), app.extensions["skillloop"].studio
    assert client.post("/setup", json=payload("setup")).status_code == 200
    deletion = payload("annotations_deleted")
    deletion["project"] = {"id": 9}
    deletion["annotations"] = "not a list"
    assert client.post("/webhook", json=deletion).status_code == 422
    assert studio.project_id == 7
    odd = {**payload("annotations_deleted"), "project": "-5.1"}
    client.post("/webhook", json=odd)
    assert studio.project_id == 7  # not a project id at all: nothing remembered


def chunked(client, path: str, body: bytes):
    """POST without a Content-Length, as a chunked request reaches the application."""
    return client.post(
        path,
        input_stream=io.BytesIO(body),
        content_type="application/json",
        environ_overrides={"wsgi.input_terminated": True},
    )


def padded_event(size: int) -> bytes:
    event = annotation_event(7, 70, "we need teamwork", [(8, 16, "Soft")])
    event["padding"] = ""
    raw = json.dumps(event)
    event["padding"] = "x" * (size - len(raw))
    return json.dumps(event).encode()


def test_a_chunked_body_past_the_limit_is_refused_and_nothing_is_stored(app):
    client, services = app.test_client(), app.extensions["skillloop"]
    reply = chunked(client, "/webhook", padded_event(LIMIT + 10))
    assert reply.status_code == 413
    assert "larger than" in reply.get_json()["error"]
    assert services.store.annotations.records() == []
    assert services.store.inbox.counts()["pending"] == 0
    too_big = json.dumps(predict_body(["python " * LIMIT])).encode()
    assert chunked(client, "/predict", too_big).status_code == 413  # not "invalid JSON"


def test_a_chunked_body_within_the_limit_is_read_whole(app):
    client, services = app.test_client(), app.extensions["skillloop"]
    exactly = padded_event(LIMIT)
    assert len(exactly) == LIMIT
    reply = chunked(client, "/webhook", exactly)
    assert reply.status_code == 200, reply.get_json()
    assert [r.annotation_id for r in services.store.annotations.records()] == [7]
