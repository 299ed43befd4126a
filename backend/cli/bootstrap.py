"""`skillloop bootstrap`: a project's first model, trained on posts its taxonomy dictionary
labelled (backend.loop.cold_start)."""

from __future__ import annotations

import argparse

from backend.loop.cold_start import bootstrap
from labeling.project import load_project
from labeling.state import STATE_BASE_DEFAULT, ProjectState


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bootstrap",
        help="train a project's first model on posts labelled by its taxonomy dictionary",
    )
    p.add_argument("--project", required=True)
    p.add_argument("--state-dir", help=f"state base folder (default {STATE_BASE_DEFAULT})")
    p.add_argument("--posts", help="posts to label (default: the project's [data] posts)")
    p.add_argument("--force", action="store_true", help="even when a model already serves")
    p.add_argument("--threads", type=int, default=2, help="torch threads for training")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=bootstrap_command)


def bootstrap_command(args: argparse.Namespace) -> int:
    from training.datasets import read_documents

    project = load_project(args.project)
    state = ProjectState.of(project, args.state_dir)
    state.root.mkdir(parents=True, exist_ok=True)
    posts = read_documents(args.posts) if args.posts else None
    outcome, _ = bootstrap(
        project,
        state,
        posts,
        force=args.force,
        progress_bar=not args.no_progress,
        num_threads=args.threads,
    )
    print(f"bootstrap round {outcome.round_id}: {outcome.status}: {outcome.reason}")
    if outcome.version:
        print(
            f"version {outcome.version}: held-out F1 {outcome.heldout_f1} on "
            f"{outcome.heldout_documents} posts (dictionary-labelled where nobody annotated)"
        )
    return 0 if outcome.status in ("promoted", "refused") else 1
