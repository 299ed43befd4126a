"""The ML backend's HTTP protocol against recorded Label Studio request shapes: /health,
/setup, /predict (0, 1, many tasks, bad input), auth, size limit, /versions, /metrics,
/status and the model swap after a promotion or rollback."""

from __future__ import annotations

import base64
import logging
import shutil
import time

import pytest
from service_helpers import LABELS, biased_model, make_app, payload, predict_body

from backend.service.config import ServiceConfig
from training.registry import Registry

WORDS_TEXT = "We need Python and SQL experience."


def auth_header(user, password):
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


# --- /health and /setup -------------------------------------------------------------------
def test_health_reports_the_loaded_model(client):
    body = client.get("/health").get_json()
    assert body["status"] == "UP"
    assert body["model_loaded"] is True
    assert body["model_version"].startswith("spanful")
    assert body["loading"] is False


def test_setup_answers_model_version_and_remembers_the_project(client, app, caplog):
    caplog.set_level(logging.DEBUG)
    reply = client.post("/setup", json=payload("setup"))
    assert reply.status_code == 200
    assert reply.get_json() == {"model_version": client.get("/health").get_json()["model_version"]}
    assert app.extensions["skillloop"].studio.project_id == 7
    assert "SECRET-ACCESS-TOKEN" not in caplog.text  # the access token is never logged


def test_setup_refuses_configs_it_cannot_serve(client):
    no_pair = payload("setup")
    no_pair["schema"] = '<View><Text name="text" value="$text"/></View>'
    reply = client.post("/setup", json=no_pair)
    assert reply.status_code == 422
    assert "no <Labels>" in reply.get_json()["error"]
    unknown = payload("setup")
    unknown["schema"] = unknown["schema"].replace(
        'value="Soft" background="#d62728" predicted_values="SOFT"', 'value="Leadership"'
    )
    reply = client.post("/setup", json=unknown)
    assert reply.status_code == 422
    assert "Leadership" in reply.get_json()["error"]


def test_setup_without_schema_is_fine(client):
    assert client.post("/setup", json={"project": "3.1700000000"}).status_code == 200


# --- /predict -----------------------------------------------------------------------------
def test_predict_one_task_gives_regions_from_the_config(client):
    reply = client.post("/predict", json=payload("predict"))
    assert reply.status_code == 200
    body = reply.get_json()
    (result,) = body["results"]
    assert result["model_version"] == body["model_version"]
    regions = result["result"]
    # the reference model tags every word; a lone final period is never a span
    assert [r["value"]["text"] for r in regions] == [
        "We",
        "need",
        "Python",
        "and",
        "SQL",
        "experience",
    ]
    for region in regions:
        assert region["from_name"] == "label" and region["to_name"] == "text"
        assert region["type"] == "labels"
        assert region["value"]["labels"] == ["Technology"]
        start, end = region["value"]["start"], region["value"]["end"]
        assert WORDS_TEXT[start:end] == region["value"]["text"]
        assert 0.0 <= region["score"] <= 1.0
    assert 0.0 <= result["score"] <= 1.0


def test_predict_zero_tasks(client):
    reply = client.post("/predict", json=predict_body([]))
    assert reply.status_code == 200
    assert reply.get_json()["results"] == []


def test_predict_many_tasks_one_result_each_in_order(client, app):
    texts = [f"python {'sql ' * (i % 5)}task {i}" for i in range(40)] + [""]
    calls = []
    holder = app.extensions["skillloop"].holder
    original = holder.predict
    holder.predict = lambda batch, *a, **k: (calls.append(len(batch)), original(batch, *a, **k))[1]
    reply = client.post("/predict", json=predict_body(texts))
    results = reply.get_json()["results"]
    assert calls == [len(texts)]  # one batched model call for the whole request
    assert len(results) == len(texts)
    for text, result in zip(texts, results, strict=True):
        assert " ".join(r["value"]["text"] for r in result["result"]) == " ".join(text.split())
    assert results[-1]["result"] == []  # a post without spans still gets its entry


def test_predict_maps_onto_another_config_and_its_names(client):
    xml = (
        '<View><Labels name="skills" toName="post">'
        '<Label value="Tool" predicted_values="TECHNOLOGY"/><Label value="Method" '
        'predicted_values="TECHNICAL"/><Label value="Biz" predicted_values="BUS"/>'
        '<Label value="People" predicted_values="SOFT"/></Labels>'
        '<Text name="post" value="$body"/></View>'
    )
    body = predict_body([])
    body["tasks"] = [{"id": 1, "data": {"body": "Python"}}]
    body["label_config"] = xml
    (result,) = client.post("/predict", json=body).get_json()["results"]
    (region,) = result["result"]
    assert (region["from_name"], region["to_name"]) == ("skills", "post")
    assert region["value"]["labels"] == ["Tool"]


