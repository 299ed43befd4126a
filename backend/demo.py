"""`make demo`: the whole loop on a real Label Studio, from one command.

Label Studio (own environment, loopback, SQLite under the state dir, known admin login)
-> its URL and login, printed as soon as it answers -> the Label Studio project from the
project folder -> its sample posts, the gold ones as completed ground-truth annotations
(annotators are never served what the first model trains or is gated on) -> the skillloop
backend, connected -> when no model serves yet, a first round trained on the gold posts in
the background (`skillloop status` shows its progress; when it is promoted the backend's
swap hook puts its predictions into Label Studio). A project that links spans to a
taxonomy (the sample's `[linking] taxonomy = "esco"`) has the backend load its linker
first; the demo prints when links are ready and starts the first round then, so the first
model's suggestions carry links (the two share the cores anyway). Then it waits for Ctrl-C
and stops both servers (and a round still training). A second run reuses all of it.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from backend.demo_links import LinkWatch
from backend.service.config import auth_from_env
from backend.service.serving_process import (
    ServedProcess,
    ServeError,
    health_at,
    settled,
    stop_group,
)
from labeling.project import load_project
from labeling.state import STATE_BASE_DEFAULT, ProjectState, state_base
from labeling.studio.client import StudioClient
from labeling.studio.server import REPO_ROOT, StudioSettings, start, stop
from labeling.studio.server import status as studio_status

CLI = ".venv/bin/skillloop"  # how the printed commands are run from the checkout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="skillloop-demo", description=__doc__.split("\n")[0])
    parser.add_argument("--project", default="projects/linkedin-skills")
    parser.add_argument("--state-dir", type=Path, help=f"default: {STATE_BASE_DEFAULT}")
    parser.add_argument("--studio-port", type=int, help="default $SKILLLOOP_STUDIO_PORT or 8081")
    parser.add_argument(
        "--backend-port", type=int, default=int(os.environ.get("SKILLLOOP_PORT") or 9090)
    )
    parser.add_argument(
        "--train-threads",
        type=int,
        default=1,
        help="torch threads for the first round (default 1: beside Label Studio and the "
        "backend, or on cores other jobs use, two threads ran 2-3x slower per step)",
    )
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="set up, then stop at once (a first round is started only with --wait-model)",
    )
    parser.add_argument(
        "--wait-model",
        action="store_true",
        help="with --no-wait: train the first model and wait for its predictions first",
    )
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"skillloop demo: error: {err}", file=sys.stderr)
        return 2


def run(args) -> int:
    project = load_project(args.project)
    state_root = state_base(args.state_dir).resolve()
    state = ProjectState.of(project, state_root)
    settings = StudioSettings.from_env(state_root, args.studio_port)
    backend_url = f"http://127.0.0.1:{args.backend_port}"
    commands = Commands(project.name, state_root)
    started_studio = not studio_status(settings)["running"]
    backend: ServedProcess | None = None
    first_round: FirstRound | None = None
    round_waits = False  # a first round to start once links are ready
    # Ctrl-C even when started in the background (where SIGINT arrives ignored), and
    # SIGTERM (e.g. from a supervisor), stop the demo cleanly
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    began = time.monotonic()
    try:
        step("Label Studio")
        start(settings)
        client = StudioClient(settings.url, settings.token)
        ref = client.ensure_project(project.title, project.labeling_config, project.description)
        print_login(settings, ref.id, time.monotonic() - began)
        print(f"  project {ref.id} {'created' if ref.created else 'reused'}: {ref.title}")
        result = client.import_project_posts(ref.id, project)
        gold = len(project.gold())
        print(
            f"  posts: {result.imported} imported, {result.skipped} already there; "
            f"{gold} of them are gold posts, shown as completed ground-truth annotations"
        )

        step("skillloop backend")
        if health_at(backend_url) is not None:
            raise ValueError(
                f"something already answers on {backend_url}; stop it or pass --backend-port"
            )
        backend = served_backend(project.folder, state_root, args.backend_port, settings)
        health = start_backend(backend)
        client.connect_backend(ref.id, backend_url, "skillloop", basic_auth=auth_from_env())
        print(f"  connected {backend_url} to project {ref.id}")
        links = (
            LinkWatch(backend_url, project.linking.taxonomy) if project.linking.taxonomy else None
        )
        if links is not None:
            print(
                f"  links: each span is linked to {project.linking.taxonomy}; the first use "
                f"embeds the taxonomy's labels (minutes), later runs read them back\n"
                f"  follow it: {commands.status}"
            )

        step("model")
        serving = state.registry().serving()
        if serving is not None:
            print(f"  serving model {serving.version} (held-out F1 {f1(serving.heldout_f1)})")
            if health.get("model_loaded"):  # the backend publishes it on /setup (connect)
                wait_predictions(client, ref.id, state)
        elif not project.gold():
            print("  no gold posts and no model: posts arrive without pre-annotations")
        elif not args.no_wait or args.wait_model:
            round_waits = True
            if links is not None and not links.poll():
                print("  no trained model yet: one trains on the gold posts once links are ready")

        print_next_steps(project, commands, backend_url)
        if args.no_wait and not round_waits:
            return 0
        assert backend.process is not None
        while backend.process.poll() is None:
            if links is not None:
                links.poll()
            if round_waits and (links is None or links.settled):
                round_waits = False
                first_round = start_first_round(project, state_root, args.train_threads, commands)
            if first_round is not None and first_round.finished():
                first_round.report(state, time.monotonic() - began)
                first_round = None
                if args.no_wait:
                    wait_predictions(client, ref.id, state)
                    return 0
            time.sleep(1.0)
        print(f"the backend exited with code {backend.process.returncode}; see {state.backend_log}")
        return 1
    except KeyboardInterrupt:
        print("\nstopping...")
        return 0
    finally:
        if first_round is not None:
            first_round.stop()
        if backend is not None:
            backend.stop()
        if started_studio:
            stop(settings)
        print(
            "stopped"
            + (" (Label Studio was already running: left as it was)" if not started_studio else "")
        )


def start_first_round(project, state_root: Path, threads: int, commands: Commands):
    first_round = FirstRound.start(project, state_root, threads)
    log = ProjectState.of(project, state_root).first_round_log
    print(
        f"  no trained model yet: training one on the gold posts in the background "
        f"({threads} thread(s); log {log})\n"
        f"  follow it: {commands.status}\n"
        "  posts show the model's suggestions once it is promoted",
        flush=True,
    )
    return first_round


def step(title: str) -> None:
    print(f"== {title}", flush=True)


def f1(value) -> str:
    """An F1 for people: three decimals (the registry keeps the full value)."""
    return "n/a" if value is None else f"{float(value):.3f}"


class Commands:
    """The CLI lines the demo prints, with the state folder when it is not the default."""

    def __init__(self, name: str, state_root: Path):
        default = state_base().resolve()
        where = "" if state_root == default else f" --state-dir {state_root}"
        self.status = f"{CLI} status --project {name}{where}"
        self.rounds = f"{CLI} rounds --project {name}{where}"
        self.select = f"{CLI} select --project {name}{where}"


class FirstRound:
    """`skillloop retrain` in a child process beside the backend: the round writes its
    progress to the state folder (what `skillloop status` reads), and the backend's
    registry watcher serves the version it promotes and refreshes Label Studio."""

    def __init__(self, process: subprocess.Popen, log: Path):
        self.process, self.log, self.began = process, log, time.monotonic()

    @classmethod
    def start(cls, project, state_root: Path, threads: int) -> FirstRound:
        log_path = ProjectState.of(project, state_root).first_round_log
        log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "backend.cli",
            "retrain",
            "--project",
            str(project.folder),
            "--state-dir",
            str(state_root),
            "--threads",
            str(threads),
            "--no-progress",
        ]
        env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        env["OMP_NUM_THREADS"] = str(threads)
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return cls(process, log_path)

    def finished(self) -> bool:
        return self.process.poll() is not None

    def report(self, state: ProjectState, since_start: float) -> None:
        seconds = time.monotonic() - self.began
        serving = state.registry().serving()
        if self.process.returncode != 0 or serving is None:
            print(
                f"== the first round gave no model (exit code {self.process.returncode}); "
                f"see {self.log}",
                flush=True,
            )
            return
        print(
            f"== first model {serving.version} promoted after {seconds:.0f} s "
            f"({since_start:.0f} s after the demo started), held-out F1 "
            f"{f1(serving.heldout_f1)}: the backend loads it and Label Studio's posts get "
            "its suggestions",
            flush=True,
        )

    def stop(self) -> None:
        stop_group(self.process)  # as the backend: its process group, TERM then KILL


def wait_predictions(client: StudioClient, project_id: int, state, timeout: float = 300) -> None:
    """Until the project's model version is the serving one and its predictions are in."""
    serving = state.registry().serving()
    deadline = time.monotonic() + timeout
    while serving is not None and time.monotonic() < deadline:
        if client.project(project_id).get("model_version") == serving.version:
            tasks = client.tasks(project_id)
            done = sum(
                1
                for t in tasks
                if any(p.get("model_version") == serving.version for p in t["predictions"])
            )
            print(f"  {done}/{len(tasks)} posts pre-annotated by model {serving.version}")
            return
        time.sleep(2.0)
    raise RuntimeError("Label Studio did not get the first model's predictions in time")


