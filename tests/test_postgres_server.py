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


@pytest.mark.slow
def test_a_cluster_left_by_a_killed_test_run_is_reaped_by_the_next():
    import subprocess
    import sys

    from postgres import OWNER_FILE, PostgresServer, bin_dir

    if bin_dir() is None:
        pytest.skip("PostgreSQL is not installed: make postgres")
    orphan = PostgresServer().start()
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    ).stdout.strip()
    (orphan.root / OWNER_FILE).write_text(gone)  # as if its pytest had been killed
    with PostgresServer() as server:
        assert not orphan.root.exists()
        assert server.root.exists()
    with socket.socket() as sock, pytest.raises(OSError):
        sock.connect(("127.0.0.1", orphan.port))