def test_predict_uses_the_project_config_when_the_request_has_none(client):
    body = predict_body([WORDS_TEXT])
    del body["label_config"]
    (result,) = client.post("/predict", json=body).get_json()["results"]
    assert result["result"][0]["from_name"] == "label"


def test_one_unreadable_task_gets_an_empty_result_not_a_failed_batch(client, caplog):
    body = predict_body(["python", "sql"])
    body["tasks"].insert(1, {"id": 9, "data": {"title": "no text field"}})
    reply = client.post("/predict", json=body)
    assert reply.status_code == 200
    results = reply.get_json()["results"]
    assert [len(r["result"]) for r in results] == [1, 0, 1]
    assert results[1]["score"] == 1.0  # served last by uncertainty sampling
    assert "task 9 has no data field 'text'" in caplog.text


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"", 400, "empty request body"),
        (b"[1, 2]", 400, "must be a JSON object"),
        (b'{"project": "1.2"}', 400, "missing 'tasks'"),
        (b'{"tasks": {"id": 1}}', 400, "'tasks' must be a list"),
        (b'{"tasks": [{"id": 1, "data": {"html": "x"}}]}', 422, "no data field 'text'"),
        (b'{"tasks": [], "label_config": "<View/>"}', 422, "no <Labels>"),
        (b'{"tasks": [], "label_config": "<View"}', 422, "not valid XML"),
    ],
)
def test_bad_predict_requests_get_clear_4xx_json(client, body, status, message):
    reply = client.post("/predict", data=body, content_type="application/json")
    assert reply.status_code == status
    assert message in reply.get_json()["error"]


def test_predict_refuses_labels_the_model_does_not_know(client):
    body = predict_body(["python"])
    body["label_config"] = body["label_config"].replace(
        'value="Soft" background="#d62728" predicted_values="SOFT"', 'value="Degree"'
    )
    reply = client.post("/predict", json=body)
    assert reply.status_code == 422
    assert "Degree" in reply.get_json()["error"]


def test_untrained_project_answers_empty_results(tmp_path, tiny_encoder):
    app = make_app(tmp_path, tiny_encoder)  # a bare encoder: no head for the labels
    try:
        client = app.test_client()
        health = client.get("/health").get_json()
        assert health == {
            "status": "UP",
            "model_loaded": False,
            "model_version": "untrained",
            "loading": False,
        }
        results = client.post("/predict", json=predict_body(["python", "sql"])).get_json()
        assert results["results"] == [
            {"result": [], "model_version": "untrained"},
            {"result": [], "model_version": "untrained"},
        ]
    finally:
        app.extensions["skillloop"].close()


def test_request_size_limit(tmp_path, spanful_model):
    app = make_app(tmp_path, spanful_model, max_content_length=2048)
    try:
        reply = app.test_client().post("/predict", json=predict_body(["python " * 400]))
        assert reply.status_code == 413
        assert "larger than 2048 bytes" in reply.get_json()["error"]
    finally:
        app.extensions["skillloop"].close()


# --- auth ---------------------------------------------------------------------------------
def test_basic_auth_on_everything_but_health(tmp_path, spanful_model, caplog):
    caplog.set_level(logging.DEBUG)
    app = make_app(tmp_path, spanful_model, basic_auth_user="ls", basic_auth_pass="s3cret-pass")
    try:
        client = app.test_client()
        assert client.get("/health").status_code == 200
        for method, path in [
            ("post", "/predict"),
            ("post", "/setup"),
            ("post", "/webhook"),
            ("post", "/train"),
            ("get", "/versions"),
            ("get", "/metrics"),
            ("get", "/status"),
        ]:
            reply = getattr(client, method)(path, json=predict_body(["python"]))
            assert reply.status_code == 401, path
            assert reply.headers["WWW-Authenticate"].startswith("Basic")
            assert "authentication required" in reply.get_json()["error"]
        wrong = client.post(
            "/predict", json=predict_body(["python"]), headers=auth_header("ls", "guess")
        )
        assert wrong.status_code == 401
        right = client.post(
            "/predict", json=predict_body(["python"]), headers=auth_header("ls", "s3cret-pass")
        )
        assert right.status_code == 200
        assert len(right.get_json()["results"]) == 1
        assert "s3cret-pass" not in caplog.text
        assert "s3cret-pass" not in repr(app.extensions["skillloop"].config)
    finally:
        app.extensions["skillloop"].close()