def served_backend(
    folder: Path, state_root: Path, port: int, settings: StudioSettings
) -> ServedProcess:
    """`skillloop serve` on `port`, told about Label Studio, logging to the state folder;
    ready once the model has loaded (or failed to): Label Studio's /setup must not time
    out on a loading model."""
    return ServedProcess(
        folder,
        state_root,
        ProjectState.of(load_project(folder), state_root).backend_log,
        threads=None,  # the service's default, as `skillloop serve` run by hand
        env={"LABEL_STUDIO_URL": settings.url, "LABEL_STUDIO_API_KEY": settings.token},
        ready=settled,
        timeout=300,
        port=port,
    )


def start_backend(backend: ServedProcess) -> dict:
    """Start it and wait until it is ready; its /health."""
    try:
        backend.start()
    except ServeError as err:  # one line for people: its message ends with the log's tail
        reason = str(err).split(": ", 1)[0].replace("service", "backend")
        raise RuntimeError(f"{reason}; log: {backend.log}") from None
    health = backend.health() or {}
    print(f"  backend up on {backend.url}: model {health.get('model_version', '?')}")
    return health


def print_login(settings: StudioSettings, project_id: int, seconds: float) -> None:
    print(
        f"""
Label Studio is up ({seconds:.0f} s): {settings.url}/projects/{project_id}/data
  login:     {settings.username}
  password:  {settings.password}
  API token: {settings.token}
""",
        flush=True,
    )


def print_next_steps(project, commands: Commands, backend_url: str) -> None:
    every = project.retrain.every_n_annotations
    print(
        f"""
Next:
  1. Open the URL above, log in, press "Label All Tasks": posts arrive pre-annotated once
     a model serves, the most uncertain first (Uncertainty sampling on its scores); the
     gold posts are there already, completed (ground truth).
  2. Fix the spans and submit; every {every} annotations a retraining round starts in the
     background; or press Settings > Model > Start Training.
  3. Follow the model and the rounds: {commands.status}
                                      {commands.rounds}
The backend: {backend_url}. Ctrl-C stops both servers; `make demo` again reuses the
project, posts and models. The commands above run from the checkout (or activate
.venv: `source .venv/bin/activate`, then `skillloop ...` from anywhere).
""",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
