"""What a logged-in client learns of the machine (issue 22.8): no absolute file path in
/status, /versions or a refusal, and a Server header that names no web stack or version."""

from __future__ import annotations

import json
import runpy
import shutil
import threading
import urllib.request
from pathlib import Path

import gunicorn.http.wsgi
from service_helpers import LABELS, payload, write_project
from werkzeug.serving import make_server

from backend.service.app import create_app
from backend.service.config import ServiceConfig
from backend.service.shown import SERVER_NAME, NamedHandler
from training.registry import Registry

ROOT = Path(__file__).resolve().parents[1]


def absolute_paths(value) -> list[str]:
    """Every string in a JSON value that holds an absolute path."""
    if isinstance(value, dict):
        return [p for v in value.values() for p in absolute_paths(v)]
    if isinstance(value, list):
        return [p for v in value for p in absolute_paths(v)]
    if isinstance(value, str) and ("/tmp/" in value or value.startswith("/")):
        return [value]
    return []


def test_status_and_versions_show_no_absolute_path(app, client, spanful_model, tiny_encoder):
    services = app.extensions["skillloop"]
    registry = Registry(services.state.models)
    shutil.copytree(spanful_model, registry.root / ".incoming" / "a")
    first = registry.add(registry.root / ".incoming" / "a", labels=LABELS, base=str(spanful_model))
    registry.promote(first.version, "test")
    services.holder.promoted(registry.get(first.version))
    status = client.get("/status").get_json()
    assert status["model_version"] == first.version
    assert status["model_source"] == f"models/{first.version}"  # relative to the state
    versions = client.get("/versions").get_json()
    (detail,) = versions["details"]
    assert detail["path"] == f"models/{first.version}"
    assert detail["base"] == spanful_model.name  # outside the state folder: its name
    assert absolute_paths(status) == [] and absolute_paths(versions) == []
    # a version that cannot be loaded: /health (no login needed) says so, without its path
    broken = registry.root / ".incoming" / "b"
    shutil.copytree(tiny_encoder, broken)  # "<its path> has no BIO tagging head"
    second = registry.add(broken, labels=LABELS)
    registry.promote(second.version, "test")
    services.holder.promoted(registry.get(second.version))
    error = client.get("/health").get_json()["error"]
    assert error.startswith(f"cannot load serving version {second.version}")
    assert absolute_paths(error) == [] and f"models/{second.version}" in error, error


def test_a_refusal_names_no_absolute_path(tmp_path, spanful_model):
    template = write_project(tmp_path / "templates/alpha", spanful_model, name="alpha")
    config = ServiceConfig(
        project="", project_templates=str(template), state_dir=tmp_path / "state"
    )
    app = create_app(config)
    try:
        client = app.test_client()
        setup = {**payload("setup"), "project": "7.1764079200"}
        assert client.post("/setup", json=setup).status_code == 200
        reused = client.post("/setup", json={**setup, "project": "7.1764079999"})
        assert reused.status_code == 409
        error = reused.get_json()["error"]
        assert "studio-7" in error and str(tmp_path) not in error and "/tmp" not in error
    finally:
        app.extensions["skillloop"].close()


def test_the_dev_server_names_no_versions(app):
    # as `skillloop serve` runs it (backend/cli/serve.py)
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=NamedHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        for path in ("/health", "/nowhere"):
            request = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}")
            try:
                with urllib.request.urlopen(request, timeout=10) as reply:
                    headers = reply.headers
                    assert json.loads(reply.read())["status"] == "UP"
            except urllib.error.HTTPError as err:
                headers = err.headers
                assert err.code == 404
            assert headers.get_all("Server") == [SERVER_NAME]
    finally:
        server.shutdown()
        thread.join(10)


def test_gunicorns_config_names_the_service_not_gunicorn(monkeypatch):
    monkeypatch.setattr(gunicorn.http.wsgi, "SERVER", gunicorn.http.wsgi.SERVER)
    settings = runpy.run_path(str(ROOT / "deploy/gunicorn.conf.py"))
    assert settings["bind"].startswith("127.0.0.1:") and settings["workers"] == 1

    class Request:
        version = (1, 1)

        def should_close(self):
            return True

    response = gunicorn.http.wsgi.Response(Request(), None, None)
    response.status = "200 OK"
    headers = "".join(response.default_headers())
    assert f"Server: {SERVER_NAME}\r\n" in headers and "gunicorn" not in headers.lower()
