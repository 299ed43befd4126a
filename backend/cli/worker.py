"""`skillloop worker`: a training host. It runs the service's training worker without the
web service: it watches the annotation store's change counter (the serving hosts write
the annotations), and when the project's auto trigger (`[retrain] every_n_annotations`,
debounced) is due it takes the project's round lock (backend.loop.lock: the PostgreSQL
advisory lock with `--database-url`), trains in a child process on this host's GPU when
it has one (training.devices), registers the candidate in the shared model registry and
gates it with the same gate code as the service (backend.loop.gate). The serving hosts pick up
a promotion from the registry within SKILLLOOP_WATCH_INTERVAL seconds (docs/rounds.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import threading
from pathlib import Path

from backend.loop.lock import database_url
from backend.loop.worker import TrainingWorker
from labeling.project import load_project
from labeling.state import DATABASE_URL_ENV, STATE_BASE_DEFAULT, ProjectState

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "worker",
        help="a training host: run rounds for a project whose service runs elsewhere",
        description="Train rounds for PROJECT when its annotations change, one round at a "
        "time across every host (the round lock), on this host's GPU when it has one.",
    )
    p.add_argument("--project", required=True, help="projects/NAME or NAME")
    p.add_argument(
        "--database-url",
        help=f"postgresql://... shared with the serving hosts (env {DATABASE_URL_ENV}); "
        "without it the file lock, which holds on one host only",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        help=f"the shared state folder (default {STATE_BASE_DEFAULT})",
    )
    p.add_argument("--poll", type=float, default=2.0, help="seconds between store checks")
    p.add_argument("--threads", type=int, default=1, help="torch threads for a CPU round")
    p.set_defaults(func=worker_command)


def worker_command(args: argparse.Namespace) -> int:
    if args.poll <= 0 or args.threads < 1:
        raise ValueError("--poll must be positive and --threads at least 1")
    project = load_project(args.project)
    state = ProjectState.of(project, args.state_dir)  # its database URL: the environment's
    if args.database_url:  # the store's and the round lock's
        state = dataclasses.replace(state, database_url=args.database_url)
    if state.database_url and database_url(state.database_url) is None:
        raise ValueError(f"--database-url must be postgresql://..., got {state.database_url}")
    if project.retrain.every_n_annotations <= 0:
        raise ValueError(
            f"{project.name}: [retrain] every_n_annotations is 0, so no round would start"
        )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    worker = TrainingWorker(project, state, num_threads=args.threads)
    worker.start()
    log.info("training worker for %s on %s", project.name, state.root)
    try:
        with state.store() as store:
            seen, asked = store.annotations.change_counter(), store.training_requests.count()
            while not stop.wait(args.poll):
                counter = store.annotations.change_counter()
                if counter != seen:  # the serving hosts stored changes: feed the trigger
                    seen = counter
                    worker.annotation_changed()
                requests = store.training_requests.count()
                if requests != asked:  # Start Training pressed on a serving host
                    asked = requests
                    log.info("%s: a round was requested on a serving host", project.name)
                    worker.request("studio")
    except KeyboardInterrupt:
        pass
    finally:
        worker.stop()
    return 0
