""" "Label All Tasks" the way an annotator meets it: a Label Studio project connected to
`skillloop serve` by hand (its ML backend added as Settings -> Model does, nothing else
arranged by skillloop's tools), opened in headless Chromium, the button pressed, and the
post the editor opened read from the page. It must be the post `skillloop select` ranks
first, before and after a promotion; a skip or a task left open must not keep the top
post from the others.

What makes it so (labeling/studio/queue.py, backend/service/studio_sync.py
`StudioConnection`): on /setup the backend publishes its model in Label Studio
(predictions, the project's model_version, Uncertainty sampling, which the button's plain
next-task call follows) and makes its own Data Manager tab, ordered by prediction score,
the first (the queue of "Label Tasks As Displayed" and of a selection); after every
promotion again. Label Studio's task lock is what a left task holds: Label Studio started
by skillloop sets TASK_LOCK_TTL (15 minutes; 24 h is Label Studio's default), the
`studio` fixture conftest.STUDIO_LOCK_TTL_S (20 s).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import STUDIO_LOCK_TTL_S
from service_helpers import LABELS, PLAIN_CONFIG, keyword_model, write_project
from studio_helpers import serve_backend, signup_session, wait_for

from labeling.studio.server import REPO_ROOT

pytestmark = [pytest.mark.studio, pytest.mark.slow]

# Ids in import order: the lowest task id is the first post, which no model ranks first.
POSTS = {
    "p1": "we need python and sql experience for the data team",
    "p2": "senior data engineer with spark and aws in the cloud",
    "p3": "machine learning experience with python or scala",
    "p4": "junior analyst for excel analysis",
    "p5": "docker and kubernetes for the data scientist team with java",
    "p6": "communication skills and work with the team",
}
TAGS = {
    word: "B-TECHNOLOGY"
    for word in ("python", "sql", "spark", "aws", "scala", "excel", "docker", "kubernetes", "java")
}
# Each model doubts two words (a weaker pointer: its tag still wins, with less confidence),
# so it ranks their posts first and second; the promoted model doubts other posts.
FIRST_DOUBTS = {"docker": 0.01, "excel": 0.05}
PROMOTED_DOUBTS = {"scala": 0.01, "aws": 0.05}


@pytest.fixture(scope="module")
def browser_available() -> None:
    from labeling.studio.browser import INSTALL_HINT, find_chromium

    if find_chromium() is None:
        pytest.skip(f"chromium not found on PATH: {INSTALL_HINT}")


def _project(folder: Path, base: Path) -> Path:
    write_project(folder, base, name="button")
    with (folder / "posts.jsonl").open("w") as out:
        for post_id, text in POSTS.items():
            out.write(json.dumps({"id": post_id, "text": text}) + "\n")
    with (folder / "project.toml").open("a") as toml:
        toml.write('\n[data]\nposts = "posts.jsonl"\n')
    return folder


def _promote(registry, model: Path, name: str) -> str:
    """Register a model and serve it, as a round's promotion does (the backend's registry
    watcher loads it and its swap hook publishes it in Label Studio)."""
    incoming = registry.root / ".incoming" / name
    shutil.copytree(model, incoming)
    version = registry.add(incoming, labels=LABELS).version
    registry.promote(version, "test")
    return version


def _select(project_dir: Path, state: Path) -> list[str]:
    """`skillloop select` from a shell: the post ids, most useful first."""
    reply = subprocess.run(
        [sys.executable, "-m", "backend.cli", "select", "--project", str(project_dir)]
        + ["--state-dir", str(state), "--json", "-n", str(len(POSTS))],
        cwd=REPO_ROOT,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert reply.returncode == 0, reply.stderr
    return [row["id"] for row in json.loads(reply.stdout)["batch"]]


def _published(client, project_id: int, version: str):
    """Label Studio arranged for `version`: its predictions on every task, the project's
    model_version and sampling, skillloop's tab the first."""
    from labeling.studio.client import UNCERTAINTY_SAMPLING
    from labeling.studio.queue import RANKED_TAB_TITLE, views

    info = client.project(project_id)
    if info["model_version"] != version or info["sampling"] != UNCERTAINTY_SAMPLING:
        return None
    tasks = client.tasks(project_id)
    if not all(any(p["model_version"] == version for p in t["predictions"]) for t in tasks):
        return None
    tabs = views(client, project_id)
    return tabs if tabs and tabs[0]["data"]["title"] == RANKED_TAB_TITLE else None


