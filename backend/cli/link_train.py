"""`skillloop link-train`, `link-versions`, `link-rollback`: a project's linker versions.

A linker round trains an adapter over the project's cached label embeddings (minutes on a
CPU), scores it on validation pairs, and serves it only if its validation accuracy@1 is
not worse than the serving linker's (training/linker_round.py). Versions live in
`<state>/<project>/linkers/` beside the tagger's `models/`; `skillloop link --project`,
`predict --link` and `export --link` use the serving one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from backend.cli.options import add_project_options, project_and_state, roll_back
from labeling.link_pairs import project_link_pairs
from training.linker_settings import DEFAULT_CROSS_WEIGHT

if TYPE_CHECKING:
    from labeling.project import Project
    from labeling.state import ProjectState
    from training.link_cross import CrossStage
    from training.taxonomy import Taxonomy


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("link-train", help="train, gate and register a linker version")
    add_project_options(p)
    p.add_argument(
        "--validation",
        action="append",
        default=[],
        help="validation pairs: a linking CSV (sentence,span,sub_span,label) or JSONL "
        '({"span", "sentence"?, "taxonomy_ids"}); repeatable; these never train',
    )
    p.add_argument(
        "--pairs", help='extra training pairs, JSONL {"span": ..., "taxonomy_id": ...} per line'
    )
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--minutes", type=float, default=15.0, help="training time budget")
    p.add_argument("--preferred-weight", type=float, default=0.5)
    p.add_argument(
        "--cross-minutes",
        type=float,
        default=0.0,
        help="train a cross-encoder re-ranking stage for this long instead of an adapter "
        "(0 = the adapter; docs/linking.md: 50 minutes on two cores for ESCO)",
    )
    p.add_argument("--cross-steps", type=int, default=100_000, help="its steps at most")
    p.add_argument(
        "--cross-weight",
        type=float,
        default=DEFAULT_CROSS_WEIGHT,
        help="its squashed score's weight among the re-ranking scores",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=link_train_command)

    p = subparsers.add_parser("link-versions", help="list a project's linker versions")
    add_project_options(p)
    p.set_defaults(func=link_versions_command)

    p = subparsers.add_parser("link-rollback", help="serve an earlier linker version again")
    add_project_options(p)
    p.add_argument("version", help="the version to serve, e.g. v0001")
    p.add_argument("--reason", default="")
    p.set_defaults(func=link_rollback_command)


def store_pairs(state: ProjectState, taxonomy: Taxonomy) -> list[tuple[str, str]]:
    """Annotator-confirmed and corrected (span text, taxonomy id) pairs from the project's
    store (labeling.link_pairs); links to entries this taxonomy lacks are left out."""
    if not state.has_store():
        return []
    pairs = []
    for pair in project_link_pairs(state):
        try:
            taxonomy.get(pair.taxonomy_id)
        except KeyError:
            continue
        pairs.append(pair.pair())
    return pairs


def base_encoder(project: Project) -> str:
    """The encoder adapters sit on: the one of the linker folder `[linking] linker` names,
    else the backbone."""
    from training.linker import LinkerSettings

    if project.linking.linker in ("", "backbone"):
        return "backbone"
    folder = project.folder / project.linking.linker
    encoder = LinkerSettings.read(folder).encoder
    return str(folder) if encoder == "." else encoder


def read_pairs(path: str | Path, taxonomy: Taxonomy) -> list[tuple[str, str]]:
    """(span, taxonomy_id) pairs from JSONL; errors name the line."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"pairs file not found: {path}")
    pairs = []
    from training.datasets import jsonl_objects

    with open(path, encoding="utf-8") as handle:
        for number, row in jsonl_objects(handle, str(path)):
            if not all(isinstance(row.get(k), str) for k in ("span", "taxonomy_id")):
                raise ValueError(f'{path}:{number}: needs "span" and "taxonomy_id" strings')
            try:
                taxonomy.get(row["taxonomy_id"])
            except KeyError:
                raise ValueError(
                    f"{path}:{number}: no entry {row['taxonomy_id']!r} in {taxonomy.name}"
                ) from None
            pairs.append((row["span"], row["taxonomy_id"]))
    return pairs


