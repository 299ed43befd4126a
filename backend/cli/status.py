"""`skillloop status`: annotations, the serving model, rounds and training, read from the
project's state (so it works whether or not the service runs); `--url` asks a running
service for its live training progress instead."""

from __future__ import annotations

import json
from dataclasses import replace

from backend.cli.options import (
    add_project_options,
    annotation_records,
    project_and_state,
)
from backend.service.config import auth_from_env


def register(subparsers) -> None:
    p = subparsers.add_parser("status", help="annotations, serving model, rounds, training")
    add_project_options(p)
    p.add_argument("--url", help="ask a running service (GET URL/status) for live progress")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=status_command)


def status_command(args) -> int:
    from backend.loop.status_figures import (
        changes_since_last_round,
        format_status,
        local_training,
        round_outcomes,
        status_figures,
        studio_emails,
    )

    project, state = project_and_state(args, must_exist=True)
    url, studio_project = args.url, args.studio_project
    training = _service_status(url, studio_project) if url else local_training(state)
    versions = state.registry().versions()
    records = annotation_records(project, state)
    figures = status_figures(
        project,
        records,
        versions,
        training,
        changes_since_last_round(state, versions),
        round_outcomes(state),
        studio_emails(records),
    )
    # where the figures come from, so a wrong folder is seen at once
    figures["state"] = str(state.root.absolute())
    figures["store"] = replace(state, root=state.root.absolute()).store_location
    from training.embedding_progress import read_progress

    figures["linking"] = read_progress(state.linking_cache)  # the label embedding's progress
    print(json.dumps(figures, indent=2) if args.json else format_status(figures, state))
    return 0


def _service_status(url: str, studio_project: int | None = None) -> dict:
    import requests

    auth = auth_from_env()
    params = {} if studio_project is None else {"project": studio_project}  # several projects
    try:
        reply = requests.get(url.rstrip("/") + "/status", params=params, auth=auth, timeout=5)
        reply.raise_for_status()
        return {**reply.json(), "_source": url}
    except (requests.RequestException, ValueError) as err:
        raise ValueError(f"cannot read {url.rstrip('/')}/status: {err}") from None
