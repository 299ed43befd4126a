"""SIGTERM stops the service within 5 s even while it predicts a heavy batch, on both
servers: `skillloop serve` and gunicorn with the flags docs/service.md gives."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from service_helpers import predict_body, write_project
from test_durability import REPO, free_port, kill

STOP_WITHIN_S = 5.0


def start(kind: str, project: Path, state: Path, port: int, log: Path) -> subprocess.Popen:
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        SKILLLOOP_PROJECT=str(project),
        SKILLLOOP_STATE_DIR=str(state),
        SKILLLOOP_THREADS="1",
    )
    if kind == "cli":
        command = [sys.executable, "-m", "backend.cli", "serve", "--port", str(port)]
    else:
        gunicorn = Path(sys.executable).with_name("gunicorn")
        if not gunicorn.exists():
            pytest.skip("gunicorn is not installed")
        command = [str(gunicorn), "-w", "1", "--threads", "4", "--graceful-timeout", "3"]
        command += ["-b", f"127.0.0.1:{port}", "backend.service.wsgi:app"]
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the service exited: {log.read_text()[-2000:]}")
        try:
            health = requests.get(f"http://127.0.0.1:{port}/health", timeout=1).json()
            if health.get("model_loaded"):
                return process
        except requests.RequestException:
            pass
        time.sleep(0.2)
    kill(process)
    raise AssertionError(f"the service did not start: {log.read_text()[-2000:]}")


@pytest.mark.parametrize("kind", ["cli", "gunicorn"])
def test_sigterm_stops_the_service_within_5_s_while_it_predicts(
    tmp_path, tiny_reference_model, kind
):
    project = write_project(tmp_path / "project", tiny_reference_model)
    port = free_port()
    log = tmp_path / "service.log"
    process = start(kind, project, tmp_path / "state", port, log)
    busy = threading.Event()

    def heavy() -> None:  # 300 posts of 20,000 characters: far longer than 5 s here
        busy.set()
        body = predict_body(["python sql aws " * 1400] * 300)
        with contextlib.suppress(requests.RequestException):
            requests.post(f"http://127.0.0.1:{port}/predict", json=body, timeout=120)

    senders = [threading.Thread(target=heavy, daemon=True) for _ in range(2)]
    try:
        for sender in senders:
            sender.start()
        busy.wait(10)
        time.sleep(3.0)  # the batches are read and being predicted
        assert process.poll() is None
        started = time.perf_counter()
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        seconds = time.perf_counter() - started
    finally:
        kill(process)
    assert seconds < STOP_WITHIN_S, f"{kind} took {seconds:.1f} s: {log.read_text()[-2000:]}"
