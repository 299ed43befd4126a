"""How a command names the project it works on: `--project NAME` (a project folder and
its own state), or `--studio-project ID` (a Label Studio project connected to a backend
serving several: its state `STATE/studio-ID/` and the template it was made from)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from labeling.project import Project

PROJECT_ENV = "SKILLLOOP_PROJECT"


def add_project_options(p: argparse.ArgumentParser, state_dir: bool = True) -> None:
    p.add_argument("--project", help=f"project folder or name [{PROJECT_ENV}]")
    p.add_argument(
        "--studio-project",
        type=int,
        metavar="ID",
        help="a Label Studio project served by a backend with several (its state: "
        "STATE/studio-ID, made from a template)",
    )
    if state_dir:
        p.add_argument(
            "--state-dir",
            type=Path,
            help="base state folder (default: $SKILLLOOP_STATE_DIR or ./state)",
        )


def project_and_state(args: argparse.Namespace) -> tuple[Project, Path]:
    """The project and its state folder the command's options name."""
    from labeling.project import load_project
    from labeling.state import studio_project

    if getattr(args, "studio_project", None) is not None:
        if args.project:
            raise ValueError("pass --project or --studio-project, not both")
        project, state = studio_project(args.studio_project, args.state_dir)
        return project, state.root
    name = args.project or os.environ.get(PROJECT_ENV)
    if not name:
        raise ValueError(
            f"no project: pass --project projects/NAME (or set {PROJECT_ENV}), or "
            "--studio-project ID for a Label Studio project on a backend serving several"
        )
    project = load_project(name)
    return project, project.state_dir(args.state_dir)
