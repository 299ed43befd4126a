"""`skillloop status`, `rounds`, `report`, `export` and `quality`: what the model knows,
what annotators did, whether another round is worth it, and curated datasets.

Everything reads the project's state folder (annotation store, model registry) directly,
so it works whether or not the service is running; `status --url` asks a running service
for its live training progress instead.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from backend.cli_project import add_project_options, project_and_state
from backend.report import FORMATS as REPORT_FORMATS
from backend.report import round_rows, version_labels, write_report
from backend.settings import auth_from_env
from labeling.state import ProjectState


def register(subparsers) -> None:
    p = subparsers.add_parser("status", help="annotations, serving model, rounds, training")
    _common(p)
    p.add_argument("--url", help="ask a running service (GET URL/status) for live progress")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=status_command)

    p = subparsers.add_parser("rounds", help="every model version: lineage, data, scores")
    _common(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=rounds_command)

    p = subparsers.add_parser("report", help="HTML/Markdown report: learning curve, stopping hint")
    _common(p)
    p.add_argument("--format", default="html", help="html (default) or md")
    p.add_argument("--out", type=Path, help="report file (default: STATE/reports/report.FORMAT)")
    p.add_argument(
        "--no-skills",
        action="store_true",
        help="leave out the linked skills (linking a new taxonomy embeds its labels first)",
    )
    p.set_defaults(func=report_command)

    p = subparsers.add_parser("export", help="a curated dataset: CoNLL, JSONL or HF datasets")
    _common(p)
    _source(p)
    p.add_argument(
        "--format", help="conll, jsonl, hf, or profiles (one row per post: its linked skills)"
    )
    p.add_argument("--out", type=Path, help="output folder")
    p.add_argument(
        "--policy",
        default="reviewed",
        help="one annotation per post: reviewed (default), latest or majority",
    )
    p.add_argument("--seed", type=int, default=13, help="split seed (default 13)")
    p.add_argument("--split", default="0.8,0.1,0.1", help="train,dev,test shares")
    p.add_argument(
        "--duplicate-threshold",
        type=float,
        default=0.9,
        help="word 3-gram Jaccard at which posts count as duplicates (default 0.9)",
    )
    p.add_argument("--license", default="unspecified", help="licence for the dataset card")
    p.add_argument("--name", help="dataset name for the card (default: the project name)")
    _gold(p, "also export the project's gold file ([data] gold) posts")
    p.add_argument(
        "--gold-only",
        action="store_true",
        help="export the gold file's posts alone: the store is not read (no state needed)",
    )
    p.add_argument("--link", action="store_true", help="link spans to the project's taxonomy")
    p.set_defaults(func=export_command)

    p = subparsers.add_parser("quality", help="agreement, pre-annotation edits, label errors")
    _common(p)
    _source(p)
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
    _gold(p, "also check the gold file's posts for likely label errors")
    p.add_argument("--limit", type=int, default=30, help="likely errors to print (default 30)")
    p.add_argument("--json", type=Path, help="also write every figure and issue as JSON here")
    p.set_defaults(func=quality_command)


def _common(p) -> None:
    add_project_options(p)


def _gold(p, text: str) -> None:
    p.add_argument("--include-gold", action="store_true", help=text)


def _source(p) -> None:
    p.add_argument(
        "--from-studio-export",
        type=Path,
        metavar="FILE",
        help="read a Label Studio JSON export instead of the store",
    )


# ---------------------------------------------------------------- state


def _records(project, state: Path, studio_export: Path | None = None) -> list:
    """Annotation records (skipped and deleted ones included) from a Label Studio export
    file or the project's store; [] when the store does not exist yet."""
    if studio_export is not None:
        from labeling.studio.export_file import read_studio_export

        return read_studio_export(studio_export, project.config)
    if not ProjectState(state).has_store():
        return []
    with ProjectState(state).store() as store:
        return store.records(include_deleted=True, include_cancelled=True)


def _versions(state: Path) -> list:

    return ProjectState(state).registry().versions()


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


# ---------------------------------------------------------------- status


