"""Rounds interrupted with their process (kill -9): found on the worker's next start and
logged once each; a complete candidate is gated then (backend.loop.recovery)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from backend.loop import rounds
from backend.loop.child import write_json
from backend.loop.worker import TrainingWorker
from labeling.state import ProjectState
from tests.test_worker import annotate, make_project, posts
from training.registry import Registry

FIRST_MODEL = {
    "candidate": {"f1": 0.5, "metrics": {"documents": 2}, "per_post": [[1, 0, 1], [1, 1, 0]]},
    "baseline": {"version": "base", "error": "no head for these labels"},
    "timings": {"train_s": 1.0, "eval_s": 0.1},
}


def planned(tmp_path: Path):
    project = make_project(tmp_path, tmp_path)
    state = tmp_path / "state"
    annotate(state, posts(2, 3))
    plan = rounds.plan_round(project, ProjectState(state), "studio")
    assert isinstance(plan, rounds.RoundPlan)
    return project, state, plan


def stub_checkpoint(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    return folder


def started(project, state: Path, promoted: list) -> None:
    worker = TrainingWorker(
        project, ProjectState(state), on_promoted=promoted.append, poll_seconds=0.05
    )
    worker.start()
    worker.stop()


def test_a_round_killed_while_training_is_logged_as_interrupted(tmp_path):
    project, state, plan = planned(tmp_path)
    write_json(plan.folder / "progress.json", {"phase": "training", "progress": 0.3})
    promoted: list = []
    started(project, state, promoted)
    log = rounds.read_rounds(ProjectState(state))
    assert [(r["round_id"], r["status"]) for r in log] == [(plan.round_id, "interrupted")]
    assert log[0]["reason"].startswith("interrupted during training")
    assert log[0]["trigger"] == "studio" and log[0]["train_documents"] == plan.train_documents
    assert log[0]["change_counter"] == plan.snapshot["change_counter"]
    progress = json.loads((plan.folder / "progress.json").read_text())
    assert progress["phase"] == "interrupted" and not promoted
    started(project, state, promoted)  # logged once, not at every start
    assert len(rounds.read_rounds(ProjectState(state))) == 1


def test_a_complete_candidate_left_in_incoming_is_gated_on_start(tmp_path):
    project, state, plan = planned(tmp_path)
    stub_checkpoint(plan.spec.out_dir)
    write_json(plan.folder / "result.json", FIRST_MODEL)
    promoted: list = []
    started(project, state, promoted)
    log = rounds.read_rounds(ProjectState(state))
    assert [(r["round_id"], r["status"], r["version"]) for r in log] == [
        (plan.round_id, "promoted", "v0001")
    ]
    assert log[0]["reason"].startswith("gated after a restart (the round was interrupted)")
    assert [v.version for v in promoted] == ["v0001"]
    assert Registry(state / "models").serving().round_id == plan.round_id


def test_a_registered_candidate_never_judged_is_gated_on_start(tmp_path):
    """Killed between registering v0001 and the gate: it stayed "candidate" forever."""
    project, state, plan = planned(tmp_path)
    write_json(plan.folder / "result.json", FIRST_MODEL)
    registry = Registry(state / "models")
    registry.add(stub_checkpoint(tmp_path / "ckpt"), round_id=plan.round_id, trigger="studio")
    promoted: list = []
    started(project, state, promoted)
    assert registry.get("v0001").status == "serving" and [v.version for v in promoted] == ["v0001"]
    log = rounds.read_rounds(ProjectState(state))
    assert [(r["round_id"], r["status"]) for r in log] == [(plan.round_id, "promoted")]
    assert "gated after a restart" in log[0]["reason"] and log[0]["gate"]["decision"]


def test_a_candidate_without_its_result_is_abandoned(tmp_path):
    project = make_project(tmp_path, tmp_path)
    state = tmp_path / "state"
    registry = Registry(state / "models")
    registry.add(stub_checkpoint(tmp_path / "ckpt"), round_id="r-gone", trigger="auto")
    started(project, state, [])
    version = registry.get("v0001")
    assert version.status == "refused" and version.reason.startswith("abandoned")
    log = rounds.read_rounds(ProjectState(state))
    assert [(r["round_id"], r["status"], r["version"]) for r in log] == [
        ("r-gone", "interrupted", "v0001")
    ]


def test_kill_9_of_the_service_during_a_round(tmp_path, tiny_encoder):
    """A real kill -9 of the process running a round (its child then exits by itself):
    the next start logs the round exactly once and leaves no candidate behind."""
    project = make_project(tmp_path, tiny_encoder)
    state = tmp_path / "state"
    annotate(state, posts(2, 3))
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from backend.loop.rounds import launch, plan_round\n"
        "from labeling.project import load_project\n"
        "from labeling.state import ProjectState\n"
        "plan = plan_round(load_project(sys.argv[1]), ProjectState(Path(sys.argv[2])), 'studio')\n"
        "launch(plan)\n"
        "print(plan.round_id, flush=True)\n"
        "time.sleep(600)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    service = subprocess.Popen(
        [sys.executable, "-c", script, str(project.folder), str(state)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    round_id = service.stdout.readline().strip()
    progress = state / "rounds" / round_id / "progress.json"
    deadline = time.monotonic() + 120
    while not progress.is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(service.pid, signal.SIGKILL)
    service.wait()
    time.sleep(3.0)  # the orphaned child notices within 2 s and exits
    promoted: list = []
    started(project, state, promoted)
    log = rounds.read_rounds(ProjectState(state))
    assert [r["round_id"] for r in log] == [round_id], log
    assert log[0]["status"] in ("interrupted", "promoted"), log
    assert all(v.status != "candidate" for v in Registry(state / "models").versions())
