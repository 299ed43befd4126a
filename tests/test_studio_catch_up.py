"""Nothing an annotator submits while the annotation database is away goes missing: a real
Label Studio, a real `skillloop serve` on a real PostgreSQL of the test's own. The
database is stopped, an annotator submits a new annotation, changes an old one, deletes
another and deletes a task that holds a fourth in Label Studio (their webhooks get 503s,
and Label Studio never sends them again), the database is started again: the service's
catch-up fetches the new and the changed one from Label Studio and marks the deleted one
and the deleted task's one deleted, and the next training round trains on the first two
only. Before the outage, a task deleted in Label Studio has its annotation marked deleted
by its TASKS_DELETED webhook."""

from __future__ import annotations

import json
import os
import urllib.request

import pytest
from sample_project import PLAIN_CONFIG
from service_helpers import write_project
from studio_helpers import get_json, serve_backend, wait_for, wait_published

from labeling.state import ProjectState

pytestmark = [pytest.mark.studio, pytest.mark.slow]

# posts the held-out split trains on (a round whose posts are all held out is skipped)
TEXTS = [
    "senior data engineer with spark and aws",
    "machine learning with scala",
    "excel reports for the business",
    "docker and kubernetes on the platform team",
    "tableau dashboards for finance",
]


def regions(text: str, phrase: str, label: str) -> list[dict]:
    start = text.index(phrase)
    value = {"start": start, "end": start + len(phrase), "text": phrase, "labels": [label]}
    return [{"from_name": "label", "to_name": "text", "type": "labels", "value": value}]


def stored(state: ProjectState) -> dict[int, list[str]]:
    """The store's annotations as the test reads them itself: id -> span labels."""
    with state.store() as store:
        return {r.annotation_id: [s.label for s in r.spans] for r in store.annotations.records()}


def test_annotations_made_while_the_database_was_away_reach_the_next_round(
    studio, tmp_path, tiny_reference_model, own_postgres, monkeypatch
):
    from backend.loop.heldout import is_heldout
    from labeling.studio.client import StudioClient

    assert not any(is_heldout(text, 0.2) for text in TEXTS)  # write_project's share

    url = own_postgres.create_database("catchup")
    monkeypatch.setenv("SKILLLOOP_DATABASE_URL", url)  # the served backend's store
    project_dir = write_project(tmp_path / "project", tiny_reference_model, name="catchup")
    client = StudioClient(studio.url, studio.token)
    ref = client.ensure_project(f"skillloop catch-up {os.getpid()}", PLAIN_CONFIG)
    task_ids = client.import_tasks(ref.id, [{"text": t} for t in TEXTS]).task_ids
    with serve_backend(project_dir, tmp_path / "state", studio) as backend:
        state = ProjectState(tmp_path / "state" / "catchup", database_url=url)
        client.connect_backend(ref.id, backend, "skillloop")
        wait_published(backend)
        first = client.annotate(task_ids[0], regions(TEXTS[0], "spark", "Technology"))
        doomed = client.annotate(task_ids[2], regions(TEXTS[2], "excel", "Technology"))
        in_task = client.annotate(task_ids[3], regions(TEXTS[3], "docker", "Technology"))
        webhooked = client.annotate(task_ids[4], regions(TEXTS[4], "tableau", "Technology"))
        marks = {first, doomed, in_task, webhooked}
        wait_for("the first webhooks", lambda: marks <= set(stored(state)), 30)
        client.ls.tasks.delete(id=task_ids[4])  # its TASKS_DELETED webhook arrives
        wait_for("the task deletion's webhook", lambda: webhooked not in stored(state), 30)

        own_postgres.halt()
        new = client.annotate(task_ids[1], regions(TEXTS[1], "scala", "Technology"))
        client.ls.annotations.update(id=first, result=regions(TEXTS[0], "aws", "Soft"))
        client.ls.annotations.delete(id=doomed)
        client.ls.tasks.delete(id=task_ids[3])  # and with it the annotation `in_task`
        own_postgres.resume()
        # the webhooks of all four failed: the store holds the first versions
        held = {first: ["Technology"], doomed: ["Technology"], in_task: ["Technology"]}
        assert stored(state) == held

        # the service notices the database is back at its next store operation
        assert get_json(f"{backend}/status") is not None
        back = {first: ["Soft"], new: ["Technology"]}
        wait_for("the catch-up after the outage", lambda: stored(state) == back, 60)
        with state.store() as store:
            assert store.annotations.get(doomed).deleted  # tombstoned, as its webhook would
            assert store.annotations.get(in_task).deleted  # its task is no longer listed
            assert store.annotations.get(webhooked).deleted  # TASKS_DELETED's tombstone
        catch_up = get_json(f"{backend}/status")["studio_catch_up"]
        assert catch_up["ok"] and catch_up["reason"] == "the annotation database is back"
        assert sorted(catch_up["annotation_ids"]) == sorted([first, new])
        assert catch_up["deleted"] == 2 and catch_up["deleted_ids"] == sorted([doomed, in_task])
        assert catch_up["deleted_with_tasks"] == 1 and catch_up["tasks_deleted"] == 1
        with urllib.request.urlopen(f"{backend}/metrics", timeout=5) as reply:
            scrape = reply.read().decode()
        assert "skillloop_annotations_caught_up_deleted_total 2" in scrape
        assert "skillloop_annotations_caught_up_task_deleted_total 1" in scrape

        client.train(ref.id)  # Start Training: the round's data holds both
        rounds = state.rounds_dir
        plans = wait_for("the round's plan", lambda: list(rounds.glob("*/plan.json")), 120)
        folder = plans[0].parent
        used = {}
        for part in ("train.jsonl", "heldout.jsonl"):
            for line in (folder / part).read_text().splitlines():
                doc = json.loads(line)
                used[doc["meta"]["annotation_id"]] = sorted(s["label"] for s in doc["spans"])
        assert used == {first: ["Soft"], new: ["Technology"]}  # the deleted one is not there
        status = get_json(f"{backend}/status")["studio_catch_up"]
        assert status["reason"] == "a training round starts" and status["stored"] == 0
        assert status["deleted"] == 0
