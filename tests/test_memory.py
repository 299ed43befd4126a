"""Memory given back after a large request (issue 22.8): the app asks glibc to return
freed pages (malloc_trim) once a request with a body past 1 MiB is answered and closed,
and only then; the figures are benchmarks/predict_memory.py's (docs/service.md)."""

from __future__ import annotations

import json

import pytest
from service_helpers import predict_body

import backend.service.app as app_module
from backend.service import memory


@pytest.fixture
def trims(monkeypatch) -> list[int]:
    calls: list[int] = []
    monkeypatch.setattr(app_module, "release_memory", lambda: calls.append(1))
    return calls


def test_a_large_request_gives_memory_back_once_answered(client, trims):
    small = client.post("/predict", json=predict_body(["python"]))
    small.close()
    assert small.status_code == 200 and trims == []
    body = predict_body(["python sql " * 5000] * 30)  # 30 posts of 55,000 characters
    raw = json.dumps(body).encode()
    assert len(raw) > memory.TRIM_AFTER_BYTES
    large = client.post("/predict", data=raw, content_type="application/json")
    assert large.status_code == 200 and len(large.get_json()["results"]) == 30
    large.close()
    assert trims == [1]
    refused = client.post("/predict", data=b"x" * (2 * 1024 * 1024))  # refused, read or not
    refused.close()
    assert refused.status_code == 400 and trims == [1, 1]


def test_release_memory_asks_glibc(monkeypatch):
    libc = memory._libc()
    if libc is None:
        pytest.skip("not glibc: release_memory does nothing")
    assert memory.release_memory() in (True, False)  # called for real: no crash
    calls = []

    class FakeLibc:
        def malloc_trim(self, pad):
            calls.append(("trim", pad))
            return 1

    monkeypatch.setattr(memory, "_libc", lambda: FakeLibc())
    assert memory.release_memory() and calls == [("trim", 0)]
