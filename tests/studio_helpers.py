"""Helpers for the tests that run against a real Label Studio (marker `studio`): polling,
and a real `skillloop serve` subprocess (backend.service.serving_process) told about that
Label Studio.
The Label Studio itself is the session fixture `studio` in conftest.py."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from backend.service.serving_process import answering, model_loaded, served
from labeling.studio.server import StudioSettings

T = TypeVar("T")


def get_json(url: str, timeout: float = 5.0) -> Any:
    """The JSON body at `url`, or None when it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return json.loads(reply.read() or b"{}")
    except (OSError, ValueError):
        return None


def post_json(url: str, body: dict) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as reply:
        return json.loads(reply.read())


def wait_for(what: str, check: Callable[[], T | None], timeout: float, every: float = 1.0) -> T:
    """Poll `check` until it returns something truthy; fail the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


_TOKENS: dict[str, str] = {}


def stored_annotation(state: Path, timeout: float = 30) -> Any:
    """The one annotation a submit in the editor stored in the project state at `state`
    (the backend's store, reached by Label Studio's webhook), waited for."""
    from labeling.state import ProjectState

    store = ProjectState(state).store()
    try:
        (record,) = wait_for(
            "the submitted annotation in the backend's store",
            store.annotations.records,
            timeout,
            every=0.5,
        )
        return record
    finally:
        store.close()


def personal_access_token(studio: StudioSettings) -> str:
    """The admin's personal access token, made once per Label Studio: it holds one at a time
    (a second POST /api/token/ answers 409), and the `studio` tests share one server."""
    from labeling.studio.login import create_personal_access_token

    if studio.url not in _TOKENS:
        _TOKENS[studio.url] = create_personal_access_token(
            studio.url, studio.username, studio.password
        )
    return _TOKENS[studio.url]


@contextmanager
def serve_backend(
    project_dir: Path | None,
    state: Path,
    studio: StudioSettings,
    templates: list[Path] | None = None,
) -> Iterator[str]:
    """`skillloop serve` for `project_dir` as a subprocess (log: state/../backend.log), told
    about Label Studio with a personal access token; its URL once the model is loaded.
    With `templates` instead, a backend serving several Label Studio projects, made from
    those templates; its URL once it answers /health (each loads its model once connected)."""
    env = {
        "LABEL_STUDIO_URL": studio.url,
        "LABEL_STUDIO_API_KEY": personal_access_token(studio),
        "SKILLLOOP_WATCH_INTERVAL": "1",
    }
    log = state.parent / f"{state.name}-backend.log"
    ready = answering if templates else model_loaded
    with served(
        project_dir, state, log, templates=templates or (), env=env, ready=ready, timeout=180
    ) as service:
        yield service.url


def signup_session(studio: StudioSettings, email: str, password: str):
    """A second Label Studio user (an annotator of the admin's organization), signed up
    through the invite link as a person would; a requests.Session logged in as them."""
    import requests

    from labeling.studio.client import StudioClient

    invite = StudioClient(studio.url, studio.token).request("GET", "/api/invite")
    page = f"{studio.url}/user/signup/?token={invite['token']}"
    session = requests.Session()
    session.get(page, timeout=30).raise_for_status()
    reply = session.post(
        page,
        data={
            "email": email,
            "password": password,
            "csrfmiddlewaretoken": session.cookies.get("csrftoken", ""),
        },
        headers={"Referer": page},
        timeout=30,
        allow_redirects=False,
    )
    if reply.status_code not in (301, 302) or "sessionid" not in session.cookies:
        pytest.fail(f"signing up {email} failed: HTTP {reply.status_code} {reply.text[:300]}")
    return session


def wait_published(backend_url: str, timeout: float = 120) -> dict:
    """Until the backend has published its serving model in the Label Studio project it was
    just connected to (it does on the project's first /setup): a test's own prediction
    fetch afterwards finds every task answered, instead of racing the backend's."""

    def published():
        status = get_json(f"{backend_url}/status") or {}
        refresh = status.get("studio_refresh") or {}
        return (
            status if refresh.get("ok") and refresh["version"] == status["model_version"] else None
        )

    return wait_for("the backend's publication in Label Studio", published, timeout)
