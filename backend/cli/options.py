"""What several commands share: the options that name a project, a model's labels, a
linker; files or stdin/stdout.

How a command names the project it works on: `--project NAME` (a project folder and
its own state), or `--studio-project ID` (a Label Studio project connected to a backend
serving several: its state `STATE/studio-ID/` and the template it was made from)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING

from backend.linkers import open_linker_for, project_linker
from labeling.project import REPO_ROOT, Project, load_project
from labeling.state import (
    STATE_BASE_DEFAULT,
    STATE_ENV,
    STATE_MARKERS,
    ProjectState,
    linking_cache_without_project,
    state_base_from_environment,
    studio_project,
)
from training.tagger_spec import TaggerSpec
from training.windows import WINDOWS, WindowConfig

if TYPE_CHECKING:
    from training.linker import Linker

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
            help=f"base state folder (default: {STATE_BASE_DEFAULT})",
        )


def project_and_state(
    args: argparse.Namespace, must_exist: bool = False
) -> tuple[Project, ProjectState]:
    """The project and its state the command's options name. `must_exist`: the command
    only reports on state, so a folder that holds none is a mistake (a wrong --state-dir,
    or a working directory without ./state), not an empty project."""
    if getattr(args, "studio_project", None) is not None:
        if args.project:
            raise ValueError("pass --project or --studio-project, not both")
        project, state = studio_project(args.studio_project, args.state_dir)
        return project, state
    name = args.project or os.environ.get(PROJECT_ENV)
    if not name:
        raise ValueError(
            f"no project: pass --project projects/NAME (or set {PROJECT_ENV}), or "
            "--studio-project ID for a Label Studio project on a backend serving several"
        )
    project = load_project(name)
    state = ProjectState.of(project, args.state_dir)
    if must_exist:
        require_state(project, state, args.state_dir)
    return project, state


def require_state(project: Project, state: ProjectState, given: Path | None) -> None:
    """ValueError, one line, when `state` holds no state of `project`: where it looked,
    what it expected, and the folder to pass instead when one is in sight."""
    if state.holds_state():
        return
    root = state.root
    base = root.parent
    from_env = state_base_from_environment()
    source = (
        "--state-dir"
        if given
        else f"${STATE_ENV}"
        if from_env
        else f"./state of the working directory (no --state-dir or ${STATE_ENV})"
    )
    hint = _state_base_in_sight(project.name, base, default=not given and not from_env)
    raise ValueError(
        f"no state of project {project.name} in {root.absolute()} (state base from {source}; "
        f"expected a folder holding {', '.join(STATE_MARKERS[:3])} or the like, as the "
        "service, the demo and training rounds write)"
        + (f"; did you mean --state-dir {hint}?" if hint else "")
    )


def _state_base_in_sight(name: str, base: Path, default: bool) -> Path | None:
    """A state base near `base` that holds `name`'s state: its parent when `base` is the
    project's own folder, a sub-folder of it, or the checkout's state/ for the default."""
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


def add_studio_export_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--from-studio-export",
        type=Path,
        metavar="FILE",
        help="read a Label Studio JSON export instead of the store",
    )


def add_gold_option(p: argparse.ArgumentParser, text: str) -> None:
    p.add_argument("--include-gold", action="store_true", help=text)


def annotation_records(
    project: Project, state: ProjectState, studio_export: Path | None = None
) -> list:
    """Annotation records (skipped and deleted ones included) from a Label Studio export
    file or the project's store; [] when the store does not exist yet."""
    if studio_export is not None:
        from labeling.studio.export_file import read_studio_export

        return read_studio_export(studio_export, project.config)
    if not state.has_store():
        return []
    with state.store() as store:
        return store.annotations.records(include_deleted=True, include_cancelled=True)


def add_label_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--labels", nargs="+", help="project labels (default: from the data/model)")
    p.add_argument(
        "--label-map",
        nargs="+",
        default=[],
        metavar="TAG=LABEL",
        help="model tag type -> project label, e.g. BUS=Business",
    )
    p.add_argument("--columns", nargs="+", help="labels of bare B/I/O CoNLL tag columns")


