"""The annotation database away: a real PostgreSQL server of the test's own is stopped and
started again under a running service. Every request that needs it gets a 503 that says
so (not a generic 500), /train does not claim a round it cannot run, the log gets one line
per outage instead of a traceback per request, and the service works again once the
database is back. A statement stuck behind a lock gives up after the store's wait."""

from __future__ import annotations

import logging

import psycopg
import pytest
from service_helpers import annotation_event, make_app

from labeling.storage import engine

pytestmark = pytest.mark.slow
TEXT = "we need python and sql"


@pytest.fixture
def own_server():
    """A server this test may stop: the session's shared one must keep running."""
    from postgres import PostgresServer, bin_dir

    if bin_dir() is None:
        pytest.skip("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin): make postgres")
    server = PostgresServer().start()
    yield server
    server.stop()


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
    assert client.post("/webhook", json=event(7)).status_code == 200
    assert [r.annotation_id for r in services.store.annotations.records()] == [1, 7]
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
