"""A refused request changes nothing (issue 22.6), as a property over every route: for each
route of the app's url_map and each of its methods, a table of refused requests (no or bad
auth, bad JSON, wrong types, unknown and badly spelled project ids, a config no template
serves, bodies past the limit, a method the route lacks) and hypothesis's JSON bodies
built from the keys the routes read; after every 4xx answer the state folder's
fingerprint (every file's name, size and sha256, and every row of every SQLite table) is
what it was before. On one project and on a backend serving several."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from service_helpers import annotation_event, make_app, payload, write_project

from backend.service.app import create_app
from backend.service.config import ServiceConfig

LIMIT = 4096
AUTH = {"Authorization": "Basic " + base64.b64encode(b"ls:secret").decode()}
BAD_AUTH = {"Authorization": "Basic " + base64.b64encode(b"ls:wrong").decode()}
UNFIT_XML = (
    '<View><Labels name="x" toName="y"><Label value="Nope"/></Labels>'
    '<Text name="y" value="$t"/></View>'
)
BODIES: list[bytes] = [
    # first: a new project (room for one more) whose config the template cannot serve
    json.dumps({"schema": UNFIT_XML, "project": "12.1764079200"}).encode(),
    b"{",
    b"[]",
    b"null",
    b'"text"',
    b"\xff\xfe",
    b'{"project": [1]}',
    b'{"project": "abc"}',
    b'{"project": {"id": "x"}}',
    b'{"project": 99999}',
    b'{"project": "99999.1764079200"}',
    b'{"project": "7.1111111111"}',
    b'{"project": "1_1"}',
    b'{"project": "-5.1"}',
    b'{"project": 1.5e308}',
    b'{"tasks": "x", "project": "7.1764079200"}',
    b'{"tasks": [{"id": "a"}], "project": "7.1764079200"}',
    b'{"tasks": [], "project": "7.1764079200", "label_config": "<View"}',
    b'{"action": 5}',
    b'{"action": "ANNOTATION_CREATED", "project": {"id": 7}}',
    b'{"action": "ANNOTATION_CREATED", "annotation": {}, "task": 3, "project": {"id": 7}}',
    b'{"action": "ANNOTATIONS_DELETED", "annotations": "x", "project": {"id": "-5.1"}}',
    b'{"action": "ANNOTATIONS_DELETED", "annotations": [{"id": "x"}], "project": {"id": 7}}',
    b'{"action": "TASKS_DELETED", "tasks": "x", "project": {"id": 7}}',
    b'{"action": "TASKS_DELETED", "tasks": [{"id": 1}, {"id": "x"}], "project": {"id": 7}}',
    b'{"action": "START_TRAINING", "project": "abc"}',
    b'{"schema": 7, "project": "7.1764079200"}',
    b'{"schema": "<View>", "project": "7.1764079200"}',
    json.dumps({"schema": UNFIT_XML, "project": "7.1764079200"}).encode(),
    b" " * (LIMIT + 1),  # past MAX_CONTENT_LENGTH
]
QUERIES = ["", "?project=abc", "?project=99999", "?project=1e308", "?project=-1", "?key=wrong"]


def fingerprint(root: Path) -> dict:
    """Every file's size and hash (SQLite's WAL and shared memory aside: readers touch
    them) and every row of every table of each SQLite file."""
    found: dict = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        name = str(path.relative_to(root))
        if name.endswith(("-wal", "-shm", "-journal")):
            continue
        if path.suffix in (".db", ".sqlite", ".sqlite3"):
            found[name] = rows(path)
        else:
            found[name] = (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())
    return found


def rows(path: Path) -> dict:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: sorted(map(repr, db.execute(f'SELECT * FROM "{t}"'))) for t in tables}


def one_project(tmp_path, spanful_model):
    app = make_app(
        tmp_path,
        spanful_model,
        max_content_length=LIMIT,
        basic_auth_user="ls",
        basic_auth_pass="secret",
    )
    return app, app.extensions["skillloop"].state.root


def several_projects(tmp_path, spanful_model):
    template = write_project(tmp_path / "templates/alpha", spanful_model, name="alpha")
    state = tmp_path / "state"
    config = ServiceConfig(
        project="",
        project_templates=str(template),
        state_dir=state,
        background_load=False,
        watch_interval=600.0,
        max_content_length=LIMIT,
        basic_auth_user="ls",
        basic_auth_pass="secret",
        max_projects=2,  # a third project is refused (409), not made
    )
    return create_app(config), state


@pytest.fixture(params=["one project", "several projects"])
def served(request, tmp_path, spanful_model):
    """An app with a connected project that holds an annotation, and its state folder."""
    make = one_project if request.param == "one project" else several_projects
    app, root = make(tmp_path, spanful_model)
    app.testing = True
    client = app.test_client()
    setup = {**payload("setup"), "project": "7.1764079200"}
    assert client.post("/setup", json=setup, headers=AUTH).status_code == 200
    stored = client.post(
        "/webhook", json=annotation_event(501, 101, "python", [(0, 6, "Technology")]), headers=AUTH
    )
    assert stored.get_json()["status"] == "stored"
    yield app, root, request.param
    app.extensions["skillloop"].close()


def routes(app) -> list[tuple[str, str]]:
    """Every (path, method) of the app's url_map, static files aside."""
    found = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        found += [(rule.rule, m) for m in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return found


def send(client, path: str, method: str, body: bytes | None, headers: dict):
    return client.open(
        path, method=method, data=body, headers={**headers, "Content-Type": "application/json"}
    )


def settled(client) -> None:
    """Wait until no project has work under way: an accepted /train writes rounds.jsonl
    after its reply, and a queued webhook body is stored after its reply; neither must be
    taken for a change made by the next, refused, request."""
    router = client.application.extensions["skillloop.projects"]
    for services in router.all():
        if services.worker is not None:
            assert services.worker.wait_idle(60), "a training round did not end in 60 s"
        if services.inbox_reader is not None:
            assert services.inbox_reader.wait_idle(60), "a queued body was not read in 60 s"


def assert_refusal_changes_nothing(client, root: Path, path, method, body, headers) -> int:
    settled(client)
    before = fingerprint(root)
    reply = send(client, path, method, body, headers)
    if 400 <= reply.status_code < 500:
        after = fingerprint(root)
        assert after == before, (method, path, body[:80] if body else body, reply.get_json())
        assert isinstance(reply.get_json(), dict)  # a JSON reason, never a page
    return reply.status_code


def test_every_route_is_covered(served):
    app, _, _ = served
    paths = {path for path, _ in routes(app)}
    assert paths == {
        "/health",
        "/setup",
        "/predict",
        "/webhook",
        "/train",
        "/versions",
        "/taxonomy",
        "/status",
        "/metrics",
    }, "a new route: add its refusals to this test's table"


def test_refused_requests_change_no_state(served):
    app, root, mode = served
    client = app.test_client()
    statuses: dict[int, int] = {}
    for path, method in routes(app):
        other = "GET" if method != "GET" else "POST"  # a method the route lacks: 405
        cases = [
            (path, other, None, AUTH),
            (path, method, b"{}", {}),
            (path, method, b"{}", BAD_AUTH),
        ]
        queries = QUERIES if method == "GET" else QUERIES[:3]
        cases += [(path + q, method, b, AUTH) for q in queries for b in (None, *BODIES)]
        for case in cases:
            code = assert_refusal_changes_nothing(client, root, *case)
            statuses[code] = statuses.get(code, 0) + 1
    # the table reaches the refusals it is for
    expected = {400, 401, 405, 413, 422} | ({404, 409} if mode == "several projects" else set())
    assert expected <= set(statuses), statuses
    assert not any(code >= 500 for code in statuses), statuses


KEYS = ["project", "tasks", "action", "annotation", "annotations", "task", "schema",
        "label_config", "id", "data", "result", "text", "title", "key"]  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.sampled_from(
        [
            "7",
            "7.1764079200",
            "9.1",
            "-5.1",
            "1_1",
            "+7",
            "ANNOTATION_CREATED",
            "ANNOTATIONS_DELETED",
            "TASKS_DELETED",
            "START_TRAINING",
            "<View>",
            "",
        ]
    ),  # fmt: skip
    st.text(max_size=12),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)
    ),
    max_leaves=12,
)


@pytest.mark.parametrize("mode", ["one project", "several projects"])
def test_generated_bodies_refused_change_no_state(mode, tmp_path_factory, spanful_model):
    make = one_project if mode == "one project" else several_projects
    app, root = make(tmp_path_factory.mktemp("served"), spanful_model)
    client = app.test_client()
    setup = {**payload("setup"), "project": "7.1764079200"}
    assert client.post("/setup", json=setup, headers=AUTH).status_code == 200
    every = routes(app)
    try:

        @settings(
            max_examples=150,
            derandomize=True,  # the same bodies every run: no flaky test
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(route=st.sampled_from(every), body=st.dictionaries(st.sampled_from(KEYS), JSON))
        def refused_changes_nothing(route, body):
            path, method = route
            code = assert_refusal_changes_nothing(
                client, root, path, method, json.dumps(body).encode(), AUTH
            )
            assert code < 500, (path, body)

        refused_changes_nothing()
    finally:
        app.extensions["skillloop"].close()
