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
from labeling.studio.catch_up import (
    gone_annotations,
    held_annotations,
    later,
    listing_complete,
    missed_annotations,
)

TEXT = "we need python and sql"
STUDIO_PROJECT = 7


class FakeStudio:
    """Label Studio's project and task list (fields=all: annotations nested in tasks)."""

    def __init__(self, label_config: str):
        self.label_config = label_config
        self.tasks_by_id: dict[int, dict] = {}
        self.calls = 0
        self.short: set[int] = set()  # tasks listed with one annotation fewer than counted
        self.broken = False
        self.counts: list[int | None] | None = None  # task_number per project() call, if set
        self.unlisted: set[int] = set()  # tasks a short listing leaves out
        self.deleted_meanwhile: set[int] = set()  # listed, then deleted: they answer 404
        self.asked: list[int] = []  # tasks asked for one by one

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
        count: int | None = len(self.tasks_by_id)  # Label Studio's task_number
        if self.counts is not None:  # what a changing (or lying) project answers
            count = self.counts.pop(0)
        return {"id": project_id, "label_config": self.label_config, "task_number": count}

    def delete_task(self, task_id: int) -> None:
        del self.tasks_by_id[task_id]

    def task_exists(self, task_id: int) -> bool | None:
        self.asked.append(task_id)
        return task_id in self.tasks_by_id and task_id not in self.deleted_meanwhile

    def delete(self, annotation_id: int) -> None:
        for task in self.tasks_by_id.values():
            task["annotations"] = [a for a in task["annotations"] if a["id"] != annotation_id]

    def tasks(self, project_id: int) -> list[dict]:
        assert project_id == STUDIO_PROJECT
        self.calls += 1
        listed = copy.deepcopy([t for i, t in self.tasks_by_id.items() if i not in self.unlisted])
        for task in listed:  # Label Studio's own counts of the task's annotations
            cancelled = sum(1 for a in task["annotations"] if a.get("was_cancelled"))
            task.update(cancelled_annotations=cancelled)
            task.update(total_annotations=len(task["annotations"]) - cancelled)
            if task["id"] in self.short:  # a listing that lost one of them
                task["annotations"] = task["annotations"][1:]
        if self.broken:  # a page of the listing failed (the client reads all pages first)
            raise ConnectionError("Label Studio stopped answering mid-listing")
        return listed


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


def test_a_deletion_the_webhooks_missed_is_applied_only_after_a_complete_read(app):
    client, services = app.test_client(), app.extensions["skillloop"]
    studio = FakeStudio(event(1, 101, "")["project"]["label_config"])
    services.catch_up = catch_up = StudioCatchUp(services, lambda: studio)  # what /status shows
    services.studio.remember(STUDIO_PROJECT)
    bodies = [event(i, 100 + i // 10, "2026-11-25T10:00:00Z") for i in (10, 11, 20, 21, 30)]
    for body in bodies:  # tasks 101 (10, 11), 102 (20, 21), 103 (30)
        assert client.post("/webhook", json=body).status_code == 200
        studio.add(body)
    for gone in (11, 21, 30):  # deleted in Label Studio while the webhooks failed
        studio.delete(gone)
    live = lambda: [r.annotation_id for r in services.store.annotations.records()]  # noqa: E731
    before = services.store.annotations.change_counter()

    studio.broken = True  # Label Studio fails: nothing is deleted
    assert not catch_up.run("studio fails")["ok"] and live() == [10, 11, 20, 21, 30]
    studio.broken = False
    studio.short = {102}  # task 102 listed short of its counts: nothing of it is deleted
    outcome = catch_up.run("task 102 read short")
    assert outcome["ok"] and outcome["deleted"] == 2 and outcome["deleted_ids"] == [11, 30]
    assert outcome["tasks_not_read_completely"] == 1 and live() == [10, 20, 21]
    assert services.store.annotations.get(11).deleted  # the store's own tombstone
    assert services.store.annotations.change_counter() == before + 2
    studio.short = set()
    assert catch_up.run("complete")["deleted_ids"] == [21] and live() == [10, 20]
    assert catch_up.run("again")["deleted"] == 0 and live() == [10, 20]

    assert services.metrics.value("annotations_caught_up_deleted_total") == 3
    assert services.metrics.value("annotations_deleted_total") == 3
    status = client.get("/status").get_json()["studio_catch_up"]
    assert status["reason"] == "again" and status["deleted"] == 0
    scrape = client.get("/metrics").get_data(as_text=True)
    assert "skillloop_annotations_caught_up_deleted_total 3" in scrape


def listed(task_id: int, ids: list, total: object, cancelled: object = 0) -> dict:
    task = {"id": task_id, "total_annotations": total, "cancelled_annotations": cancelled}
    return {**task, "annotations": [{"id": i} for i in ids]}


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        (listed(1, [5, 6], 2), {5, 6}),
        (listed(1, [5, 6], 1, 1), {5, 6}),  # one of them skipped
        (listed(1, [], 0), set()),  # all deleted
        (listed(1, [5], 2), None),  # fewer listed than counted: partial
        (listed(1, [5], 1, 1), None),
        (listed(1, [5, 5], 2), None),  # the same one twice is one
        (listed(1, [5, None], 2), None),  # an entry without an id
        (listed(1, [5, 6], None), None),  # no counts: cannot tell
        (listed(1, [5, 6], True), None),
        ({"id": 1, "total_annotations": 0, "cancelled_annotations": 0}, None),  # no list
        ({**listed(1, [], 0), "annotations": None}, None),
    ],
)
def test_a_task_counts_as_read_completely_only_with_all_it_counts(task, expected):
    assert held_annotations(task) == expected


