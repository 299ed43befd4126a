"""The PostgreSQL test server itself (tests/postgres.py): a throwaway cluster that starts,
answers on loopback, keeps databases apart, and leaves nothing behind when stopped."""

from __future__ import annotations

import socket

import pytest


def test_the_session_server_gives_each_test_a_fresh_database(postgres, postgres_url):
    import psycopg

    name = postgres_url.rsplit("/", 1)[1]
    with psycopg.connect(postgres.dsn(name)) as db:
        assert db.execute("SELECT current_database()").fetchone() == (name,)
        assert db.execute("SHOW synchronous_commit").fetchone() == ("on",)
        assert db.execute("SHOW fsync").fetchone() == ("on",)
        tables = db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables.fetchone() == (0,)


@pytest.mark.slow
def test_a_server_is_stopped_and_removed_after():
    from postgres import PostgresServer, bin_dir

    if bin_dir() is None:
        pytest.skip("PostgreSQL is not installed: make postgres")
    with PostgresServer() as server:
        url = server.create_database("probe")
        assert url.endswith(f"127.0.0.1:{server.port}/probe")
        assert server.data.is_dir()
    assert not server.root.exists()
    with socket.socket() as sock, pytest.raises(OSError):
        sock.connect(("127.0.0.1", server.port))