def test_label_all_tasks_serves_selects_first_post_before_and_after_a_promotion(
    browser_available, studio, tmp_path
):
    from labeling.state import ProjectState
    from labeling.studio.browser import chromium, label_all_tasks, skip_task
    from labeling.studio.client import StudioClient
    from labeling.studio.login import login_session
    from labeling.studio.queue import RANKED_TAB_TITLE, views

    first_model = keyword_model(tmp_path / "first", TAGS, FIRST_DOUBTS)
    promoted_model = keyword_model(tmp_path / "promoted", TAGS, PROMOTED_DOUBTS)
    project_dir = _project(tmp_path / "project", first_model)
    state = tmp_path / "state"
    registry = ProjectState(state / "button").registry()
    first_version = _promote(registry, first_model, "first")
    post_of = {text: post_id for post_id, text in POSTS.items()}

    client = StudioClient(studio.url, studio.token)
    ref = client.ensure_project(f"skillloop button {os.getpid()}", PLAIN_CONFIG)
    client.import_tasks(ref.id, [{"text": t, "post_id": i} for i, t in POSTS.items()])
    admin = login_session(studio.url, studio.username, studio.password).cookies.get_dict()
    with chromium(admin, studio.url) as tools:  # looked at before connecting: its own tab
        tools.call("Page.navigate", url=f"{studio.url}/projects/{ref.id}/data")
        (default_tab,) = wait_for("the Data Manager's own tab", lambda: views(client, ref.id), 60)

    with serve_backend(project_dir, state, studio) as backend_url:
        client.connect_backend(ref.id, backend_url, "my model")  # Settings -> Model
        tabs = wait_for(
            f"Label Studio arranged for {first_version}",
            lambda: _published(client, ref.id, first_version),
            120,
        )
        assert [t["data"]["title"] for t in tabs] == [RANKED_TAB_TITLE, "Default"]
        assert tabs[1]["id"] == default_tab["id"]  # the user's own tab kept, second
        ranked = _select(project_dir, state)
        assert ranked[0] != "p1" and ranked[0] != ranked[1]  # not what id order serves

        with chromium(admin, studio.url) as tools:
            assert post_of[label_all_tasks(tools, studio.url, ref.id)] == ranked[0]
            # a skip: the next most useful post, and the skipped one stays the others' top
            assert post_of[skip_task(tools)] == ranked[1]
        annotator = signup_session(studio, "annotator@example.com", "annotator-pass-1")
        with chromium(annotator.cookies.get_dict(), studio.url) as tools:
            assert post_of[label_all_tasks(tools, studio.url, ref.id)] == ranked[0]
            shown = label_all_tasks(tools, studio.url, ref.id, as_displayed=True)
            assert post_of[shown] == ranked[0]  # the first tab's own queue: the same order
            left_at = time.monotonic()  # the annotator leaves it open: a task lock

        promoted_version = _promote(registry, promoted_model, "promoted")
        wait_for(
            f"Label Studio arranged for {promoted_version}",
            lambda: _published(client, ref.id, promoted_version),
            120,
        )
        reranked = _select(project_dir, state)
        assert reranked[0] not in (ranked[0], "p1")
        assert len(views(client, ref.id)) == 2  # the same tab, updated: no new one
        # the lock of the post left open lasts Label Studio's TASK_LOCK_TTL, not 24 h
        time.sleep(max(0.0, left_at + STUDIO_LOCK_TTL_S + 1 - time.monotonic()))
        with chromium(annotator.cookies.get_dict(), studio.url) as tools:
            assert post_of[label_all_tasks(tools, studio.url, ref.id)] == reranked[0]
            shown = label_all_tasks(tools, studio.url, ref.id, as_displayed=True)
            assert post_of[shown] == reranked[0]