def status_command(args) -> int:
    from backend.status import (
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
    versions = _versions(state)
    records = _records(project, state)
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
    figures["state"] = str(state.absolute())
    figures["store"] = ProjectState(state.absolute()).store_location
    from training.embedding_progress import read_progress

    figures["linking"] = read_progress(state / "linking")  # the label embedding's progress
    print(json.dumps(figures, indent=2) if args.json else format_status(figures, state))
    return 0


# ---------------------------------------------------------------- rounds and report


def rounds_command(args) -> int:
    project, state = project_and_state(args, must_exist=True)
    versions = _versions(state)
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


def report_command(args) -> int:
    fmt = args.format.lower().lstrip(".")
    fmt = "md" if fmt == "markdown" else fmt
    if fmt not in REPORT_FORMATS:
        raise ValueError(f"unknown report format {args.format!r}: choose html or md")
    project, state = project_and_state(args, must_exist=True)
    versions = _versions(state)
    out = args.out or ProjectState(state).reports / f"report.{fmt}"
    if out.is_dir():  # refused before its PNGs are written beside it
        raise ValueError(f"--out {out} is a folder: name the report file, e.g. {out}/report.{fmt}")
    live = [r for r in _records(project, state) if not r.cancelled and not r.deleted]
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

        skills = linked_skills(project, state, args.state_dir)
    path = write_report(project.name, versions, out, fmt, labels, summary, skills)
    print(path)
    return 0


# ---------------------------------------------------------------- export and quality


def export_command(args) -> int:
    from labeling.curation.export import (
        FORMATS,
        POLICIES,
        ExportSettings,
        export_dataset,
        gold_posts,
        staged_folder,
    )

    if not args.format or args.format not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)} (got {args.format!r})")
    if args.out is None:
        raise ValueError("--out DIR is required: the folder to write the dataset to")
    if args.policy not in POLICIES:
        raise ValueError(f"--policy must be one of {', '.join(POLICIES)} (got {args.policy!r})")
    shares = _shares(args.split)
    # a Label Studio export file, or --gold-only, replaces the store: no state needed
    reads_store = args.from_studio_export is None and not args.gold_only
    project, state = project_and_state(args, must_exist=reads_store)
    records = [] if args.gold_only else _records(project, state, args.from_studio_export)
    gold = gold_posts(project.gold()) if args.include_gold or args.gold_only else []
    if not records and not gold:
        raise ValueError(
            f"no annotations in {ProjectState(state).store_location}: nothing to export "
            "(or pass --from-studio-export FILE, --include-gold)"
        )
    source = (
        f"Label Studio export {args.from_studio_export.name}"
        if args.from_studio_export
        else f"skillloop annotation store of project {project.name}"
    )
    if args.gold_only and not args.from_studio_export:
        source = f"the gold file of project {project.name} ({len(gold)} posts)"
    elif gold:
        source += f" and the project's gold file ({len(gold)} posts)"
    settings = ExportSettings(
        format=args.format,
        labels=project.label_values,
        policy=args.policy,
        seed=args.seed,
        shares=shares,
        duplicate_threshold=args.duplicate_threshold,
        license=args.license,
        source=source,
        name=args.name or project.name,
    )
    profiles = None
    # written beside --out and moved there once complete: a failed export leaves nothing
    with staged_folder(args.out) as stage:
        result = export_dataset(records, stage, settings, gold)
        if args.format == "profiles":
            from backend.profiles import profiles_export

            profiles = profiles_export(result, project, args.state_dir)
        elif args.link:
            from backend.commands_link import link_export, project_linker

            link_export(result, *project_linker(project, args.state_dir))
    result.moved_to(args.out)
    if profiles is not None:
        print(f"{result.out_dir / profiles.relative_to(stage)}: skill profiles")
    print(result.summary())
    return 0


def _shares(text: str) -> tuple[float, ...]:
    try:
        shares = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"--split must be three numbers like 0.8,0.1,0.1, got {text!r}") from None
    if len(shares) != 3 or any(s < 0 for s in shares) or sum(shares) <= 0:
        raise ValueError(f"--split must be three non-negative shares, got {text!r}")
    return shares


def quality_command(args) -> int:
    from backend.quality_view import print_quality, quality_figures

    if not 0 < args.threshold <= 1:
        raise ValueError(f"--threshold must be in (0, 1], got {args.threshold}")
    # a Label Studio export file is read instead of the store: no state needed
    project, state = project_and_state(args, must_exist=args.from_studio_export is None)
    records = _records(project, state, args.from_studio_export)
    gold = project.gold() if args.include_gold else []
    if not records and not gold:
        raise ValueError(
            f"no annotations in {ProjectState(state).store_location} "
            "(or pass --from-studio-export FILE, --include-gold)"
        )
    tagger = _tagger(project, state, args.model or "serving")
    figures = quality_figures(project, records, tagger, args.threshold, gold)
    if args.json:  # first: a --json path that cannot be written fails before any output
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2, ensure_ascii=False) + "\n")
    print_quality(figures, args.limit, sys.stdout)
    return 0


def _tagger(project, state: Path, model: str):
    """The model to look for label errors with, or None ('none', or no model yet)."""
    if model == "none":
        return None
    from training.tagger import Tagger

    registry = ProjectState(state).registry()
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
    return Tagger.load(
        str(source),
        project.label_values,
        project.model.label_map or None,
        max_tokens=project.model.max_tokens,
        stride=project.model.stride,
    )


def _f(x) -> str:
    return "-" if x is None else f"{float(x):.3f}"
