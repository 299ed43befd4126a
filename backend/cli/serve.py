"""`skillloop serve`: the ML backend on Flask's threaded development server.

For production use gunicorn with one worker process (see backend/service/wsgi.py and
docs/service.md): the warm model and the training worker live in that process.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from backend.service.config import ENV, ServiceConfig
from labeling.state import STATE_BASE_DEFAULT

log = logging.getLogger(__name__)

STOP_S = 4.0  # SIGTERM to exit: systemd and docker wait 10 s, the issue asks for 5


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the Label Studio ML backend (development server)",
        description="Serve /predict, /setup, /webhook, /train, /versions, /metrics for a "
        "project. Every flag can also be set by the environment variable shown.",
    )
    parser.add_argument("--project", help=f"project folder or name [{ENV['project']}]")
    parser.add_argument(
        "--project-templates",
        metavar="A,B",
        help="serve several Label Studio projects, each from its own state made from one of "
        f"these project templates (docs/service.md) [{ENV['project_templates']}]",
    )
    parser.add_argument(
        "--studio-projects",
        metavar="ID=TEMPLATE,...",
        help=f"the template for each Label Studio project id [{ENV['studio_projects']}]",
    )
    parser.add_argument("--host", help=f"address to bind (default 127.0.0.1) [{ENV['host']}]")
    parser.add_argument("--port", type=int, help=f"port (default 9090) [{ENV['port']}]")
    parser.add_argument(
        "--state-dir", type=Path, help=f"state folder (default {STATE_BASE_DEFAULT})"
    )
    parser.add_argument(
        "--threads", type=int, help=f"torch threads for prediction [{ENV['threads']}]"
    )
    parser.add_argument(
        "--no-training",
        dest="training",
        action="store_const",
        const=False,
        help=f"do not run the training worker [{ENV['training']}=0]",
    )
    parser.set_defaults(func=serve)


def serve(args: argparse.Namespace) -> int:
    from backend.service.app import create_app
    from backend.service.shown import NamedHandler

    config = ServiceConfig.from_env(
        project=args.project,
        host=args.host,
        port=args.port,
        state_dir=args.state_dir,
        threads=args.threads,
        training=args.training,
        project_templates=args.project_templates,
        studio_projects=args.studio_projects,
    )
    app = create_app(config)
    services = app.extensions["skillloop"]
    # SIGTERM (docker stop, systemd): stop serving, stop the worker (its training child is
    # killed) and the model threads, and be gone within STOP_S whatever a request is doing
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        app.run(
            host=config.host,
            port=config.port,
            threaded=True,
            use_reloader=False,
            request_handler=NamedHandler,  # Server: skillloop, no versions
        )
    except SystemExit:
        stop_within(services, STOP_S)
        logging.shutdown()
        os._exit(0)  # request threads still predicting do not hold the process up
    finally:
        stop_within(services, STOP_S)
    return 0


def stop_within(services, seconds: float) -> bool:
    """`services.close()`, given at most `seconds`; False when it did not finish (what is
    left is in-memory work: every acknowledged write is already durable)."""
    closer = threading.Thread(target=services.close, name="skillloop-stop", daemon=True)
    closer.start()
    closer.join(seconds)
    if closer.is_alive():
        log.warning("stopping took over %.0f s; exiting anyway", seconds)
        return False
    return True
