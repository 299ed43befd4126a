"""Annotations whose webhooks failed, fetched back from Label Studio (backend/service/
catch_up.py) against a stand-in for Label Studio's API that answers as 1.23.2 does: the
store gets exactly the annotations it lacks or holds an older version of, read as their
webhooks would have been; a deletion is never undone, an unreadable annotation is left
out with its reason, and a second catch-up changes nothing. The catch-up with a real
Label Studio and a real PostgreSQL outage is in tests/test_studio_catch_up.py."""

from __future__ import annotations

import copy

import pytest
from service_helpers import annotation_event, make_app

from backend.service.catch_up import StudioCatchUp
from labeling.studio.catch_up import later

TEXT = "we need python and sql"
STUDIO_PROJECT = 7


class FakeStudio:
    """Label Studio's project and task list (fields=all: annotations nested in tasks)."""

    def __init__(self, label_config: str):
        self.label_config = label_config
        self.tasks_by_id: dict[int, dict] = {}
        self.calls = 0

    def add(self, event: dict) -> None:
        task = self.tasks_by_id.setdefault(
            event["task"]["id"], {**copy.deepcopy(event["task"]), "annotations": []}
        )
        task["annotations"] = [
            a for a in task["annotations"] if a["id"] != event["annotation"]["id"]
        ]
        task["annotations"].append(copy.deepcopy(event["annotation"]))
        task["predictions"] = [{"id": 1, "result": [], "model_version": "v0001"}]

    def project(self, project_id: int) -> dict:
        assert project_id == STUDIO_PROJECT
        return {"id": project_id, "label_config": self.label_config}

    def tasks(self, project_id: int) -> list[dict]:
        assert project_id == STUDIO_PROJECT
        self.calls += 1
        return copy.deepcopy(list(self.tasks_by_id.values()))


@pytest.fixture
def app(tmp_path, spanful_model):
    app = make_app(
        tmp_path,
        spanful_model,
        label_studio_url="http://studio.invalid:1",
        label_studio_api_key="token",
    )
    yield app
    app.extensions["skillloop"].close()


def event(annotation_id: int, task_id: int, updated: str, label: str = "Technology") -> dict:
    body = annotation_event(annotation_id, task_id, TEXT, [(8, 14, label)])
    body["annotation"].update(updated_at=updated, project=STUDIO_PROJECT)
    body["project"]["id"] = body["task"]["project"] = STUDIO_PROJECT
    return body


def test_the_catch_up_stores_what_webhooks_missed_and_nothing_twice(app):
    client, services = app.test_client(), app.extensions["skillloop"]
    assert isinstance(services.catch_up, StudioCatchUp)  # wired because Label Studio is set
    assert services.store.db.on_back is not None and services.worker.before_round is not None
    studio = FakeStudio(event(1, 101, "")["project"]["label_config"])
    catch_up = StudioCatchUp(services, lambda: studio)

    services.studio.remember(STUDIO_PROJECT)
    delivered = [event(1, 101, "2026-11-25T10:00:00Z"), event(4, 104, "2026-11-25T10:00:00Z")]
    delivered.append(event(6, 106, "2026-11-25T10:00:00Z"))
    for body in delivered:  # webhooks that arrived
        assert client.post("/webhook", json=body).status_code == 200
        studio.add(body)
    deletion = {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 6}], "project": {"id": 7}}
    assert client.post("/webhook", json=deletion).status_code == 200
    before = services.store.annotations.change_counter()

    # what annotators did while the store was away: in Label Studio only
    studio.add(event(2, 102, "2026-11-25T10:01:00Z"))  # new
    studio.add(event(4, 104, "2026-11-25T10:02:00Z", label="Soft"))  # updated
    studio.add(event(5, 105, "2026-11-25T10:03:00Z", label="Nonsense"))  # unreadable
    outcome = catch_up.run("a test")

    assert outcome["ok"] and outcome["seen"] == 5 and outcome["stored"] == 2
    assert outcome["annotation_ids"] == [2, 4]
    assert len(outcome["refused"]) == 1 and "Nonsense" in outcome["refused"][0]
    records = {r.annotation_id: r for r in services.store.annotations.records(include_deleted=True)}
    assert sorted(records) == [1, 2, 4, 6]
    assert records[6].deleted  # deleted here: Label Studio's copy does not bring it back
    assert [s.label for s in records[4].spans] == ["Soft"]  # the newer version
    assert records[2].project == "7" and records[2].text == TEXT
    assert records[2].annotator == "admin@example.com"  # read as its webhook would be
    assert "predictions" not in records[2].raw["task"]  # the task as its webhook sends it
    assert services.store.annotations.change_counter() == before + 2
    assert services.metrics.value("annotations_caught_up_total") == 2

    again = catch_up.run("again")
    assert again["ok"] and again["stored"] == 0 and "refused" in again
    assert services.store.annotations.change_counter() == before + 2


def test_without_a_connected_project_or_with_studio_away_the_catch_up_says_so(app, caplog):
    services = app.extensions["skillloop"]

    def away():
        raise ConnectionError("Label Studio is not answering")

    catch_up = StudioCatchUp(services, away)
    assert catch_up.run("no project") == {
        **catch_up.last,
        "ok": True,
        "stored": 0,
        "note": "no Label Studio project connected yet",
    }
    services.studio.remember(STUDIO_PROJECT)
    outcome = catch_up.run("studio away")
    assert not outcome["ok"] and "not answering" in outcome["error"]
    assert "Traceback" not in caplog.text and "failed: ConnectionError" in caplog.text
    assert app.test_client().get("/status").get_json()["studio_catch_up"] is None


@pytest.mark.parametrize(
    ("theirs", "ours", "expected"),
    [
        ("2026-11-25T10:00:01.000000Z", "2026-11-25T10:00:00.999999Z", True),
        ("2026-11-25T10:00:00Z", "2026-11-25T10:00:00.000000Z", False),
        ("2026-11-25T11:00:00+01:00", "2026-11-25T10:00:00Z", False),
        ("not a time", "2026-11-25T10:00:00Z", False),
        (None, "2026-11-25T10:00:00Z", False),
    ],
)
def test_later_compares_instants_not_strings(theirs, ours, expected):
    assert later(theirs, ours) is expected
