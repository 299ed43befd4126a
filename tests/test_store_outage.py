"""The annotation database away: a real PostgreSQL server of the test's own is stopped and
started again under a running service. Every request that needs it gets a 503 that says
so (not a generic 500), /train does not claim a round it cannot run, the log gets one line
per outage instead of a traceback per request, and the service works again once the
database is back. A statement stuck behind a lock gives up after the store's wait, and a
server that is frozen (SIGSTOP: its connections stay open, nothing answers) costs each
request one bounded wait, however many requests come and however long it stays frozen."""

from __future__ import annotations

import logging
import threading
import time

import psycopg
import pytest
from service_helpers import annotation_event, make_app

from labeling.storage import engine

pytestmark = pytest.mark.slow
TEXT = "we need python and sql"


@pytest.fixture
def own_server(own_postgres):
    return own_postgres


@pytest.fixture
def app(tmp_path, spanful_model, own_server, monkeypatch):
    monkeypatch.setenv("SKILLLOOP_DATABASE_URL", own_server.create_database("outage"))
    app = make_app(tmp_path, spanful_model)
    yield app
    app.extensions["skillloop"].close()


def event(annotation_id: int) -> dict:
    return annotation_event(annotation_id, 100 + annotation_id, TEXT, [(8, 14, "Technology")])


def test_a_database_that_is_away_gets_a_503_saying_so_and_one_log_line(app, own_server, caplog):
    client, services = app.test_client(), app.extensions["skillloop"]
    assert client.post("/webhook", json=event(1)).status_code == 200
    caplog.set_level(logging.WARNING)
    caplog.clear()
    backs: list[int] = []  # the service's catch-up with Label Studio hangs here
    services.store.db.on_back = lambda: backs.append(len(backs))
    own_server.halt()
    replies = [client.post("/webhook", json=event(n)) for n in range(2, 7)]
    replies.append(client.post("/train"))
    for reply in replies:
        assert reply.status_code == 503, reply.get_json()
        body = reply.get_json()
        assert "annotation database" in body["error"] and "unavailable" in body["error"]
        assert body["retry"] is True
    assert "Traceback" not in caplog.text
    assert caplog.text.count("is unavailable") == 1  # one line for the outage
    assert services.worker is None or not services.worker.status().get("running")

    own_server.resume()
    assert backs == []
    assert client.post("/webhook", json=event(7)).status_code == 200
    assert backs == [0]  # once, when it answered again
    assert [r.annotation_id for r in services.store.annotations.records()] == [1, 7]
    assert backs == [0]
    assert "answers again (6 requests got 503)" in caplog.text


def test_a_write_stuck_behind_a_lock_gives_up_with_a_503(app, own_server):
    client = app.test_client()
    assert client.post("/webhook", json=event(1)).status_code == 200
    dsn = own_server.dsn("outage")
    with psycopg.connect(dsn) as holder:  # another session holds every table of the store
        tables = holder.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
        holder.execute(f"LOCK TABLE {', '.join(t[0] for t in tables)} IN ACCESS EXCLUSIVE MODE")
        reply = client.post("/webhook", json=event(2))
        assert reply.status_code == 503
        assert "timeout" in reply.get_json()["error"]  # the lock or the statement timeout
    assert client.post("/webhook", json=event(3)).status_code == 200  # the lock is gone


def test_every_postgresql_connection_carries_the_store_timeouts(app, own_server):
    services = app.extensions["skillloop"]
    with services.store.db.read() as conn:
        settings = {
            name: conn.exec_driver_sql(f"SHOW {name}").scalar()
            for name in ("lock_timeout", "statement_timeout", "synchronous_commit")
        }
    assert settings == {
        "lock_timeout": f"{engine.WAIT_S}s",
        "statement_timeout": f"{engine.WAIT_S}s",
        "synchronous_commit": "on",
    }


def test_a_frozen_database_answers_503_within_the_wait_and_holds_no_request(
    app, own_server, caplog
):
    client, services = app.test_client(), app.extensions["skillloop"]
    assert client.post("/webhook", json=event(1)).status_code == 200  # a pooled connection
    caplog.set_level(logging.WARNING)
    caplog.clear()
    replies: dict[int, object] = {}

    def ask(n: int) -> None:  # webhooks and /status at once, more than the pool keeps
        own = app.test_client()
        replies[n] = own.post("/webhook", json=event(n)) if n % 2 else own.get("/status")

    askers = [threading.Thread(target=ask, args=(n,), daemon=True) for n in range(2, 10)]
    own_server.freeze()
    try:
        for asker in askers:
            asker.start()
        # not a speed claim: a generous bound that tells an answer from a hang (before,
        # every request waited for as long as the server stayed frozen)
        deadline = time.monotonic() + 3 * engine.WAIT_S
        for asker in askers:
            asker.join(max(0.0, deadline - time.monotonic()))
        hung = [asker.name for asker in askers if asker.is_alive()]
    finally:
        own_server.thaw()
    assert not hung, f"requests still waiting on a frozen database: {hung}"
    assert sorted(replies) == list(range(2, 10))
    errors = []
    for reply in replies.values():
        assert reply.status_code == 503, reply.get_json()
        body = reply.get_json()
        assert "annotation database" in body["error"] and body["retry"] is True
        errors.append(body["error"])
    # a pooled connection waited for its answer: the client's own deadline cut it
    assert any("did not answer within" in e for e in errors), errors
    assert "Traceback" not in caplog.text
    assert caplog.text.count("is unavailable") == 1

    assert client.post("/webhook", json=event(20)).status_code == 200  # continued: served
    assert [r.annotation_id for r in services.store.annotations.records()] == [1, 20]
    assert "answers again (8 requests got 503)" in caplog.text
