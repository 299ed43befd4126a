"""A local Label Studio server for skillloop: started from its own environment
(.venv-studio: it pins its own Django, numpy and SDK) on loopback, with an embedded SQLite
data directory under the state directory and an admin created non-interactively.

The settings come from ../shared/notes/label-studio.md: a local ML backend at 127.0.0.1
and webhooks to it are refused unless the two SSRF guards are off, and 1.23 refuses legacy
tokens unless they are enabled at first start.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from labeling.state import label_studio_home

REPO_ROOT = Path(__file__).resolve().parents[2]


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


@dataclass(slots=True)
class StudioSettings:
    """Where and how the local Label Studio runs; every field has a SKILLLOOP_STUDIO_* override."""

    root: Path  # state_dir/label-studio: data/, server.pid, server.log
    host: str = "127.0.0.1"
    port: int = 8081
    username: str = "admin@example.com"
    password: str = "skillloop-admin"
    token: str = "skillloop-demo-token"  # the admin's legacy token, set at first start only
    venv: Path = field(default_factory=lambda: REPO_ROOT / ".venv-studio")
    # how long a task an annotator opened stays theirs (Label Studio's TASK_LOCK_TTL; its
    # default, 24 h, keeps a post someone opened and left from everyone else for a day)
    task_lock_ttl: int = 900

    @classmethod
    def from_env(cls, state_dir: Path | None = None, port: int | None = None) -> StudioSettings:
        return cls(
            root=label_studio_home(state_dir),
            host=_env("SKILLLOOP_STUDIO_HOST", "127.0.0.1"),
            port=port or int(_env("SKILLLOOP_STUDIO_PORT", "8081")),
            username=_env("SKILLLOOP_STUDIO_USERNAME", "admin@example.com"),
            password=_env("SKILLLOOP_STUDIO_PASSWORD", "skillloop-admin"),
            token=_env("SKILLLOOP_STUDIO_TOKEN", "skillloop-demo-token"),
            venv=Path(_env("SKILLLOOP_STUDIO_VENV", str(REPO_ROOT / ".venv-studio"))),
            task_lock_ttl=int(_env("SKILLLOOP_STUDIO_TASK_LOCK_TTL", "900")),
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def pid_file(self) -> Path:
        return self.root / "server.pid"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    @property
    def executable(self) -> Path:
        return self.venv / "bin" / "label-studio"

    def environment(self) -> dict[str, str]:
        if len(self.token) < 6:
            raise ValueError("the Label Studio token must be at least 6 characters")
        env = dict(os.environ)
        env.update(
            LABEL_STUDIO_USERNAME=self.username,
            LABEL_STUDIO_PASSWORD=self.password,
            LABEL_STUDIO_USER_TOKEN=self.token,
            LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
            LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true",
            COLLECT_ANALYTICS="false",
            LABEL_STUDIO_ML_BLOCK_LOCAL_IP="false",
            LABEL_STUDIO_SSRF_PROTECTION_ENABLED="false",
            # the backend answers /predict for a whole batch; the default 1 s health check
            # is tight on a busy 2-core machine
            ML_TIMEOUT_HEALTH=_env("ML_TIMEOUT_HEALTH", "5"),
            ML_TIMEOUT_SETUP=_env("ML_TIMEOUT_SETUP", "10"),
            WEBHOOK_TIMEOUT=_env("WEBHOOK_TIMEOUT", "3"),
            TASK_LOCK_TTL=str(self.task_lock_ttl),
            LABEL_STUDIO_HOST=self.url,
        )
        # the project's own virtualenv must not leak into Label Studio's interpreter
        env.pop("VIRTUAL_ENV", None)
        env.pop("PYTHONPATH", None)
        return env


def free_port() -> int:
    """A TCP port free on loopback now (for a throwaway server)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def is_up(url: str, timeout: float = 2.0) -> bool:
    """Whether a Label Studio answers /health with status UP."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as reply:
            return json.loads(reply.read() or b"{}").get("status") == "UP"
    except (OSError, ValueError, urllib.error.URLError):
        return False


def _read_pid(settings: StudioSettings) -> int | None:
    try:
        pid = int(settings.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _is_label_studio(pid) else None


def _is_label_studio(pid: int) -> bool:
    """The pid is alive and is a Label Studio (pids get reused after a crash or reboot)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return b"label-studio" in cmdline or b"label_studio" in cmdline


def status(settings: StudioSettings) -> dict:
    pid = _read_pid(settings)
    return {
        "url": settings.url,
        "running": pid is not None,
        "pid": pid,
        "up": is_up(settings.url),
        "data_dir": str(settings.data_dir),
        "log": str(settings.log_file),
        "username": settings.username,
    }


def start(settings: StudioSettings, timeout: float = 300.0, quiet: bool = False) -> dict:
    """Start Label Studio in the background (or reuse the running one) and wait for /health.

    The first start on a fresh data dir runs migrations (about 35 s, longer on a busy
    machine). Returns status(); raises RuntimeError with the log's tail when it fails.
    """
    if not settings.executable.is_file():
        raise FileNotFoundError(
            f"Label Studio is not installed at {settings.executable}; run `make studio-install`"
        )
    process = None
    if _read_pid(settings) is None:
        if is_up(settings.url):
            raise ValueError(
                f"another server already answers on {settings.url}; stop it or pick another "
                "port (SKILLLOOP_STUDIO_PORT)"
            )
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            str(settings.executable),
            "start",
            "--no-browser",
            "--internal-host",
            settings.host,
            "-p",
            str(settings.port),
            "--data-dir",
            str(settings.data_dir),
        ]
        with settings.log_file.open("ab") as log:
            # its own session: Ctrl-C in a terminal reaches it only through stop()
            process = subprocess.Popen(
                command,
                env=settings.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=settings.root,
            )
        settings.pid_file.write_text(f"{process.pid}\n")
        if not quiet:
            print(f"starting Label Studio on {settings.url} (log: {settings.log_file})")
    deadline = time.monotonic() + timeout
    while not is_up(settings.url):
        # the process we started is judged by its exit code: on a busy machine its
        # /proc cmdline may still be ours (fork before exec) when we first look
        exited = process.poll() is not None if process else _read_pid(settings) is None
        if exited:
            raise RuntimeError(f"Label Studio exited during start:\n{_tail(settings.log_file)}")
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"Label Studio did not answer {settings.url}/health within {timeout:.0f} s:\n"
                f"{_tail(settings.log_file)}"
            )
        time.sleep(1.0)
    return status(settings)


def stop(settings: StudioSettings, timeout: float = 30.0) -> bool:
    """Stop the Label Studio this state dir started; False when none was running."""
    pid = _read_pid(settings)
    if pid is None:
        settings.pid_file.unlink(missing_ok=True)
        return False
    _terminate(pid, timeout)
    settings.pid_file.unlink(missing_ok=True)
    return True


def _terminate(pid: int, timeout: float) -> None:
    """SIGTERM the server's process group (it may have workers), SIGKILL what remains."""
    try:
        group = os.getpgid(pid)
    except ProcessLookupError:
        return
    target = group if group == pid else None  # started by us with its own session
    try:
        os.killpg(target, signal.SIGTERM) if target else os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not _is_label_studio(pid):
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(target, signal.SIGKILL) if target else os.kill(pid, signal.SIGKILL)
    _reap(pid)


def _reap(pid: int) -> None:
    """Collect our own child's exit status so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
