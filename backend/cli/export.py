"""`skillloop export`: a curated dataset (CoNLL, JSONL, HF datasets, skill profiles)."""

from __future__ import annotations

from pathlib import Path

from backend.cli.options import (
    add_gold_option,
    add_project_options,
    add_studio_export_option,
    annotation_records,
    project_and_state,
)


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="a curated dataset: CoNLL, JSONL or HF datasets")
    add_project_options(p)
    add_studio_export_option(p)
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
    add_gold_option(p, "also export the project's gold file ([data] gold) posts")
    p.add_argument(
        "--gold-only",
        action="store_true",
        help="export the gold file's posts alone: the store is not read (no state needed)",
    )
    p.add_argument("--link", action="store_true", help="link spans to the project's taxonomy")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace --out even when it holds files that are not a previous export "
        "(they are deleted once the export is complete)",
    )
    p.set_defaults(func=export_command)


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
    records = [] if args.gold_only else annotation_records(project, state, args.from_studio_export)
    layers = project.model.layers
    gold = gold_posts(project.gold(), layers) if args.include_gold or args.gold_only else []
    if not records and not gold:
        raise ValueError(
            f"no annotations in {state.store_location}: nothing to export "
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
        layers=layers,
    )
    profiles = None
    # written beside --out and moved there once complete: a failed export leaves nothing
    with staged_folder(args.out, force=args.force) as stage:
        result = export_dataset(records, stage, settings, gold)
        if args.format == "profiles":
            from backend.profiles import profiles_export

            profiles = profiles_export(result, project, state)
        elif args.link:
            from backend.link_export import link_export
            from backend.linkers import project_linker

            link_export(result, *project_linker(project, state))
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
