"""`skillloop retrain`: a round now, in this process or (`--url`) on a running service."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from backend.cli.options import add_project_options, project_and_state
from backend.service.config import auth_from_env
from labeling.state import STATE_BASE_DEFAULT

URL_ENV = "SKILLLOOP_URL"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "retrain",
        help="run a retraining round (asks the running service with --url, else runs here)",
    )
    add_project_options(p, state_dir=False)
    p.add_argument(
        "--url",
        default=os.environ.get(URL_ENV),
        help=f"the running service, e.g. http://127.0.0.1:9090 (env {URL_ENV}); "
        "without it the round runs in this process",
    )
    p.add_argument("--state-dir", type=Path, help=f"state folder (default {STATE_BASE_DEFAULT})")
    p.add_argument("--threads", type=int, default=2, help="torch threads for a local round")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=retrain_command)


def retrain_command(args) -> int:
    if args.url:
        return _retrain_remote(args.url.rstrip("/"), args.studio_project)
    from backend.loop.run import run_round

    project, state = project_and_state(args)
    print(f"training a round for {project.name} in {state.root} ...", file=sys.stderr)
    outcome, _ = run_round(
        project,
        state,
        "cli",
        in_process=True,
        progress_bar=not args.no_progress,
        num_threads=args.threads,
    )
    if outcome.version:
        print(f"{outcome.version} {outcome.status}: {outcome.reason}")
    else:
        print(f"round {outcome.status}: {outcome.reason}")
    return 1 if outcome.status == "failed" else 0


def _retrain_remote(url: str, studio_project: int | None = None) -> int:
    import requests

    auth = auth_from_env()
    payload = {} if studio_project is None else {"project": studio_project}  # several projects
    try:
        reply = requests.post(f"{url}/train", json=payload, auth=auth, timeout=30)
    except requests.RequestException as err:
        raise ValueError(f"cannot reach the service at {url}: {err}") from None
    try:
        body = reply.json()
    except ValueError:
        body = {"message": reply.text[:200]}
    if reply.status_code >= 400:
        raise ValueError(
            f"{url}/train answered {reply.status_code}: "
            f"{body.get('message') or body.get('error') or body}"
        )
    state = "queued after the current round" if body.get("queued") else "started"
    if body.get("state") == "skipped":
        state = f"skipped: {body.get('message', '')}"
    if not body.get("accepted", True):
        state = f"not accepted: {body.get('message', '')}"
    print(f"training round {state} ({url})")
    print(json.dumps(body.get("status", body), indent=2, default=str))
    return 0 if body.get("accepted", True) else 1
