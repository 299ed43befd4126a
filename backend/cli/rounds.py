"""`skillloop rounds`: every model version, its lineage, data and scores."""

from __future__ import annotations

import json

from backend.cli.options import (
    add_project_options,
    project_and_state,
)
from backend.loop.report import round_rows


def register(subparsers) -> None:
    p = subparsers.add_parser("rounds", help="every model version: lineage, data, scores")
    add_project_options(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=rounds_command)


def rounds_command(args) -> int:
    project, state = project_and_state(args, must_exist=True)
    versions = state.registry().versions()
    labels = project.label_values
    rows = round_rows(versions, labels)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"project {project.name}: no rounds yet")
        return 0
    header = [
        "version",
        "parent",
        "annotations",
        "snapshot",
        "F1",
        "baseline",
        *labels,
        "status",
        "reason",
    ]
    table = [
        [
            r["version"],
            r["parent"],
            r["annotations"],
            r["snapshot"],
            _f(r["heldout_f1"]),
            _f(r["baseline_f1"]),
            *map(_f, r["per_label_f1"].values()),
            r["status"],
            r["reason"],
        ]
        for r in rows
    ]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *table, strict=True)]
    for row in [header, *table]:
        print(
            "  ".join(
                str(x if x is not None else "-").ljust(w) for x, w in zip(row, widths, strict=True)
            ).rstrip()
        )
    return 0


def _f(x) -> str:
    return "-" if x is None else f"{float(x):.3f}"