def test_auth_off_by_default(client):
    assert client.get("/versions").status_code == 200


# --- versions, status, metrics, swap ------------------------------------------------------
def test_versions_and_status(client):
    versions = client.get("/versions").get_json()
    assert versions["versions"] == [] and versions["serving"] is None
    status = client.get("/status").get_json()
    assert status["project"] == "svc" and status["model_loaded"] is True


def test_metrics_in_prometheus_text(client):
    client.post("/predict", json=predict_body(["python", "sql"]))
    client.post("/predict", data=b"{", content_type="application/json")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'skillloop_http_requests_total{method="POST",route="/predict",status="200"} 1' in text
    assert 'skillloop_http_requests_total{method="POST",route="/predict",status="400"} 1' in text
    assert 'skillloop_http_request_duration_seconds_count{route="/predict"} 2' in text
    assert "skillloop_predictions_total{model_version=" in text
    assert "skillloop_model_loaded 1" in text
    assert "skillloop_training_running 0" in text
    assert "skillloop_rounds_promoted 0" in text
    assert 'skillloop_serving_info{model_version="spanful' in text


def test_promotion_and_rollback_swap_the_served_model(app, client, tmp_path, spanful_model):
    services = app.extensions["skillloop"]
    registry = Registry(services.state.models)
    silent = biased_model(tmp_path / "silent", "O")
    incoming = registry.root / ".incoming"
    for name, model in (("a", spanful_model), ("b", silent)):
        shutil.copytree(model, incoming / name)
    first = registry.add(incoming / "a", labels=LABELS)
    second = registry.add(incoming / "b", labels=LABELS)
    registry.promote(first.version, "test")
    services.holder.promoted(registry.get(first.version))  # what the worker calls
    reply = client.post("/predict", json=predict_body(["python"])).get_json()
    assert reply["model_version"] == first.version
    assert len(reply["results"][0]["result"]) == 1
    # a promotion by another process (skillloop retrain/rollback): the watcher notices
    registry.promote(second.version, "test")
    deadline = time.time() + 30
    while services.holder.current().version != second.version and time.time() < deadline:
        time.sleep(0.05)
    reply = client.post("/predict", json=predict_body(["python"])).get_json()
    assert reply["model_version"] == second.version
    assert reply["results"][0]["result"] == []  # the silent model finds nothing
    assert client.get("/versions").get_json()["versions"] == [first.version, second.version]
    metrics = client.get("/metrics").get_data(as_text=True)
    assert "skillloop_rounds_promoted 2" in metrics
    assert f'skillloop_serving_info{{model_version="{second.version}"}} 1' in metrics


def test_settings_from_env_and_flags(tmp_path):
    env = {
        "SKILLLOOP_PROJECT": "projects/x",
        "SKILLLOOP_PORT": "9100",
        "BASIC_AUTH_USER": "u",
        "BASIC_AUTH_PASS": "p",
        "SKILLLOOP_TRAINING": "0",
        "MAX_CONTENT_LENGTH": "4096",
    }
    config = ServiceConfig.from_env(env, port=9200, state_dir=tmp_path)
    assert (config.project, config.port, config.training) == ("projects/x", 9200, False)
    assert config.max_content_length == 4096 and config.auth_enabled
    assert "'p'" not in repr(config)
    with pytest.raises(ValueError, match="SKILLLOOP_PORT='abc' is not a valid int"):
        ServiceConfig.from_env({**env, "SKILLLOOP_PORT": "abc"})
    with pytest.raises(ValueError, match="both BASIC_AUTH_USER and BASIC_AUTH_PASS"):
        ServiceConfig.from_env({"SKILLLOOP_PROJECT": "x", "BASIC_AUTH_USER": "u"})
    with pytest.raises(ValueError, match="no project"):
        ServiceConfig.from_env({})
    assert config.remove_older_predictions  # one suggestion per task unless asked otherwise
    kept = ServiceConfig.from_env({**env, "SKILLLOOP_REMOVE_OLDER_PREDICTIONS": "0"})
    assert not kept.remove_older_predictions


