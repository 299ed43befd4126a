"""`skillloop report`: the rounds report (learning curve, per-label F1, stopping hint) as
HTML or Markdown."""

from __future__ import annotations

from pathlib import Path

from backend.cli.options import (
    add_project_options,
    annotation_records,
    project_and_state,
)
from backend.loop.report import FORMATS as REPORT_FORMATS
from backend.loop.report import version_labels, write_report


def register(subparsers) -> None:
    p = subparsers.add_parser("report", help="HTML/Markdown report: learning curve, stopping hint")
    add_project_options(p)
    p.add_argument("--format", default="html", help="html (default) or md")
    p.add_argument("--out", type=Path, help="report file (default: STATE/reports/report.FORMAT)")
    p.add_argument(
        "--no-skills",
        action="store_true",
        help="leave out the linked skills (linking a new taxonomy embeds its labels first)",
    )
    p.set_defaults(func=report_command)


def report_command(args) -> int:
    fmt = args.format.lower().lstrip(".")
    fmt = "md" if fmt == "markdown" else fmt
    if fmt not in REPORT_FORMATS:
        raise ValueError(f"unknown report format {args.format!r}: choose html or md")
    project, state = project_and_state(args, must_exist=True)
    versions = state.registry().versions()
    out = args.out or state.reports / f"report.{fmt}"
    if out.is_dir():  # refused before its PNGs are written beside it
        raise ValueError(f"--out {out} is a folder: name the report file, e.g. {out}/report.{fmt}")
    # a folder that cannot be made fails now, not after the skills are linked (a taxonomy's
    # first use embeds its labels: minutes for ESCO)
    out.parent.mkdir(parents=True, exist_ok=True)
    live = [r for r in annotation_records(project, state) if not r.cancelled and not r.deleted]
    serving = next((v.version for v in versions if v.status == "serving"), None)
    summary = {
        "annotations": len(live),
        "serving": serving,
        "rounds": len(versions),
        "refused": sum(v.status == "refused" for v in versions),
    }
    labels = project.label_values or version_labels(versions)
    skills = None
    if not args.no_skills:
        from backend.profiles import linked_skills

        skills = linked_skills(project, state)
    path = write_report(project.name, versions, out, fmt, labels, summary, skills)
    print(path)
    return 0
