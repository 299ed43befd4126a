"""The production setup of docs/service.md: gunicorn behind Debian's nginx with the shipped
deploy/nginx.conf. With slow-body and idle connections open against nginx and large
/predicts in flight, /health and a webhook are still answered (gunicorn alone answered
/health 0 of 3 times with 4 slow bodies). Loopback only; every loop bounded."""

from __future__ import annotations

import contextlib
import threading

import pytest
import requests
from nginx_proxy import (
    close_all,
    nginx_binary,
    open_idle,
    open_slow_bodies,
    start_nginx,
    stop,
    trickle,
)
from service_helpers import annotation_event, predict_body, require_server, write_project

from backend.service.serving_process import served
from labeling.studio.server import free_port

pytestmark = pytest.mark.slow
TEXT = "Senior data engineer: Python, SQL and stakeholder management."
N_SLOW, N_IDLE, N_PREDICTS = 25, 25, 4


@pytest.fixture
def proxied(tmp_path, tiny_reference_model):
    if nginx_binary() is None:
        pytest.skip("nginx is not installed (make nginx)")
    require_server("gunicorn")
    project = write_project(tmp_path / "project", tiny_reference_model)
    log = tmp_path / "gunicorn.log"
    with served(project, tmp_path / "state", log, server="gunicorn") as gunicorn:
        nginx = start_nginx(tmp_path / "nginx", port := free_port(), gunicorn.port)
        yield f"http://127.0.0.1:{port}"
        stop(nginx)


def test_health_and_webhooks_are_answered_beside_slow_idle_and_large_clients(proxied):
    predicts: list[int] = []

    def large_predict() -> None:  # 60 posts of 20,000 characters: seconds of work each
        body = predict_body(["python sql aws " * 1400] * 60)
        with contextlib.suppress(requests.RequestException):
            predicts.append(requests.post(f"{proxied}/predict", json=body, timeout=120).status_code)

    port = int(proxied.rsplit(":", 1)[1])
    slow = open_slow_bodies(port, N_SLOW)
    idle = open_idle(port, N_IDLE)
    senders = [threading.Thread(target=large_predict, daemon=True) for _ in range(N_PREDICTS)]
    try:
        for sender in senders:
            sender.start()
        for i in range(3):
            trickle(slow)
            # the timeouts only bound the test; gunicorn alone never answered these
            health = requests.get(f"{proxied}/health", timeout=30)
            assert health.status_code == 200 and health.json()["status"] == "UP"
            event = annotation_event(i + 1, i + 1, TEXT, [(22, 28, "Technology")])
            webhook = requests.post(f"{proxied}/webhook", json=event, timeout=30)
            assert webhook.status_code == 200, webhook.text
        for sender in senders:
            sender.join(120)
    finally:
        close_all(slow + idle)
    # every large /predict got an answer: served, or 503 "busy" past the two slots
    assert len(predicts) == N_PREDICTS and set(predicts) <= {200, 503}, predicts
    assert 200 in predicts


def test_nginx_refuses_a_body_past_the_limit_with_json_before_reading_it(proxied):
    port = int(proxied.rsplit(":", 1)[1])
    (sock,) = open_idle(port, 1)
    with sock:
        sock.sendall(
            b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 17000000\r\n\r\n"
        )
        head, _, body = sock.recv(65536).decode().partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 413") and "application/json" in head
    assert "16 MiB" in body


def test_a_backend_that_is_down_is_a_json_503(tmp_path):
    if nginx_binary() is None:
        pytest.skip("nginx is not installed (make nginx)")
    # a port nothing listens on stands for a gunicorn that restarts
    nginx = start_nginx(tmp_path / "down", port := free_port(), free_port())
    try:
        reply = requests.get(f"http://127.0.0.1:{port}/health", timeout=30)
    finally:
        stop(nginx)
    assert reply.status_code == 503 and reply.json()["retry"] is True
    assert reply.headers["Retry-After"] == "5"
