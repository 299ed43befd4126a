"""Retraining rounds: held-out split, gate, registry, the background worker and the
`retrain` / `rollback` commands. Tiny models: a round trains in about a second."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from backend.cli import main
from backend.loop import heldout as split
from backend.loop import rounds
from backend.loop.run import run_round
from backend.loop.spec import RoundSpec
from backend.loop.worker import TrainingWorker
from labeling.project import load_project
from labeling.state import ProjectState
from labeling.store import AnnotationRecord, Store
from training.registry import Registry
from training.text import Span

TOML = """
[project]
name = "tiny"

[[labels]]
value = "Tech"

[[labels]]
value = "Soft"

[model]
base = "{base}"
max_tokens = 32
stride = 8

[training]
epochs = 2
batch_size = 4
learning_rate = 0.001

[retrain]
every_n_annotations = {every}
debounce_seconds = {debounce}
heldout_share = 0.4
tolerance = 0.01

[data]
gold = "gold.jsonl"
"""
TOOLS = ["python", "sql", "aws", "spark", "docker", "java", "scala", "excel", "react"]


def post(n: int) -> tuple[str, list[Span]]:
    tool = TOOLS[n % len(TOOLS)]
    text = f"we need {tool} and communication skills for the data team {n}"
    start = text.index(tool)
    soft = text.index("communication")
    return text, [Span(start, start + len(tool), "Tech"), Span(soft, soft + 13, "Soft")]


def posts(held: int, train: int, share: float = 0.4) -> list[int]:
    """Post numbers: `held` of them in the held-out share, `train` not."""
    inside = [n for n in range(200) if split.is_heldout(post(n)[0], share)]
    outside = [n for n in range(200) if not split.is_heldout(post(n)[0], share)]
    return inside[:held] + outside[:train]


def make_project(tmp_path: Path, base, every=0, debounce=0.0, gold=()):
    folder = tmp_path / "tiny"
    folder.mkdir(exist_ok=True)
    (folder / "project.toml").write_text(TOML.format(base=base, every=every, debounce=debounce))
    with open(folder / "gold.jsonl", "w") as out:
        for n in gold:
            text, spans = post(n)
            out.write(
                json.dumps(
                    {
                        "id": f"g{n}",
                        "text": text,
                        "spans": [
                            {"start": s.start, "end": s.end, "label": s.label} for s in spans
                        ],
                    }
                )
                + "\n"
            )
    return load_project(folder)


def annotate(state_dir: Path, numbers, first_id=1) -> None:
    """Store annotations where the code under test reads them: the state folder's SQLite
    file, or the database $SKILLLOOP_DATABASE_URL names."""
    with ProjectState(state_dir).store() as store:
        for i, n in enumerate(numbers):
            text, spans = post(n)
            store.annotations.upsert(AnnotationRecord(first_id + i, 1000 + n, "1", text, spans))


def test_heldout_split_is_stable_and_never_trained_on(tmp_path):
    gold = posts(0, 6)[3:]  # the first of them is annotated in Label Studio too
    project = make_project(tmp_path, tmp_path, gold=gold)
    state = tmp_path / "state"
    annotate(state, posts(3, 4))
    annotate(state, [999], first_id=50)
    with Store(state / "annotations.sqlite") as store:
        store.annotations.upsert(
            AnnotationRecord(60, 5000, "1", "skipped post", [], cancelled=True)
        )
    plan = rounds.plan_round(project, ProjectState(state), "test")
    train = [
        json.loads(x)["text"] for x in (plan.folder / "train.jsonl").read_text().split("\n") if x
    ]
    held = [
        json.loads(x)["text"] for x in (plan.folder / "heldout.jsonl").read_text().split("\n") if x
    ]
    assert not set(train) & set(held) and "skipped post" not in train + held
    assert all(split.is_heldout(t, 0.4) for t in held)
    assert not any(split.is_heldout(t, 0.4) for t in train)
    assert len(held) >= 3 and plan.snapshot["heldout_documents"] == len(held)
    assert plan.snapshot["documents"] == len(train) == plan.train_documents
    assert plan.snapshot["gold_ids"] == sorted(f"g{n}" for n in gold[1:])
    extra = [] if split.is_heldout(post(999)[0], 0.4) else [50]
    assert plan.snapshot["annotation_ids"] == [4, 5, 6, 7, *extra]
    assert plan.snapshot["change_counter"] == 9

    project.retrain.heldout_share = 0.9  # the share is frozen by the first round
    again = rounds.plan_round(project, ProjectState(state), "test")
    heldout = "heldout.jsonl"
    assert (again.folder / heldout).read_text() == (plan.folder / heldout).read_text()
    assert again.snapshot["sha256"] == plan.snapshot["sha256"]


def test_rounds_promote_warm_start_and_refuse(tmp_path, tiny_encoder, capsys):
    project = make_project(tmp_path, tiny_encoder)
    state = tmp_path / "state"
    assert (
        main(
            [
                "retrain",
                "--project",
                str(project.folder),
                "--state-dir",
                str(state),
                "--no-progress",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    assert "round skipped: nothing to train on" in capsys.readouterr().out

    annotate(state / "tiny", posts(2, 4))  # the CLI's state folder is <state-dir>/<name>
    code = main(
        [
            "retrain",
            "--project",
            str(project.folder),
            "--state-dir",
            str(state),
            "--no-progress",
            "--threads",
            "1",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "v0001 promoted: first model" in out
    registry = Registry(state / "tiny" / "models")
    first = registry.serving()
    assert first.version == "v0001" and first.parent is None and first.heldout_f1 is not None
    assert first.metrics["documents"] == 2 and first.baseline_f1 is None
    assert first.snapshot["annotation_ids"] == [3, 4, 5, 6] and len(first.snapshot["sha256"]) == 64
    assert first.timings["train_s"] > 0 and first.labels == ["Tech", "Soft"]

    # the same training data as the serving version: nothing to learn, no round run
    outcome, promoted = run_round(project, ProjectState(state / "tiny"), "test")
    assert outcome.status == "skipped" and promoted is None and outcome.version is None
    assert outcome.reason.startswith("same training data as the serving version v0001")
    assert outcome.change_counter == first.snapshot["change_counter"]
    assert [v.version for v in registry.versions()] == ["v0001"]

    annotate(state / "tiny", posts(0, 5)[4:], first_id=7)  # one more training post
    project.retrain.tolerance = -2.0  # no candidate can beat the serving model by 2 F1
    outcome, promoted = run_round(project, ProjectState(state / "tiny"), "test")
    assert outcome.status == "refused" and promoted is None
    second = registry.get(outcome.version)
    assert second.status == "refused" and second.parent == "v0001"  # warm start
    assert second.base == str(first.path) and second.baseline_version == "v0001"
    assert second.baseline_f1 == pytest.approx(first.heldout_f1)  # same posts, same model
    assert "too few to tell a gain from noise" in second.reason
    assert second.gate == {**second.gate, "measured": False, "posts": 2, "decision": "refused"}
    assert second.round_id == outcome.round_id and outcome.gate == second.gate
    assert registry.serving().version == "v0001"
    # the refused candidate's data from the same serving version: seeded, it would only be
    # trained and refused again (a queued follow-up, or another worker's round)
    outcome, _ = run_round(project, ProjectState(state / "tiny"), "test")
    assert outcome.status == "skipped"
    assert f"same training data as {second.version}, refused when trained from v0001" in (
        outcome.reason
    )
    log = rounds.read_rounds(ProjectState(state / "tiny"))
    assert [r["status"] for r in log] == ["skipped", "promoted", "skipped", "refused", "skipped"]

    assert (
        main(["rollback", "v0002", "--project", str(project.folder), "--state-dir", str(state)])
        == 0
    )
    assert "v0002 is serving now (was v0001)" in capsys.readouterr().out
    assert Registry(state / "tiny" / "models").serving().version == "v0002"
    assert (
        main(["rollback", "v0009", "--project", str(project.folder), "--state-dir", str(state)])
        == 2
    )
    assert "unknown model version 'v0009'" in capsys.readouterr().err
    assert main(["rollback", "v0001", "--project", str(tmp_path / "none")]) == 2
    assert "project not found" in capsys.readouterr().err


class FakeRounds:
    """Replaces the round itself: each one blocks until released."""

    def __init__(self, worker: TrainingWorker):
        self.triggers: list[str] = []
        self.release = threading.Semaphore(0)
        self.started = threading.Event()
        worker._run_one = self.run

    def run(self, trigger: str, answering: int = 0):
        self.triggers.append(trigger)
        self.started.set()
        assert self.release.acquire(timeout=10)
        return rounds.RoundOutcome("r", trigger, "skipped", "fake")


def wait_for(condition, timeout=10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_trigger_during_training_queues_one_follow_up(tmp_path):
    project = make_project(tmp_path, tmp_path)
    worker = TrainingWorker(
        project, ProjectState(tmp_path / "state"), poll_seconds=0.02, request_wait=0.05
    )
    assert worker.request("early")["accepted"] is False  # not started
    fake = FakeRounds(worker)
    worker.start()
    try:
        assert worker.request("studio") == {
            "accepted": True,
            "queued": False,
            "running": True,
            "started": False,
            "state": "starting",  # the fake round never says it started
            "message": "training round starting",
        }
        assert fake.started.wait(5)
        replies = [worker.request(f"api{i}") for i in range(5)]
        assert all(r["accepted"] and r["queued"] and r["running"] for r in replies)
        assert [r["state"] for r in replies] == ["queued", *["joined"] * 4]
        assert worker.status()["queued"] and worker.status()["running"]
        fake.release.release()  # first round ends, the single follow-up starts
        wait_for(lambda: len(fake.triggers) == 2)
        fake.release.release()
        wait_for(lambda: not worker.status()["running"])
        time.sleep(0.2)
        assert fake.triggers == ["studio", "api0"]
        assert worker.status()["last_round"]["trigger"] == "api0"
    finally:
        fake.release.release()
        worker.stop()


def test_wait_idle_returns_once_the_round_and_its_follow_up_have_ended(tmp_path):
    project = make_project(tmp_path, tmp_path)
    worker = TrainingWorker(
        project, ProjectState(tmp_path / "state"), poll_seconds=0.02, request_wait=0.05
    )
    fake = FakeRounds(worker)
    worker.start()
    try:
        assert worker.wait_idle(1)  # nothing asked yet
        worker.request("studio")
        assert fake.started.wait(5)
        worker.request("api")  # queued behind it
        assert not worker.wait_idle(0.2)  # the first round holds
        fake.release.release()
        assert not worker.wait_idle(0.2)  # the follow-up runs now
        fake.release.release()
        assert worker.wait_idle(5)
        assert fake.triggers == ["studio", "api"]
    finally:
        fake.release.release()
        worker.stop()


def test_auto_trigger_every_n_debounced(tmp_path):
    project = make_project(tmp_path, tmp_path, every=3, debounce=0.3)
    state = tmp_path / "state"
    worker = TrainingWorker(project, ProjectState(state), poll_seconds=0.02)
    fake = FakeRounds(worker)
    fake.release.release()
    worker.start()
    try:
        for n in range(2):
            annotate(state, [n], first_id=n + 1)
            worker.annotation_changed()
        time.sleep(0.6)
        assert fake.triggers == []  # 2 changes < 3
        annotate(state, [2], first_id=3)
        worker.annotation_changed()
        time.sleep(0.1)
        assert fake.triggers == []  # debounced: not yet quiet
        wait_for(lambda: fake.triggers == ["auto"])
    finally:
        worker.stop()


def test_worker_trains_in_a_child_process(tmp_path, tiny_encoder):
    project = make_project(tmp_path, tiny_encoder)
    state = tmp_path / "state"
    annotate(state, posts(2, 3))
    promoted = []
    worker = TrainingWorker(
        project, ProjectState(state), on_promoted=promoted.append, poll_seconds=0.1, request_wait=10
    )
    worker.start()
    try:
        reply = worker.request("studio")  # Start Training is told the round started
        assert reply["accepted"] and reply["started"] and reply["state"] == "started", reply
        assert "training posts" in reply["message"]
        wait_for(
            lambda: (
                worker.status()["last_round"] is not None
                and worker.status()["last_round"]["round_id"] != "?"
            ),
            timeout=120,
        )
        status = worker.status()
        assert status["last_round"]["status"] == "promoted", status
        assert [v.version for v in promoted] == ["v0001"] and status["serving"] == "v0001"
        round_folder = state / "rounds" / status["last_round"]["round_id"]
        progress = json.loads((round_folder / "progress.json").read_text())
        assert progress == {**progress, "phase": "done", "progress": 1.0}

        # the next round warm-starts from v0001: a broken checkpoint crashes the child
        (state / "models" / "v0001" / "config.json").rename(state / "models" / "cfg")
        annotate(state, posts(0, 4)[3:], first_id=10)  # new data, or the round is skipped
        assert worker.request("api")["accepted"]
        wait_for(lambda: len(rounds.read_rounds(ProjectState(state))) == 2, timeout=120)
        last = rounds.read_rounds(ProjectState(state))[-1]
        assert last["status"] == "failed" and "training failed" in last["reason"]
        assert worker.status()["alive"] and promoted[-1].version == "v0001"
    finally:
        worker.stop()


def test_retrain_url_asks_the_service(monkeypatch, capsys):
    import requests

    calls = []

    class Reply:
        status_code = 200

        def json(self):
            return {"accepted": True, "queued": True, "running": True, "status": {"round": "r1"}}

    def post(url, **kwargs):
        calls.append((url, kwargs.get("auth")))
        return Reply()

    monkeypatch.setattr(requests, "post", post)
    monkeypatch.setenv("BASIC_AUTH_USER", "ann")
    monkeypatch.setenv("BASIC_AUTH_PASS", "pw")
    assert main(["retrain", "--project", "unused", "--url", "http://svc:9090/"]) == 0
    assert calls == [("http://svc:9090/train", ("ann", "pw"))]
    assert "queued after the current round" in capsys.readouterr().out

    Reply.json = lambda self: {
        "accepted": True,
        "queued": False,
        "state": "skipped",
        "message": "same training data as the serving version v0002",
    }
    assert main(["retrain", "--project", "unused", "--url", "http://svc:9090"]) == 0
    assert "training round skipped: same training data as the serving" in capsys.readouterr().out

    Reply.status_code = 409
    Reply.json = lambda self: {"error": "training is disabled"}
    assert main(["retrain", "--project", "unused", "--url", "http://svc:9090"]) == 2
    assert "answered 409: training is disabled" in capsys.readouterr().err


def serve_fake_version(state: Path, project, numbers) -> None:
    """A serving version whose snapshot is the training data of posts `numbers` (the
    checkpoint is a stub: a skipped round never loads it)."""
    from labeling.store import documents_sha256

    with Store(state / "annotations.sqlite") as store:
        docs = split.annotated_documents(project, store.annotations)
        counter = store.annotations.change_counter()
    train, _ = split.split_heldout(docs, project.retrain.heldout_share)
    stub = state / "models" / ".incoming" / "stub"
    stub.mkdir(parents=True)
    (stub / "config.json").write_text("{}")
    registry = Registry(state / "models")
    version = registry.add(
        stub,
        snapshot={"sha256": documents_sha256(train), "change_counter": counter - 1},
        labels=project.label_values,
    )
    registry.promote(version.version, "test")


def test_a_skipped_round_consumes_its_auto_trigger(tmp_path):
    """Only cancelled annotations changed: nothing to train on. The round is skipped once,
    not at every poll (it was 34 skipped rounds in 2 s at a 0.05 s poll)."""
    project = make_project(tmp_path, tmp_path, every=1, debounce=0.0)
    state = tmp_path / "state"
    with Store(state / "annotations.sqlite") as store:
        for i in range(3):
            store.annotations.upsert(
                AnnotationRecord(i + 1, 10 + i, "1", f"skipped {i}", [], cancelled=True)
            )
    worker = TrainingWorker(project, ProjectState(state), poll_seconds=0.02)
    worker.start()
    try:
        wait_for(lambda: len(rounds.read_rounds(ProjectState(state))) >= 1)
        time.sleep(1.0)  # 50 polls
        log = rounds.read_rounds(ProjectState(state))
        assert [r["status"] for r in log] == ["skipped"], log
        assert log[0]["reason"].startswith("nothing to train on")
        assert log[0]["change_counter"] == 3 and log[0]["trigger"] == "auto"
    finally:
        worker.stop()


def test_a_round_on_the_serving_snapshot_is_skipped_and_consumed(tmp_path):
    project = make_project(tmp_path, tmp_path, every=2, debounce=0.0)
    state = tmp_path / "state"
    annotate(state, posts(2, 3))
    serve_fake_version(state, project, posts(2, 3))
    with Store(state / "annotations.sqlite") as store:  # a change, same data
        store.annotations.upsert(AnnotationRecord(90, 900, "1", "skipped post", [], cancelled=True))
        store.annotations.upsert(
            AnnotationRecord(91, 901, "1", "another skipped post", [], cancelled=True)
        )
    worker = TrainingWorker(project, ProjectState(state), poll_seconds=0.02, request_wait=10)
    worker.start()
    try:
        wait_for(lambda: len(rounds.read_rounds(ProjectState(state))) >= 1)
        time.sleep(0.5)
        log = rounds.read_rounds(ProjectState(state))
        assert [(r["status"], r["trigger"]) for r in log] == [("skipped", "auto")], log
        assert log[0]["reason"].startswith("same training data as the serving version v0001")
        assert not (state / "rounds").exists()  # nothing was prepared for training

        reply = worker.request("studio")  # Start Training says so at once
        assert reply == {**reply, "accepted": True, "started": False, "state": "skipped"}
        assert reply["message"].startswith("same training data as the serving version v0001")
        assert len(rounds.read_rounds(ProjectState(state))) == 2
    finally:
        worker.stop()


def test_training_progress_reaches_progress_json_through_on_step(tmp_path, monkeypatch):
    """The round's child reports training steps with finetune.train's on_step callback."""
    import itertools

    import training.finetune
    from backend.loop import child as train_round

    class Stop(Exception):
        pass

    def fake_train(*args, on_step=None, **kwargs):
        for done in (1, 2, 3):
            on_step(done, 4)
        raise Stop

    monkeypatch.setattr(training.finetune, "train", fake_train)
    clock = itertools.count(start=100.0, step=1.0)  # a second between reports: no throttling
    monkeypatch.setattr(train_round.time, "monotonic", lambda: next(clock))
    (tmp_path / "train.jsonl").write_text("")
    (tmp_path / "heldout.jsonl").write_text("")
    spec = RoundSpec(tmp_path, None, ["Tech"], tmp_path / "out")
    with pytest.raises(Stop):
        train_round.run(spec)
    written = json.loads((tmp_path / "progress.json").read_text())
    assert written["phase"] == "training"
    assert written["progress"] == pytest.approx(train_round.TRAIN_SHARE * 3 / 4, abs=1e-4)
