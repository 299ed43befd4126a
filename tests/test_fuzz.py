"""Fuzzing every route with malformed and hostile bodies (hypothesis), against the real
application and the tiny model. The property, for every request: a status below 500, a
JSON body (but /metrics, which is Prometheus text), and the store unchanged unless the
status is 2xx. About a minute in all."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from service_helpers import payload

ROUTES = ["/setup", "/predict", "/webhook", "/train", "/versions", "/status", "/health", "/metrics"]
TEMPLATES = ["annotation_created", "annotations_deleted", "predict", "setup", "start_training"]
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

hostile_strings = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["\ud800", "x\udfffy", "\x00", "NotALabel", "Technology", "label", ""]),
    st.just("python " * 400),
)
hostile_numbers = st.one_of(
    st.integers(),
    st.sampled_from([2**63, 2**63 - 1, -1, 0, 10**400, -(2**64)]),
    st.floats(allow_nan=False, allow_infinity=False),
)
leaves = st.one_of(st.none(), st.booleans(), hostile_numbers, hostile_strings)
json_values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(hostile_strings, inner, max_size=4)
    ),
    max_leaves=12,
)


def paths(value, prefix=()):
    """Every path into a JSON value (dict keys and list indices)."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from paths(child, (*prefix, index))


def replaced(value, path, new):
    if not path:
        return new
    value = copy.deepcopy(value)
    node = value
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = new
    return value


@st.composite
def mutated_payloads(draw):
    """A recorded Label Studio payload with one to three fields replaced by hostile values
    (a field's type changed, an id past 2**63, a label not in the config, a surrogate)."""
    body = payload(draw(st.sampled_from(TEMPLATES)))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(paths(body))))
        body = replaced(body, path, draw(json_values))
    return json.dumps(body).encode()  # ensure_ascii: lone surrogates travel as \\ud800


raw_bodies = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(
        [b"[" * 100_000, b'{"a":' * 50_000, b"{}", b"null", b'{"tasks": NaN}', b"\xff\xfe"]
    ),
    json_values.map(lambda v: json.dumps(v).encode()),
    mutated_payloads(),
)


def snapshot(services):
    store = services.store
    return (
        store.annotations.change_counter(),
        len(store.annotations.records(True, True)),
        store.inbox.counts(),
    )


def check(client, services, method, route, body):
    before = snapshot(services)
    reply = client.open(route, method=method, data=body, content_type="application/json")
    assert reply.status_code < 500, (route, body[:300], reply.get_data()[:300])
    if route != "/metrics" or reply.status_code != 200:
        assert reply.is_json, (route, reply.get_data()[:300])
        reply.get_json()
    if not 200 <= reply.status_code < 300:
        assert snapshot(services) == before, (route, reply.status_code, body[:300])
    services.inbox_reader.wait_idle(30)  # a queued body is read before the next example


@pytest.fixture
def services(app):
    services = app.extensions["skillloop"]
    services.worker.request = lambda source: {"accepted": False, "message": "fuzzing"}
    return services


@FUZZ
@given(route=st.sampled_from(["/setup", "/predict", "/webhook"]), body=raw_bodies)
def test_post_routes_never_fail_on_hostile_bodies(client, services, route, body):
    check(client, services, "POST", route, body)


@FUZZ
@given(body=mutated_payloads())
def test_webhooks_store_nothing_they_refuse(client, services, body):
    check(client, services, "POST", "/webhook", body)


@settings(FUZZ, max_examples=30)
@given(
    route=st.sampled_from(ROUTES),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    body=st.one_of(st.just(b""), raw_bodies),
)
def test_every_route_and_method_answers_json(client, services, route, method, body):
    check(client, services, method, route, body)