def _recording_studio(monkeypatch, calls: list) -> None:
    """Stands in for the Label Studio server behind StudioClient: records what is asked."""
    import labeling.studio.client

    class RecordingStudio:
        def __init__(self, url, api_key):
            calls.append(("init", url, api_key))

        def backends(self, project_id):  # the connection Label Studio saved
            return [{"id": 1}]

        def publish_model(self, project_id, version, sampling=True, remove_older=True):
            calls.append(("publish", project_id, version, sampling, remove_older))
            return 3

    monkeypatch.setattr(labeling.studio.client, "StudioClient", RecordingStudio)


def _wait_calls(calls: list, n: int) -> list:
    deadline = time.time() + 10
    while len(calls) < n and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # and no more than n
    return calls


def _app_with_recorded_studio(tmp_path, model, monkeypatch):
    """The app with Label Studio configured, every client call recorded in `calls`."""
    calls: list = []
    _recording_studio(monkeypatch, calls)
    app = make_app(
        tmp_path, model, label_studio_url="http://ls.test", label_studio_api_key="token-123"
    )
    return app, calls


def test_a_swap_points_label_studio_at_the_new_version(tmp_path, spanful_model, monkeypatch):
    """With LABEL_STUDIO_URL/_API_KEY set, a promotion publishes the new version in Label
    Studio: its predictions fetched, the project's model_version (+ uncertainty sampling)
    set, skillloop's ranked tab made the first, older versions' predictions removed from
    unannotated tasks (one sequence, the demo's too)."""
    app, calls = _app_with_recorded_studio(tmp_path, spanful_model, monkeypatch)
    services = app.extensions["skillloop"]
    try:
        client = app.test_client()
        client.post("/setup", json=payload("setup"))  # the serving model, published once
        base = services.holder.current().version
        assert _wait_calls(calls, 2) == [
            ("init", "http://ls.test", "token-123"),
            ("publish", 7, base, True, True),
        ]
        registry = Registry(services.state.models)
        shutil.copytree(spanful_model, registry.root / ".incoming" / "a")
        version = registry.add(registry.root / ".incoming" / "a", labels=LABELS).version
        registry.promote(version, "test")
        services.holder.promoted(registry.get(version))
        assert _wait_calls(calls, 3)[2:] == [("publish", 7, version, True, True)]
        status = client.get("/status").get_json()
        assert status["studio_project"] == 7
        assert status["studio_refresh"]["ok"] and status["studio_refresh"]["version"] == version
        assert status["studio_refresh"]["older_predictions_removed"] == 3
    finally:
        services.close()


def test_importing_the_wsgi_module_does_no_work():
    import backend.service.wsgi

    assert (
        backend.service.wsgi._app is None
    )  # built on first access of backend.service.wsgi.app only
    with pytest.raises(AttributeError):
        backend.service.wsgi.application_name  # noqa: B018


def test_predictions_use_one_thread_while_a_round_trains(app, client):
    import torch

    holder = app.extensions["skillloop"].holder
    before = torch.get_num_threads()
    try:
        holder.training_running = lambda: True
        client.post("/predict", json=predict_body(["python"]))
        assert torch.get_num_threads() == 1
        holder.training_running = lambda: False
        client.post("/predict", json=predict_body(["python"]))
        assert torch.get_num_threads() == holder.threads == before
    finally:
        torch.set_num_threads(before)


def test_setup_arranges_a_project_connected_by_hand_once_per_model_version(
    tmp_path, spanful_model, monkeypatch
):
    """Label Studio calls /setup when a user connects the backend (Settings -> Model) and
    again before every prediction fetch: the first /setup of a project publishes the
    serving model there (so "Label All Tasks" follows its scores), the repeats ask nothing
    of Label Studio, and another project is published on its own first /setup."""
    app, calls = _app_with_recorded_studio(tmp_path, spanful_model, monkeypatch)
    services = app.extensions["skillloop"]
    try:
        client = app.test_client()
        version = services.holder.current().version
        for _ in range(3):
            assert client.post("/setup", json=payload("setup")).status_code == 200
        assert _wait_calls(calls, 2)[1:] == [("publish", 7, version, True, True)]
        client.post("/setup", json={**payload("setup"), "project": "8.1764079200"})
        assert _wait_calls(calls, 3)[1:] == [
            ("publish", 7, version, True, True),
            ("publish", 8, version, True, True),
        ]
        status = client.get("/status").get_json()
        assert status["studio_project"] == 8
        assert status["studio_refresh"]["ok"] and status["studio_refresh"]["trigger"] == "setup"
    finally:
        services.close()
