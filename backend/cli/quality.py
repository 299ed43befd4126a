"""`skillloop quality`: agreement, pre-annotation edits and likely label errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from backend.cli.options import (
    add_gold_option,
    add_project_options,
    add_studio_export_option,
    annotation_records,
    project_and_state,
)
from labeling.state import ProjectState


def register(subparsers) -> None:
    p = subparsers.add_parser("quality", help="agreement, pre-annotation edits, label errors")
    add_project_options(p)
    add_studio_export_option(p)
    p.add_argument(
        "--model",
        help="model for likely label errors: a version (v0003), a "
        "checkpoint folder, or 'serving' (default); 'none' skips them",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=0.9,
        help="model confidence that counts as contradicting a span (default 0.9)",
    )
    add_gold_option(p, "also check the gold file's posts for likely label errors")
    p.add_argument("--limit", type=int, default=30, help="likely errors to print (default 30)")
    p.add_argument("--json", type=Path, help="also write every figure and issue as JSON here")
    p.set_defaults(func=quality_command)


def quality_command(args) -> int:
    from backend.quality_view import print_quality, quality_figures

    if not 0 < args.threshold <= 1:
        raise ValueError(f"--threshold must be in (0, 1], got {args.threshold}")
    # a Label Studio export file is read instead of the store: no state needed
    project, state = project_and_state(args, must_exist=args.from_studio_export is None)
    records = annotation_records(project, state, args.from_studio_export)
    gold = project.gold() if args.include_gold else []
    if not records and not gold:
        raise ValueError(
            f"no annotations in {state.store_location} "
            "(or pass --from-studio-export FILE, --include-gold)"
        )
    tagger = _tagger(project, state, args.model or "serving")
    figures = quality_figures(project, records, tagger, args.threshold, gold)
    if args.json:  # first: a --json path that cannot be written fails before any output
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2, ensure_ascii=False) + "\n")
    print_quality(figures, args.limit, sys.stdout)
    return 0


def _tagger(project, state: ProjectState, model: str):
    """The model to look for label errors with, or None ('none', or no model yet)."""
    if model == "none":
        return None
    registry = state.registry()
    if model == "serving":
        serving = registry.serving()
        if serving is None:
            print("no serving model yet: likely label errors skipped", file=sys.stderr)
            return None
        source = serving.path
    elif Path(model).is_dir():
        source = Path(model)
    else:
        source = registry.get(model).path
    return project.tagger_spec(source).load()
