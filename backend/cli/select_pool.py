"""`skillloop select --pool FILES`: the next batch out of a corpus scored on Ray
(backend/corpus/selection.py), optionally imported into the project's Label Studio project
with its predictions (`--import-to-studio`), posts already there left out."""

from __future__ import annotations

import argparse
import sys

from backend.bulk_predict import Tagged, TaggerSpec, studio_task
from backend.cli.select_rows import batch_row, print_batch
from backend.corpus.outputs import text_hash
from backend.service.config import max_text_chars_from_env


def add_pool_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--pool",
        help="pick from a corpus instead of the project's posts: JSONL or Parquet files, a "
        "glob ('posts/*.parquet') or a folder, scored on Ray (docs/ray.md)",
    )
    p.add_argument(
        "--ray-address",
        default="local",
        metavar="local|auto|HOST:PORT|ray://HOST:PORT",
        help="with --pool: where Ray runs (default: a local Ray for this command; with "
        "ray:// the scoring runs on the cluster, --pool a path there)",
    )
    p.add_argument("--workers", type=int, help="with --pool: Ray actors (default: its CPUs)")
    p.add_argument("--block-rows", type=int, default=2000, help="with --pool: lines per block")
    p.add_argument(
        "--import-to-studio",
        action="store_true",
        help="with --pool: create the batch's tasks with predictions in the project's Label "
        "Studio project (--studio-project ID, else the one titled as the project), posts "
        "already there skipped; $LABEL_STUDIO_URL/_API_KEY or the local Label Studio",
    )


def select_pool(args, project, labelled, model: str, n: int, name: str) -> int:
    from backend.corpus.engine import check_address
    from backend.corpus.selection import ScoreSettings, SelectJob, keep_for, run_select

    check_address(args.ray_address)
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    keep = keep_for(name, n)
    skip = {text_hash(doc.text) for doc in labelled} | {f"id:{d.id}" for d in labelled if d.id}
    studio = _studio_target(args, project) if args.import_to_studio else None
    if studio is not None:
        skip |= studio[2]
    spec = project.tagger_spec(model)
    labels = tuple(span.label for doc in labelled for span in doc.spans)
    settings = ScoreSettings(name, keep, labels, args.seed, max_text_chars_from_env())
    print(f"scoring the pool {args.pool} on Ray ({args.ray_address})", file=sys.stderr)
    job = SelectJob(
        [args.pool],
        settings,
        n,
        args.budget_tokens,
        skip,
        address=args.ray_address,
        actors=args.workers,
        block_rows=args.block_rows,
    )
    chosen = run_select(spec, job)
    counts = chosen.counts
    print(
        f"{counts['rows']} rows in {counts['blocks']} blocks: {counts['rejects']} rejected, "
        f"{counts['skipped']} already labelled or in Label Studio",
        file=sys.stderr,
    )
    version = chosen.pool[0].version if chosen.pool else "?"
    pool_size = counts["rows"] - counts["rejects"] - counts["skipped"]
    rows = [
        batch_row(rank, pick, chosen.pool[pick.index].item, _title(chosen, pick), chosen.strategy)
        for rank, pick in enumerate(chosen.picks, 1)
    ]
    print_batch(rows, version, chosen.strategy, args.json, f"{pool_size} posts of the pool")
    if studio is not None:
        _import(studio, project, spec, chosen)
    return 0


def _title(chosen, pick) -> str:
    return str(chosen.pool[pick.index].data.get("title") or "")


def _studio_target(args, project) -> tuple:
    """(client, Label Studio project id, the text hashes and ids of its tasks)."""
    from backend.cli.studio import studio_client

    client = studio_client(
        argparse.Namespace(url=None, api_key=None, state_dir=args.state_dir, port=None)
    )
    project_id = args.studio_project or client.find_project(project.title)
    if project_id is None:
        raise ValueError(
            f"no Label Studio project titled {project.title!r}: skillloop studio project create "
            f"--project {project.folder}, or pass --studio-project ID"
        )
    from labeling.studio.client import POST_ID_KEY

    there: set[str] = set()
    for task in client.tasks(project_id):
        data = task.get("data") or {}
        text = data.get(project.config.value_key)
        if isinstance(text, str):
            there.add(text_hash(text))
        if data.get(POST_ID_KEY) is not None:
            there.add(f"id:{data[POST_ID_KEY]}")
    return client, project_id, there


def _import(studio, project, spec: TaggerSpec, chosen) -> None:
    from labeling.active.strategies import task_score
    from labeling.studio.client import POST_ID_KEY
    from labeling.studio.config import map_model_labels

    client, project_id, _ = studio
    names = map_model_labels(project.config, spec.labels)
    tasks = []
    for pick in chosen.picks:
        candidate = chosen.pool[pick.index]
        data = dict(candidate.data) | {POST_ID_KEY: pick.id}
        tagged = Tagged(candidate.spans, round(task_score(candidate.item, chosen.strategy), 6))
        tasks.append(studio_task(data, tagged, candidate.version, project.config, names))
    result = client.import_tasks(project_id, tasks)
    print(
        f"Label Studio project {project_id}: created {result.imported} tasks with predictions, "
        f"{result.skipped} already there ({client.url})",
        file=sys.stderr,
    )
