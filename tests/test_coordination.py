"""One training round at a time across processes: the file lock (SQLite) and the PostgreSQL
advisory lock (SKILLLOOP_DATABASE_URL), each held by another process, killed with -9, and
two real `skillloop retrain` processes racing for one project."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from backend.loop.lock import (
    AdvisoryLock,
    FileLock,
    TrainingBusy,
    database_url,
    libpq_url,
    lock_key,
    round_lock,
    training_lock,
)
from labeling.state import ProjectState
from training.registry import Registry

REPO = Path(__file__).resolve().parents[1]

HOLDER = """
import sys, time
from pathlib import Path
from backend.loop.lock import training_lock
from labeling.state import ProjectState
with training_lock(ProjectState(Path(sys.argv[1]))):
    print("held", flush=True)
    time.sleep(600)
"""


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def hold_in_child(state: Path) -> subprocess.Popen:
    """A process that takes the round lock for `state` and keeps it until killed."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(state)],
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    return child


def is_busy(state: Path, **options) -> bool:
    try:
        with training_lock(ProjectState(state), **options):
            return False
    except TrainingBusy as err:
        assert "already training" in str(err)
        return True


def acquired_within(state: Path, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with training_lock(ProjectState(state)):
                return True
        except TrainingBusy:
            time.sleep(0.1)
    return False


def test_the_database_url_picks_the_lock(tmp_path, monkeypatch):
    monkeypatch.delenv("SKILLLOOP_DATABASE_URL", raising=False)
    assert isinstance(round_lock(ProjectState(tmp_path)), FileLock)
    assert database_url("sqlite:///x.sqlite") is None
    url = "postgresql+psycopg://u@127.0.0.1:5/db"
    assert isinstance(round_lock(ProjectState(tmp_path, url)), AdvisoryLock)
    monkeypatch.setenv("SKILLLOOP_DATABASE_URL", url)
    assert isinstance(round_lock(ProjectState(tmp_path)), AdvisoryLock)
    assert libpq_url(url) == "postgresql://u@127.0.0.1:5/db"
    # hosts mounting the shared state folder at different paths agree on the key
    assert lock_key(Path("/mnt/a/state/tiny")) == lock_key(Path("/srv/state/tiny"))
    assert lock_key(Path("/srv/state/tiny")) != lock_key(Path("/srv/state/other"))


def test_a_lock_held_by_another_process_is_freed_by_kill_9(tmp_path, database_url):
    """Runs on both: flock (SQLite) and pg_try_advisory_lock (PostgreSQL)."""
    state = tmp_path / "state" / "tiny"
    child = hold_in_child(state)
    try:
        assert is_busy(state)
        told: list[int] = []
        # a waiter is told once, then gives up when its wait() says so
        assert is_busy(state, wait=lambda: len(told) < 1, on_busy=lambda: told.append(1))
        assert told == [1]
        # another project is not blocked by it
        assert not is_busy(tmp_path / "state" / "other")
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert acquired_within(state, 10.0)  # the holder's death released it


def test_the_lock_is_exclusive_within_one_process_too(tmp_path, database_url):
    state = tmp_path / "state" / "tiny"
    with training_lock(ProjectState(state)):
        assert is_busy(state)
    assert not is_busy(state)  # released on exit


def test_two_retrain_processes_train_one_round(tmp_path, tiny_encoder, database_url):
    """Two `skillloop retrain` processes at once on one project: exactly one trains; the
    other is refused while it trains, or skips the round it would only repeat."""
    from test_worker import annotate, make_project, posts

    project = make_project(tmp_path, tiny_encoder)
    state = tmp_path / "state"
    annotate(state / "tiny", posts(2, 4))
    command = [
        sys.executable,
        "-m",
        "backend.cli",
        "retrain",
        "--project",
        str(project.folder),
        "--state-dir",
        str(state),
        "--no-progress",
        "--threads",
        "1",
    ]
    children = [
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env()
        )
        for _ in range(2)
    ]
    results = [(c.wait(timeout=300), *c.communicate()) for c in children]
    trained = [r for r in results if r[0] == 0 and "v0001 promoted" in r[1]]
    assert len(trained) == 1, results
    other = next(r for r in results if r is not trained[0])
    busy = other[0] == 2 and "a round is already training" in other[2]
    repeat = (
        other[0] == 0 and "round skipped: same training data as the serving version" in other[1]
    )
    assert busy or repeat, other
    assert [v.version for v in Registry(state / "tiny" / "models").versions()] == ["v0001"]


def test_the_worker_command_trains_promotes_and_stops_on_sigterm(
    tmp_path, tiny_encoder, postgres_url, monkeypatch
):
    """`skillloop worker` (a training host): annotations stored by the serving hosts start
    a round under the advisory lock; the candidate is registered and gated here."""
    monkeypatch.setenv("SKILLLOOP_DATABASE_URL", postgres_url)  # where annotate() writes
    from test_worker import annotate, make_project, posts

    project = make_project(tmp_path, tiny_encoder, every=2, debounce=0.0)
    state = tmp_path / "state"
    command = [sys.executable, "-m", "backend.cli", "worker", "--project", str(project.folder)]
    command += ["--state-dir", str(state), "--database-url", postgres_url, "--poll", "0.2"]
    log = tmp_path / "worker.log"
    worker = subprocess.Popen(
        command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=child_env()
    )
    try:
        time.sleep(1.0)
        annotate(state / "tiny", posts(2, 4))  # as a serving host's webhooks would
        registry = Registry(state / "tiny" / "models")
        deadline = time.monotonic() + 180
        while registry.serving() is None:
            assert worker.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.5)
        assert registry.serving().version == "v0001" and registry.serving().trigger == "auto"
        # Start Training on a serving host: recorded in the database, run here (a repeat of
        # the serving version's data, so skipped, and logged with the Studio trigger)
        from backend.loop.rounds import read_rounds
        from labeling.state import ProjectState

        with ProjectState(state / "tiny").store() as store:
            store.training_requests.request()
        while not any(r["trigger"] == "studio" for r in read_rounds(ProjectState(state / "tiny"))):
            assert worker.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.5)
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=30)
    assert code == 0, log.read_text()[-2000:]
    bad = subprocess.run(
        [*command[:-4], "--database-url", "sqlite:///x.sqlite"],
        capture_output=True,
        text=True,
        env=child_env(),
    )
    assert bad.returncode == 2 and "must be postgresql://" in bad.stderr
