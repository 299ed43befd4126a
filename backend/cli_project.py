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


def project_and_state(args: argparse.Namespace, must_exist: bool = False) -> tuple[Project, Path]:
    """The project and its state folder the command's options name. `must_exist`: the
    command only reports on state, so a folder that holds none is a mistake (a wrong
    --state-dir, or a working directory without ./state), not an empty project."""
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
    root = project.state_dir(args.state_dir)
    if must_exist:
        require_state(project, root, args.state_dir)
    return project, root


def require_state(project: Project, root: Path, given: Path | None) -> None:
    """ValueError, one line, when `root` holds no state of `project`: where it looked,
    what it expected, and the folder to pass instead when one is in sight."""
    from labeling.project import STATE_ENV
    from labeling.state import STATE_MARKERS, ProjectState

    if ProjectState(root).holds_state():
        return
    base = root.parent
    source = (
        "--state-dir"
        if given
        else f"${STATE_ENV}"
        if os.environ.get(STATE_ENV)
        else f"./state of the working directory (no --state-dir or ${STATE_ENV})"
    )
    hint = _state_base_in_sight(
        project.name, base, default=not given and not os.environ.get(STATE_ENV)
    )
    raise ValueError(
        f"no state of project {project.name} in {root.absolute()} (state base from {source}; "
        f"expected a folder holding {', '.join(STATE_MARKERS[:3])} or the like, as the "
        "service, the demo and training rounds write)"
        + (f"; did you mean --state-dir {hint}?" if hint else "")
    )


def _state_base_in_sight(name: str, base: Path, default: bool) -> Path | None:
    """A state base near `base` that holds `name`'s state: its parent when `base` is the
    project's own folder, a sub-folder of it, or the checkout's state/ for the default."""
    from labeling.project import REPO_ROOT
    from labeling.state import ProjectState

    candidates = [base.parent] if base.name == name else []
    if base.is_dir():
        try:
            children = sorted(p for p in base.iterdir() if p.is_dir())[:200]
        except OSError:
            children = []
        candidates += children
    if default:
        candidates.append(REPO_ROOT / "state")
    for candidate in candidates:
        if ProjectState(candidate / name).has_state_files():
            return candidate.absolute()
    return None
