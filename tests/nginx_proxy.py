"""Start the shipped deploy/nginx.conf on loopback in front of a local port, for the proxy
test and benchmarks/slow_clients.py: a throwaway main config, pid, logs and temp folders
under one folder; Debian's nginx binary (`make nginx` installs it)."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SITE = REPO / "deploy" / "nginx.conf"


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def site_config(listen_port: int, upstream_port: int) -> str:
    """deploy/nginx.conf with its two ports moved to loopback ones (and nothing else)."""
    text = SITE.read_text()
    for old, new in (
        ("    listen 9090;", f"    listen 127.0.0.1:{listen_port};"),
        ("    server 127.0.0.1:9091;", f"    server 127.0.0.1:{upstream_port};"),
    ):
        assert text.count(old) == 1, f"deploy/nginx.conf no longer has {old.strip()!r}"
        text = text.replace(old, new)
    return text


def start_nginx(folder: Path, listen_port: int, upstream_port: int) -> subprocess.Popen:
    """nginx in the foreground (its own session: kill it with os.killpg) once it accepts."""
    binary = nginx_binary()
    if binary is None:
        raise FileNotFoundError("nginx is not installed (make nginx)")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "site.conf").write_text(site_config(listen_port, upstream_port))
    # run as root, nginx would drop its workers to `nobody`, who cannot write a private
    # temp folder: keep them as the user who started it
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f"    {kind}_temp_path {folder / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (folder / "nginx.conf").write_text(
        f"{user}worker_processes 1;\npid {folder / 'nginx.pid'};\n"
        f"error_log {folder / 'error.log'} info;\n"
        "events { worker_connections 1024; }\n"
        f"http {{\n    access_log {folder / 'access.log'};\n{temp}\n"
        f"    include {folder / 'site.conf'};\n}}\n"
    )
    process = subprocess.Popen(
        # -e: the log nginx writes before it reads the config (else /var/log/nginx, root's)
        [
            binary,
            "-p",
            f"{folder}/",
            "-e",
            str(folder / "error.log"),
            "-c",
            str(folder / "nginx.conf"),
        ]
        + ["-g", "daemon off;"],
        stdout=(folder / "stdout.log").open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.time() + 20
    while time.time() < deadline:
        if process.poll() is not None:
            log = (folder / "stdout.log").read_text() + (folder / "error.log").read_text()
            raise RuntimeError(f"nginx exited: {log[-2000:]}")
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", listen_port), timeout=1),
        ):
            return process
        time.sleep(0.1)
    stop(process)
    raise RuntimeError("nginx did not start listening within 20 s")


def stop(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, 9)
    process.wait(timeout=30)


# --- the clients that starved gunicorn alone (issue 22) ------------------------------------
def open_idle(port: int, n: int) -> list[socket.socket]:
    """n connections that send nothing."""
    return [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(n)]


def open_slow_bodies(port: int, n: int, path: str = "/webhook") -> list[socket.socket]:
    """n POSTs that send their headers and the first bytes of a 100 kB body, then stall."""
    sockets = []
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Content-Length: 100000\r\n\r\n{".encode()
        )
        sockets.append(sock)
    return sockets


def trickle(sockets: list[socket.socket]) -> None:
    """One more body byte on each slow connection (some servers time out a pause)."""
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.sendall(b" ")


def close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.close()
