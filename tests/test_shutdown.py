"""SIGTERM stops the service within 5 s even while it predicts a heavy batch, on both
servers: `skillloop serve` and gunicorn with the flags docs/service.md gives."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

import pytest
import requests
from service_helpers import predict_body, require_server, write_project

from backend.service.serving_process import ServedProcess

STOP_WITHIN_S = 5.0


@pytest.mark.parametrize("kind", ["cli", "gunicorn"])
def test_sigterm_stops_the_service_within_5_s_while_it_predicts(
    tmp_path, tiny_reference_model, kind
):
    require_server(kind)
    project = write_project(tmp_path / "project", tiny_reference_model)
    log = tmp_path / "service.log"
    # the flags docs/service.md gives (gunicorn: --graceful-timeout 3), once the model is loaded
    service = ServedProcess(project, tmp_path / "state", log, server=kind).start()
    assert service.process is not None
    process = service.process
    busy = threading.Event()

    def heavy() -> None:  # 300 posts of 20,000 characters: far longer than 5 s here
        busy.set()
        body = predict_body(["python sql aws " * 1400] * 300)
        with contextlib.suppress(requests.RequestException):
            requests.post(f"{service.url}/predict", json=body, timeout=120)

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
        service.kill()
    assert seconds < STOP_WITHIN_S, f"{kind} took {seconds:.1f} s: {log.read_text()[-2000:]}"