def parse_label_map(items: list[str]) -> dict[str, str]:
    mapping = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"--label-map takes TAG=LABEL pairs, got {item!r}")
        mapping[key] = value
    return mapping


def model_labels(folder: str, label_map: dict[str, str]) -> list[str]:
    """A checkpoint's labels: from skillloop.json, else its tag types through `label_map`."""
    from training.checkpoint import read_metadata, resolve_source
    from training.text import split_tag

    path = Path(resolve_source(folder))
    meta = read_metadata(path)
    if meta.get("labels"):
        return list(meta["labels"])
    config = json.loads((path / "config.json").read_text())
    types = [split_tag(t)[1] for t in config.get("id2label", {}).values() if t != "O"]
    labels = [label_map.get(t, t) for t in dict.fromkeys(t for t in types if t)]
    if not labels:
        raise ValueError(f"{folder} has no tagging head: pass --labels")
    return labels


def check_labels(docs, labels: list[str], name: str) -> None:
    from training.datasets import labels_of

    unknown = sorted(set(labels_of(docs)) - set(labels))
    if unknown:
        raise ValueError(f"{name} has labels {unknown} that are not in {labels}")


def tagger_spec(args: argparse.Namespace) -> TaggerSpec:
    """The tagger `--model`, `--labels`, `--label-map`, `--max-tokens` and the precision
    options name (loaded by the caller, or by worker processes)."""
    label_map = parse_label_map(args.label_map)
    known = model_labels(args.model, label_map)
    labels = args.labels or known
    unknown = [label for label in labels if label not in known]
    if unknown:
        raise ValueError(
            f"the model {args.model} does not predict {unknown}; it knows {known} "
            "(map its tag types with --label-map TAG=LABEL)"
        )
    window = WINDOWS if args.max_tokens is None else WindowConfig(max_tokens=args.max_tokens)
    precision = "fp32" if args.fp32 else getattr(args, "precision", "auto")
    return TaggerSpec(args.model, labels, label_map, window, precision)


def load_tagger(args: argparse.Namespace):
    return tagger_spec(args).load()


def add_link_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--project", help="take the taxonomy, linker and state folder from a project")
    p.add_argument("--taxonomy", help='"esco" or a CSV (id, preferred_label, alt_labels, ...)')
    p.add_argument("--linker", help="a linker folder (default: the plain MiniLM backbone)")
    p.add_argument("--top-k", type=int, help="candidates per span (default 5)")
    p.add_argument("--threshold", type=float, help="no match below this (default: the linker's)")


def open_linker(args: argparse.Namespace) -> tuple[Linker, int]:
    """The linker the options name: --project's [linking] section, overridden by flags."""
    if args.project:
        project = load_project(args.project)
        return project_linker(
            project,
            ProjectState.of(project),
            taxonomy=args.taxonomy,
            linker=args.linker,
            top_k=args.top_k,
            threshold=args.threshold,
            progress=not getattr(args, "no_progress", False),
        )
    if not args.taxonomy:
        raise ValueError("name a taxonomy: --taxonomy esco, --taxonomy FILE.csv or --project NAME")
    cache = linking_cache_without_project()
    return open_linker_for(
        args.taxonomy,
        None,
        args.linker,
        cache,
        args.top_k,
        args.threshold,
        not getattr(args, "no_progress", False),
    )


@contextmanager
def open_stream(name: str, mode: str) -> Iterator[IO[str]]:
    """A file for reading or writing, or stdin/stdout for "-"."""
    if name == "-":
        yield sys.stdin if mode == "r" else sys.stdout
        return
    if mode == "r" and not Path(name).is_file():
        raise FileNotFoundError(f"input file not found: {name}")
    with open(name, mode, encoding="utf-8") as handle:
        yield handle


def roll_back(registry, what: str, project_name: str, version: str, reason: str):
    """Serve `version` of a project's `registry` (model or linker versions) again; returns
    the version now serving and the one it replaced ("nothing" when none served)."""
    if not registry.versions():
        raise ValueError(f"project {project_name} has no {what} versions in {registry.root}")
    previous = registry.serving()
    serving = registry.rollback(version, reason)
    return serving, previous.version if previous is not None else "nothing"
