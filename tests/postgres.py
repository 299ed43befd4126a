"""A real PostgreSQL server for the tests: Debian's `postgresql` package (installed by
`make postgres`), a fresh cluster in a temporary folder (`initdb`), started on a free
loopback port (`pg_ctl`), stopped and removed after.

initdb refuses to run as root, and tests may run as root (CI does): then the cluster
belongs to the unprivileged `postgres` user the package creates, and every server command
runs as that user through `runuser`. The server trusts connections from 127.0.0.1 only
(no password: nothing else can reach a loopback port of a throwaway cluster), and listens
on no Unix socket, so it cannot clash with a system server.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SERVER_USER = "postgres"  # created by Debian's postgresql-common
SUPERUSER = "skillloop"  # the cluster's superuser role (initdb -U)
PREFIX = "skillloop-pg-"
OWNER_FILE = "owner.pid"  # the test process a cluster belongs to


def bin_dir() -> Path | None:
    """The newest installed PostgreSQL's bin folder (/usr/lib/postgresql/<major>/bin)."""
    found = [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin") if Path(p, "initdb").is_file()]
    found.sort(key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    if found:
        return found[-1]
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """One throwaway PostgreSQL cluster: `start()`, `url(database)`, `create_database()`,
    `stop()` (also a context manager); `halt()`/`resume()` for an outage, `freeze()`/
    `thaw()` for a server that stops answering."""

    def __init__(self, bin_folder: Path | None = None, port: int | None = None):
        folder = bin_folder or bin_dir()
        if folder is None:
            raise FileNotFoundError(
                "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): "
                "run `make postgres`"
            )
        self.bin = folder
        self.port = port or free_port()
        self.as_root = os.geteuid() == 0
        # not under pytest's tmp folder: that one is private to root (0700), and the
        # server user must reach its data folder
        self.root = Path(tempfile.mkdtemp(prefix=PREFIX))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._names = itertools.count(1)
        self.running = False
        self._frozen: list[int] = []  # processes freeze() stopped

    # ------------------------------------------------------------------ running it

    def _run(self, *command: str, timeout: float = 120) -> subprocess.CompletedProcess:
        argv = [str(self.bin / command[0]), *command[1:]]
        if self.as_root:
            argv = ["runuser", "-u", SERVER_USER, "--", *argv]
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, cwd=self.root, check=False
        )

    def start(self) -> PostgresServer:
        self.reap_orphans()
        (self.root / OWNER_FILE).write_text(str(os.getpid()))
        if self.as_root:
            user = pwd.getpwnam(SERVER_USER)  # KeyError: the package is not installed
            os.chown(self.root, user.pw_uid, user.pw_gid)
        done = self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
            "--no-sync",  # a throwaway cluster: its files need not survive a power cut
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stdout}{done.stderr}")
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            "-c unix_socket_directories='' -c max_connections=200 "
            "-c shared_buffers=32MB -c fsync=on -c synchronous_commit=on"
        )
        self.options = options
        self.resume()
        return self

    def _wait_ready(self, timeout: float = 60) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.dsn("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its folder."""
        self.thaw()  # a frozen server never shuts down
        if self.running:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", timeout=60)
            self.running = False
        shutil.rmtree(self.root, ignore_errors=True)

    def halt(self) -> None:
        """Stop the server, keeping its cluster (a database outage); `resume()` brings it back."""
        done = self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl stop failed: {done.stdout}{done.stderr}")
        self.running = False

    def resume(self) -> None:
        done = self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", self.options, "-w", "start"
        )
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {done.stdout}{done.stderr}\n{self.tail()}")
        self.running = True
        self._wait_ready()

    def freeze(self) -> list[int]:
        """Stop the postmaster and every server process with SIGSTOP: connections stay open
        and the kernel still acknowledges what clients send, but nothing answers (a stalled
        database host). `thaw()` continues them. Returns the process ids stopped."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        self._frozen = [postmaster, *_children(postmaster)]
        for pid in self._frozen:
            os.kill(pid, signal.SIGSTOP)
        return self._frozen

    def thaw(self) -> None:
        for pid in self._frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self._frozen = []

    def reap_orphans(self) -> list[Path]:
        """Stop and remove the clusters of test runs that died without stopping theirs (a
        pytest killed by a timeout never runs its fixtures' teardown)."""
        reaped = []
        for folder in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
            owner = folder / OWNER_FILE
            if folder == self.root or not owner.is_file() or _alive(owner.read_text()):
                continue
            if (folder / "data" / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(folder / "data"), "-m", "immediate", "stop")
            shutil.rmtree(folder, ignore_errors=True)
            reaped.append(folder)
        return reaped

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def tail(self, chars: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-chars:]
        return ""

    # ------------------------------------------------------------------ databases

    def dsn(self, database: str) -> str:
        """A libpq connection string (psycopg.connect)."""
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={database}"

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL for psycopg 3, as SKILLLOOP_DATABASE_URL takes it."""
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database (a fresh name each call unless given); returns its URL."""
        import psycopg

        name = name or f"test_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as db:
            db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _children(parent: int) -> list[int]:
    """The ids of the processes whose parent is `parent` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # "pid (comm) state ppid ...": the command may hold spaces and parentheses
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(stat.parent.name))
    return found


def _alive(pid_text: str) -> bool:
    try:
        os.kill(int(pid_text), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # someone else's live process
        return True
    return True
