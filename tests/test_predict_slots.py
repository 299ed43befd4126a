"""/predict holds at most SKILLLOOP_PREDICT_SLOTS server threads: one more is a quick 503
(JSON, Retry-After), and webhooks and /health are answered while the slots are taken."""

from __future__ import annotations

import threading

import pytest
from service_helpers import annotation_event, make_app, predict_body

import backend.service.app
from backend.service.predict_slots import PredictSlots, slots_from_env

TEXT = "Senior data engineer: Python, SQL and stakeholder management."


@pytest.fixture
def held(monkeypatch):
    """predict_tasks blocks until `release` is set: a prediction that holds its slot."""
    entered = threading.Semaphore(0)
    release = threading.Event()
    real = backend.service.app.predict_tasks

    def slow_predict_tasks(*args, **kwargs):
        entered.release()
        release.wait(30)  # bounded: a failing test does not hang the run
        return real(*args, **kwargs)

    monkeypatch.setattr(backend.service.app, "predict_tasks", slow_predict_tasks)
    yield entered, release
    release.set()


def test_a_predict_past_the_slots_is_a_quick_503_and_webhooks_still_answer(
    tmp_path, tiny_reference_model, monkeypatch, held
):
    monkeypatch.setenv("SKILLLOOP_PREDICT_SLOTS", "2")
    app = make_app(tmp_path, tiny_reference_model)
    entered, release = held
    answers: list[int] = []

    def predict() -> None:
        answers.append(app.test_client().post("/predict", json=predict_body([TEXT])).status_code)

    running = [threading.Thread(target=predict, daemon=True) for _ in range(2)]
    for thread in running:
        thread.start()
    for _ in running:  # both are inside the application, holding their slots
        assert entered.acquire(timeout=30)
    client = app.test_client()
    extra = client.post("/predict", json=predict_body([TEXT]))
    assert extra.status_code == 503
    assert "busy" in extra.get_json()["error"] and extra.get_json()["retry"] is True
    assert int(extra.headers["Retry-After"]) >= 1
    # the threads /predict may not take are free for the rest
    assert client.get("/health").status_code == 200
    event = annotation_event(1, 1, TEXT, [(22, 28, "Technology")])
    assert client.post("/webhook", json=event).status_code == 200
    release.set()
    for thread in running:
        thread.join(30)
    assert answers == [200, 200]
    # the slots are given back: the next /predict is served
    assert client.post("/predict", json=predict_body([TEXT])).status_code == 200


def test_a_refused_or_failed_predict_gives_its_slot_back(tmp_path, tiny_reference_model):
    slots = PredictSlots(1)

    @slots.bounded
    def fails() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        fails()
    assert slots.bounded(lambda: "served")() == "served"


@pytest.mark.parametrize("raw", ["0", "-1", "two", "1.5", "٣"])
def test_a_mistyped_slot_count_stops_the_start(raw):
    with pytest.raises(ValueError, match="SKILLLOOP_PREDICT_SLOTS"):
        slots_from_env({"SKILLLOOP_PREDICT_SLOTS": raw})


def test_slots_default_to_two():
    assert slots_from_env({}) == 2 and slots_from_env({"SKILLLOOP_PREDICT_SLOTS": " 3 "}) == 3