def cross_stage(args: argparse.Namespace) -> CrossStage | None:
    """The cross-encoder stage `--cross-minutes` asks for (None without it)."""
    from training.link_cross import CrossConfig, CrossStage

    if args.cross_minutes < 0 or args.cross_steps < 1:
        raise ValueError("--cross-minutes must be at least 0 and --cross-steps at least 1")
    if args.cross_weight <= 0:
        raise ValueError("--cross-weight must be above 0")
    if not args.cross_minutes:
        return None
    config = CrossConfig(steps=args.cross_steps, max_seconds=args.cross_minutes * 60)
    return CrossStage(config, args.cross_weight)


def link_train_command(args: argparse.Namespace) -> int:
    from training.linker_adapter import AdapterConfig
    from training.linker_eval import read_gold
    from training.linker_round import train_linker_round
    from training.taxonomy import load_taxonomy

    project, state = project_and_state(args)
    if not project.linking.taxonomy:
        raise ValueError(
            f'project {project.name} names no taxonomy: add [linking] taxonomy = "esco"'
        )
    if not args.validation:
        raise ValueError("name validation pairs with --validation FILE (they gate the version)")
    if args.steps < 1 or args.minutes <= 0:
        raise ValueError("--steps must be at least 1 and --minutes above 0")
    if not 0.0 <= args.preferred_weight <= 1.0:
        raise ValueError("--preferred-weight must be between 0 and 1")
    cross = cross_stage(args)
    taxonomy = load_taxonomy(project.linking.taxonomy, project.folder)
    validation = [read_gold(path, taxonomy) for path in args.validation]
    pairs = store_pairs(state, taxonomy)
    print(f"{len(pairs)} confirmed or corrected links from the store", file=sys.stderr)
    if args.pairs:
        pairs += read_pairs(args.pairs, taxonomy)
    config = AdapterConfig(
        steps=args.steps, max_seconds=args.minutes * 60, preferred_weight=args.preferred_weight
    )
    registry = state.linker_registry()
    cache = state.linking_cache
    encoder = base_encoder(project)
    print(f"training a linker for {project.name} ({taxonomy.summary()}) ...", file=sys.stderr)
    outcome = train_linker_round(
        taxonomy,
        registry,
        validation,
        cache,
        pairs,
        config,
        trigger="link-train",
        encoder_source=encoder,
        progress=not args.no_progress,
        cross=cross,
    )
    for name, figures in outcome.figures.items():
        old = outcome.baseline[name]
        print(
            f"{name}: accuracy@1 {figures['accuracy@1']:.3f} (serving {old['accuracy@1']:.3f}), "
            f"R-Precision@5 {figures['r_precision@5']:.3f}, threshold {figures['threshold']:.2f}"
        )
    print(
        f"{outcome.version.version} {outcome.version.status}: {outcome.reason}; "
        f"{outcome.extra_pairs_used} extra pairs trained"
        + (
            f", {outcome.extra_pairs_dropped} dropped (validation spans)"
            if outcome.extra_pairs_dropped
            else ""
        )
        + f"; timings {json.dumps(outcome.timings)}"
    )
    return 0


def link_versions_command(args: argparse.Namespace) -> int:
    project, state = project_and_state(args, must_exist=True)
    registry = state.linker_registry()
    versions = registry.versions()
    if not versions:
        print(f"{project.name}: no linker versions yet (skillloop link-train)")
        return 0
    for version in versions:
        score = version.metrics.get("accuracy@1")
        shown = "n/a" if score is None else f"{score:.3f}"
        print(f"{version.version}  {version.status:9s}  accuracy@1 {shown}  {version.reason}")
    return 0


def link_rollback_command(args: argparse.Namespace) -> int:
    project, state = project_and_state(args, must_exist=True)
    reason = args.reason or "rolled back with link-rollback"
    version, was = roll_back(state.linker_registry(), "linker", project.name, args.version, reason)
    print(f"{project.name}: linker {version.version} is serving now (was {was})")
    return 0
