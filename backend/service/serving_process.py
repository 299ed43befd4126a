"""The service as a process of its own on a loopback port: `skillloop serve` (the
development server) or gunicorn (docs/service.md), started in its own session, waited for
until /health says it is ready, and stopped with its whole process group.

What the tests, benchmarks and `make demo` that need the real server (kill -9, SIGTERM,
nginx in front, several workers, latency under load) start, one way for all of them:

    with served(project, state, server="gunicorn", workers=4) as service:
        requests.post(f"{service.url}/predict", json=body)

It lives in the package (not in tests/ or benchmarks/) so that both can import it without
one importing the other; it imports nothing of the service itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from labeling.state import environment_for
from labeling.studio.server import REPO_ROOT, free_port

SERVERS = ("cli", "gunicorn")


class ServeError(RuntimeError):
    """The service exited, or was not ready in time (the message ends with its log)."""


def model_loaded(health: dict) -> bool:
    """Ready once a model serves (what Label Studio's /setup needs)."""
    return bool(health.get("model_loaded"))


def settled(health: dict) -> bool:
    """Ready once the model has loaded or failed to (none may serve: see `model_loaded`)."""
    return not health.get("loading", False)


def answering(health: dict) -> bool:
    """Ready once /health answers (a multi-project backend loads models only on /setup)."""
    return health.get("status") == "UP"


def gunicorn_path() -> Path | None:
    """gunicorn beside this interpreter, or None when it is not installed."""
    path = Path(sys.executable).with_name("gunicorn")
    return path if path.exists() else None


def health_at(url: str) -> dict | None:
    """/health's JSON at `url`, or None when it does not answer."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
            return json.loads(reply.read() or b"{}")
    except (OSError, ValueError):  # refused, or slow while torch loads on busy cores
        return None


def stop_group(process: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 30.0) -> None:
    """`sig` to the process group of `process` (started with `start_new_session`); SIGKILL
    when it is still there after `grace` s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)


def child_pids(pid: int) -> list[int]:
    """The direct children of process `pid` (Linux /proc); none once it is gone."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class ServedProcess:
    """One served project (or templates), restartable on the same state: each `start` takes
    a free port unless `port` is given; `kill` and `stop` take the whole process group.
    `threads` None leaves the torch threads to the service's own default."""

    def __init__(
        self,
        project: Path | str | None,
        state: Path,
        log: Path | None = None,
        *,
        server: str = "cli",
        templates: Sequence[Path] = (),
        threads: int | None = 1,
        workers: int = 1,
        server_threads: int = 4,
        env: Mapping[str, str] | None = None,
        ready: Callable[[dict], bool] = model_loaded,
        timeout: float = 120.0,
        port: int | None = None,
    ):
        if server not in SERVERS:
            raise ValueError(f"server must be one of {SERVERS}, not {server!r}")
        if (project is None) == (not templates):
            raise ValueError("give a project or templates")
        self.project, self.templates, self.state = project, list(templates), Path(state)
        self.log = log or self.state.parent / f"{self.state.name}-service.log"
        self.server, self.threads, self.workers = server, threads, workers
        self.server_threads, self.extra_env = server_threads, dict(env or {})
        self.ready, self.timeout, self.fixed_port = ready, timeout, port
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.url = ""

    def command(self) -> list[str]:
        if self.server == "gunicorn":
            gunicorn = gunicorn_path()
            if gunicorn is None:
                raise ServeError("gunicorn is not installed")
            return [
                str(gunicorn),
                *("-c", str(REPO_ROOT / "deploy" / "gunicorn.conf.py")),  # as deployed
                *("-w", str(self.workers), "--threads", str(self.server_threads)),
                *("--timeout", "120", "--graceful-timeout", "3"),
                *("-b", f"127.0.0.1:{self.port}", "backend.service.wsgi:app"),
            ]
        where = ["--project", str(self.project)]
        if self.templates:
            where = ["--project-templates", ",".join(str(t) for t in self.templates)]
        return [
            *(sys.executable, "-m", "backend.cli", "serve", *where),
            *("--state-dir", str(self.state), "--port", str(self.port)),
            *(("--threads", str(self.threads)) if self.threads else ()),
        ]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        # this checkout, whatever an installed copy points at
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        if self.server == "gunicorn":  # configured by the environment (backend/service/wsgi.py)
            env |= environment_for(self.state)
            if self.threads:
                env["SKILLLOOP_THREADS"] = str(self.threads)
            if self.templates:
                env["SKILLLOOP_PROJECT_TEMPLATES"] = ",".join(str(t) for t in self.templates)
            else:
                env["SKILLLOOP_PROJECT"] = str(self.project)
        return env | self.extra_env

    def start(self) -> ServedProcess:
        """Start it and wait until `ready(health)` (and, for gunicorn, every worker is up)."""
        self.port = self.fixed_port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=REPO_ROOT,
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: kill takes every process
            )
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServeError(
                    f"the service exited (code {self.process.returncode}): {self.log_tail()}"
                )
            health = self.health()
            if health is not None and self.ready(health) and self._workers_up():
                return self
            time.sleep(0.2)
        self.kill()
        raise ServeError(f"the service was not ready in {self.timeout:.0f} s: {self.log_tail()}")

    def health(self) -> dict | None:
        """/health's JSON, or None when it does not answer."""
        return health_at(self.url)

    def worker_pids(self) -> list[int]:
        """The served process's children (gunicorn's workers)."""
        assert self.process is not None
        return child_pids(self.process.pid)

    def _workers_up(self) -> bool:
        return self.server != "gunicorn" or len(self.worker_pids()) >= self.workers

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """`sig` to the whole process group, then wait for the served process."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        self.process.wait(timeout=60)

    def stop(self, sig: int = signal.SIGTERM, grace: float = 30.0) -> None:
        """`sig` to the process group; SIGKILL when it is still there after `grace` s."""
        if self.process is not None:
            stop_group(self.process, sig, grace)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"


@contextmanager
def served(
    project: Path | str | None,
    state: Path,
    log: Path | None = None,
    *,
    stop_signal: int = signal.SIGTERM,
    **options,
) -> Iterator[ServedProcess]:
    """A started `ServedProcess` (options: its keyword arguments), stopped on leaving with
    `stop_signal` (SIGKILL after 30 s)."""
    service = ServedProcess(project, state, log, **options).start()
    try:
        yield service
    finally:
        service.stop(stop_signal)
