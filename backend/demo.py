"""`make demo`: the whole loop on a real Label Studio, from one command.

Label Studio (own environment, loopback, SQLite under the state dir, known admin login) ->
the Label Studio project from the project folder -> its sample posts -> a first model
trained on the project's gold posts when none is serving yet (annotators never meet an
untrained model's noise) -> the skillloop backend -> connected -> predictions fetched and
the project's model version set, so Uncertainty sampling serves the most useful post
first. Then it waits for Ctrl-C and stops both servers. A second run reuses all of it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from backend.settings import auth_from_env
from labeling.project import load_project
from labeling.state import ProjectState
from labeling.studio.client import StudioClient
from labeling.studio.server import REPO_ROOT, StudioSettings, start, stop
from labeling.studio.server import status as studio_status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="skillloop-demo", description=__doc__.split("\n")[0])
    parser.add_argument("--project", default="projects/linkedin-skills")
    parser.add_argument("--state-dir", type=Path, help="default: $SKILLLOOP_STATE_DIR or ./state")
    parser.add_argument("--studio-port", type=int, help="default $SKILLLOOP_STUDIO_PORT or 8081")
    parser.add_argument(
        "--backend-port", type=int, default=int(os.environ.get("SKILLLOOP_PORT") or 9090)
    )
    parser.add_argument("--no-wait", action="store_true", help="set up, then stop at once")
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"skillloop demo: error: {err}", file=sys.stderr)
        return 2


def run(args) -> int:
    project = load_project(args.project)
    state_root = Path(args.state_dir or os.environ.get("SKILLLOOP_STATE_DIR") or "state").resolve()
    settings = StudioSettings.from_env(state_root, args.studio_port)
    backend_url = f"http://127.0.0.1:{args.backend_port}"
    started_studio = not studio_status(settings)["running"]
    backend: subprocess.Popen | None = None
    # Ctrl-C even when started in the background (where SIGINT arrives ignored), and
    # SIGTERM (e.g. from a supervisor), stop the demo cleanly
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        step("Label Studio")
        start(settings)
        client = StudioClient(settings.url, settings.token)
        ref = client.ensure_project(project.title, project.labeling_config, project.description)
        print(f"  project {ref.id} {'created' if ref.created else 'reused'}: {ref.title}")
        result = client.import_documents(ref.id, project.posts(), project.config.value_key)
        print(f"  posts: {result.imported} imported, {result.skipped} already there")

        step("first model")
        ensure_first_model(project, state_root)

        step("skillloop backend")
        if is_up_backend(backend_url):
            raise ValueError(
                f"something already answers on {backend_url}; stop it or pass --backend-port"
            )
        backend = start_backend(project.folder, state_root, args.backend_port, settings)
        health = wait_backend(
            backend, backend_url, ProjectState.of(project, state_root).backend_log
        )
        auth = auth_from_env()
        client.connect_backend(ref.id, backend_url, "skillloop", basic_auth=auth)
        print(f"  connected {backend_url} to project {ref.id}")

        step("predictions")
        started = time.monotonic()
        version = health.get("model_version") or "?"
        if health.get("model_loaded"):
            client.publish_model(ref.id, version, sampling=True)
        else:
            print("  the backend has no model: posts arrive without pre-annotations")
        tasks = client.tasks(ref.id)
        with_predictions = sum(
            1 for t in tasks if any(p.get("model_version") == version for p in t["predictions"])
        )
        print(
            f"  {with_predictions}/{len(tasks)} posts pre-annotated by model {version} "
            f"in {time.monotonic() - started:.0f} s"
        )

        print_next_steps(settings, ref.id, backend_url, project)
        if args.no_wait:
            return 0
        while backend.poll() is None:
            time.sleep(1.0)
        print(f"the backend exited with code {backend.returncode}; see its log", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping...")
        return 0
    finally:
        if backend is not None:
            stop_backend(backend)
        if started_studio:
            stop(settings)
        print(
            "stopped"
            + (" (Label Studio was already running: left as it was)" if not started_studio else "")
        )


def step(title: str) -> None:
    print(f"== {title}", flush=True)


def ensure_first_model(project, state_root: Path) -> None:
    """Train one round on the gold posts when the project has no serving model yet."""

    registry = ProjectState.of(project, state_root).registry()
    serving = registry.serving()
    if serving is not None:
        print(f"  serving model {serving.version} (F1 {serving.heldout_f1}), reused")
        return
    if not project.gold():
        print("  no gold posts and no model: the backend starts from the project's base model")
        return
    print(
        f"  no trained model yet: training one on {len(project.gold())} gold posts "
        "(a few minutes on CPU)"
    )
    command = [
        sys.executable,
        "-m",
        "backend.cli",
        "retrain",
        "--project",
        str(project.folder),
        "--state-dir",
        str(state_root),
    ]
    code = subprocess.call(command, cwd=REPO_ROOT)
    serving = registry.serving() if code == 0 else None
    if serving is None:
        raise RuntimeError(f"the first training round did not give a model (exit code {code})")
    print(f"  model {serving.version} serving (held-out F1 {serving.heldout_f1})")


def start_backend(folder: Path, state_root: Path, port: int, settings: StudioSettings):
    env = dict(os.environ)
    env.update(
        SKILLLOOP_STATE_DIR=str(state_root),
        SKILLLOOP_PORT=str(port),
        LABEL_STUDIO_URL=settings.url,
        LABEL_STUDIO_API_KEY=settings.token,
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    log_path = ProjectState.of(load_project(folder), state_root).backend_log
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "backend.cli", "serve", "--project", str(folder)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def backend_health(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
            return json.loads(reply.read() or b"{}")
    except (OSError, ValueError):
        return None


def is_up_backend(url: str) -> bool:
    return backend_health(url) is not None


def wait_backend(process: subprocess.Popen, url: str, log: Path, timeout: float = 300) -> dict:
    """Until /health says the model has loaded (Label Studio's /setup must not time out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the backend exited (code {process.returncode}); log: {log}")
        health = backend_health(url)
        if health and not health.get("loading", False):
            print(f"  backend up on {url}: model {health.get('model_version', '?')}")
            return health
        time.sleep(1.0)
    raise RuntimeError(f"the backend did not answer {url}/health in {timeout:.0f} s; log: {log}")


def stop_backend(process: subprocess.Popen, timeout: float = 30) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def print_next_steps(settings: StudioSettings, project_id: int, backend_url: str, project):
    name, every = project.name, project.retrain.every_n_annotations
    print(f"""
Label Studio is ready: {settings.url}/projects/{project_id}/data
  login:    {settings.username}
  password: {settings.password}
  API token: {settings.token}
  backend:  {backend_url} (skillloop serve --project {name})

Next:
  1. Open the URL, log in, press "Label All Tasks": posts arrive pre-annotated, the most
     uncertain first (Uncertainty sampling on the model's scores).
  2. Fix the spans and submit; every {every} annotations a retraining round starts in the
     background; or press Settings > Model > Start Training.
  3. Follow the rounds: skillloop rounds --project {name}
Ctrl-C stops both servers; `make demo` again reuses the project, posts and models.
""")


if __name__ == "__main__":
    sys.exit(main())