def test_deletions_are_decided_only_for_tasks_read_completely():
    live = {5: 1, 6: 1, 7: 2, 8: 3, 9: 4}  # annotation id -> task id, live in the store
    held = {1: {5}, 2: set(), 3: {8}}  # task 4 missing from the listing
    assert gone_annotations(live, held) == [6, 7]
    assert gone_annotations(live, held, partial={1, 2}) == []  # read short once: nothing
    assert gone_annotations(live, {}) == [] and gone_annotations({}, held) == []


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


def test_annotations_of_tasks_deleted_in_studio_go_only_after_a_complete_listing(app):
    client, services = app.test_client(), app.extensions["skillloop"]
    studio = FakeStudio(event(1, 101, "")["project"]["label_config"])
    services.catch_up = catch_up = StudioCatchUp(services, lambda: studio)
    services.studio.remember(STUDIO_PROJECT)
    for body in [event(i, 100 + i // 10, "2026-11-25T10:00:00Z") for i in (10, 11, 20, 30)]:
        assert client.post("/webhook", json=body).status_code == 200  # tasks 101, 102, 103
        studio.add(body)
    studio.delete_task(101)  # deleted in Label Studio while its TASKS_DELETED failed
    live = lambda: [r.annotation_id for r in services.store.annotations.records()]  # noqa: E731
    before = services.store.annotations.change_counter()

    studio.unlisted = {103}  # a listing one task short of the count: nothing of 101 goes
    outcome = catch_up.run("a short listing")
    assert outcome["ok"] and outcome["deleted"] == 0 and outcome["tasks_deleted"] == 0
    assert outcome["tasks_unlisted_not_decided"] == 2 and live() == [10, 11, 20, 30]
    studio.unlisted = set()
    studio.counts = [2, 3]  # a task created while the listing ran: the counts disagree
    assert catch_up.run("counts changed")["deleted"] == 0 and live() == [10, 11, 20, 30]
    studio.counts = [None, None]  # a project answer without a count
    assert catch_up.run("no count")["tasks_unlisted_not_decided"] == 1
    assert services.store.annotations.change_counter() == before

    assert studio.asked == []  # no listing known complete: no task asked for

    studio.counts = None  # 2 tasks counted before and after, 2 listed: complete
    outcome = catch_up.run("complete")
    assert outcome["deleted"] == 2 and outcome["deleted_ids"] == [10, 11]
    assert outcome["deleted_with_tasks"] == 2 and outcome["tasks_deleted"] == 1
    assert studio.asked == [101]  # and it answered 404
    assert "tasks_unlisted_not_decided" not in outcome and live() == [20, 30]
    assert services.store.annotations.get(10).deleted  # the store's own tombstone
    assert services.store.annotations.change_counter() == before + 2
    again = catch_up.run("again")
    assert again["deleted"] == 0 and again["tasks_deleted"] == 0 and live() == [20, 30]

    assert services.metrics.value("annotations_caught_up_task_deleted_total") == 2
    assert services.metrics.value("annotations_caught_up_deleted_total") == 2
    status = client.get("/status").get_json()["studio_catch_up"]
    assert status["reason"] == "again" and status["deleted_with_tasks"] == 0
    scrape = client.get("/metrics").get_data(as_text=True)
    assert "skillloop_annotations_caught_up_task_deleted_total 2" in scrape


def test_a_task_a_shifted_page_skipped_is_asked_for_and_kept(app):
    """What the counts cannot see: while the listing runs, task 101 (already listed) is
    deleted and task 104 created; the deletion shifts a page, so 102 is skipped. Three
    tasks counted before and after, three listed: complete by the counts, yet 102 is
    there when asked for, and keeps its annotation."""
    client, services = app.test_client(), app.extensions["skillloop"]
    studio = FakeStudio(event(1, 101, "")["project"]["label_config"])
    catch_up = StudioCatchUp(services, lambda: studio)
    services.studio.remember(STUDIO_PROJECT)
    for body in [event(i, 100 + i // 10, "2026-11-25T10:00:00Z") for i in (10, 20, 30)]:
        assert client.post("/webhook", json=body).status_code == 200
        studio.add(body)
    studio.add(event(40, 104, "2026-11-25T10:00:00Z"))
    studio.counts, studio.unlisted, studio.deleted_meanwhile = [3, 3], {102}, {101}
    outcome = catch_up.run("a shifted page")
    assert outcome["ok"] and outcome["deleted"] == 0 and outcome["tasks_deleted"] == 0
    assert outcome["tasks_unlisted_not_decided"] == 1 and studio.asked == [102]
    assert [r.annotation_id for r in services.store.annotations.records()] == [10, 20, 30, 40]


@pytest.mark.parametrize(
    ("before", "after", "listed", "expected"),
    [
        (3, 3, 3, True),
        (0, 0, 0, True),  # every task deleted
        (3, 3, 2, False),  # a task missing from the listing
        (3, 4, 4, False),  # a task created while listing
        (4, 3, 3, False),  # a task deleted while listing
        (None, 3, 3, False),
        (3, None, 3, False),
        (True, True, 1, False),
        ("3", "3", 3, False),
        (-1, -1, -1, False),
    ],
)
def test_a_listing_is_complete_only_when_both_counts_equal_it(before, after, listed, expected):
    assert listing_complete(before, after, listed) is expected


class Listing:
    """A TaskSource answering fixed tasks and a task count per project() call."""

    def __init__(self, tasks: list[dict], counts: list):
        self.listed, self.counts = tasks, counts

    def project(self, project_id: int) -> dict:
        return {"label_config": "<View/>", "task_number": self.counts.pop(0)}

    def tasks(self, project_id: int) -> list[dict]:
        return self.listed

    def task_exists(self, task_id: int) -> bool | None:
        return None if task_id == 3 else False  # task 3: Label Studio answers a 500


def test_a_task_without_an_id_makes_a_listing_unable_to_prove_an_absence():
    live = {5: 1, 7: 2}  # annotation 7's task 2 is not listed
    task = listed(1, [5], 1)
    gone = missed_annotations(Listing([task], [1, 1]), 7, {}, live)
    assert gone.gone_with_tasks == [7] and gone.gone_tasks == 1
    unnamed = missed_annotations(Listing([task, {"id": None}], [2, 2]), 7, {}, live)
    assert unnamed.gone_with_tasks == [] and unnamed.unlisted_tasks == 1
    twice = missed_annotations(Listing([task, task], [2, 2]), 7, {}, live)  # one task twice
    assert twice.gone_with_tasks == [] and twice.unlisted_tasks == 1
    unsure = missed_annotations(Listing([task], [1, 1]), 7, {}, {**live, 8: 3})
    assert unsure.gone_with_tasks == [7] and unsure.unlisted_tasks == 1  # 3 did not say 404
    nothing_unlisted = Listing([task], [1])  # the count is not read again: nothing to decide
    assert missed_annotations(nothing_unlisted, 7, {}, {5: 1}).unlisted_tasks == 0
