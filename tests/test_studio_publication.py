"""Several processes serve one project (gunicorn workers), each holding its own model and
noticing a promotion on its own: Label Studio is pointed at each promoted version exactly
once, and never back at a version that no longer serves."""

from __future__ import annotations

import threading

from backend.service.model_holder import ServingModel
from backend.service.studio_ledger import PublicationLedger
from backend.service.studio_sync import StudioConnection
from labeling.state import ProjectState


class RecordingStudio:
    """Stands in for Label Studio: records publications (slowly, so that workers overlap)."""

    def __init__(self, calls: list):
        self.calls = calls

    def publish_model(self, project_id, version, sampling=True, remove_older=True):
        self.calls.append((project_id, version))
        threading.Event().wait(0.05)
        return 0


def workers(state, n: int, serving: list, calls: list) -> list[StudioConnection]:
    connections = []
    for _ in range(n):
        project_state = ProjectState(state)
        connection = StudioConnection(
            project_state.studio_file,
            PublicationLedger(project_state.studio_publish_lock, project_state.studio_published),
            "http://ls.test",
            "token",
            serving_version=lambda: serving[-1],
        )
        connection.project_id = 7
        connection._client = RecordingStudio(calls)  # type: ignore[assignment]
        connections.append(connection)
    return connections


def model(version: str) -> ServingModel:
    return ServingModel(tagger=object(), version=version, source="registry")  # type: ignore[arg-type]


def refresh_all(connections: list[StudioConnection], version: str) -> None:
    threads = [threading.Thread(target=w.refresh, args=(model(version),)) for w in connections]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)


def test_three_workers_publish_each_promotion_once(tmp_path):
    calls: list = []
    serving = ["v1"]
    connections = workers(tmp_path, 3, serving, calls)
    refresh_all(connections, "v1")
    serving.append("v2")
    refresh_all(connections, "v2")
    assert calls == [(7, "v1"), (7, "v2")]
    assert all(w.last_refresh and w.last_refresh["ok"] for w in connections)
    assert sum("skipped" in w.last_refresh for w in connections) == 2


def test_a_late_worker_never_publishes_an_older_version(tmp_path):
    calls: list = []
    serving = ["v1", "v2"]  # v2 was promoted while a worker still swapped to v1
    early, late = workers(tmp_path, 2, serving, calls)
    early.refresh(model("v2"))
    late.refresh(model("v1"))
    assert calls == [(7, "v2")]
    assert "v2 serves now" in late.last_refresh["skipped"]
    # a rollback makes v1 the serving version again: then it is published
    serving.append("v1")
    late.refresh(model("v1"))
    assert calls == [(7, "v2"), (7, "v1")]
