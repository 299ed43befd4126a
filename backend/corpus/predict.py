"""`skillloop predict --ray-address ...`: a corpus tagged (and linked) on Ray into an output
folder of Parquet (backend/corpus/outputs.py), resumable block by block; `run_job` is the
driver `skillloop link --ray-address` (backend/corpus/link.py) runs too."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.bulk_predict import TaggerSpec
from backend.corpus.actors import BlockTagger, JobSettings, LinkerParts
from backend.corpus.engine import connect, disconnect, on_cluster, ray_version, run_blocks
from backend.corpus.outputs import assemble, done_keys, remove_stale
from backend.corpus.sources import expand_inputs, plan_blocks


@dataclass
class CorpusJob:
    inputs: list[str]
    out: Path
    address: str = "local"
    actors: int | None = None  # default: the cluster's CPUs
    block_rows: int = 2000
    max_chars: int = 100_000
    studio_config: Any = None  # a parsed labeling config: also write label-studio.json
    progress: bool = True


def run_predict(spec: TaggerSpec, job: CorpusJob, linker=None, top_k: int = 5) -> dict:
    """Tag every planned block not already done; returns the summary over all blocks."""
    settings = JobSettings(str(job.out.resolve()), job.max_chars, job.studio_config)
    summary = run_job(job, BlockTagger, (spec, settings), linker, top_k, "tagging")
    say(
        f"predicted {summary['posts']} posts ({summary['spans']} spans, {summary['linked']} "
        f"linked) in {summary['blocks']} blocks; {summary['rejects']} rejected rows "
        f"(-> {job.out / 'rejects.jsonl'}); {summary['skipped_blocks']} blocks done before; "
        f"{summary['seconds']} s on Ray {summary['ray']}"
    )
    return summary


def run_job(
    job: CorpusJob,
    actor: type,
    args: tuple,
    linker=None,
    top_k: int = 5,
    verb: str = "tagging",
    linked_rows: bool = False,
) -> dict:
    """`actor(*args, shipped_linker)` over every planned block not already done (the one
    driver of `predict` and `link` on Ray; on the cluster for a `ray://` address); returns
    the summary over all blocks."""
    return on_cluster(job.address, _run_job, job, actor, args, linker, top_k, verb, linked_rows)


def _run_job(
    job: CorpusJob,
    actor: type,
    args: tuple,
    linker,
    top_k: int,
    verb: str,
    linked_rows: bool,
) -> dict:
    started = time.perf_counter()
    version = ray_version()
    files = expand_inputs(job.inputs)
    blocks = list(plan_blocks(files, job.block_rows))
    keys = [b.key for b in blocks]
    job.out.mkdir(parents=True, exist_ok=True)
    removed = remove_stale(job.out, set(keys))
    if removed:
        say(f"removed the outputs of {removed} blocks of inputs no longer given or changed")
    done = done_keys(job.out)
    todo = [b for b in blocks if b.key not in done]
    say(
        f"{len(files)} input files, {len(blocks)} blocks; {len(blocks) - len(todo)} already "
        f"done in {job.out}"
    )
    if todo:
        cpus = connect(job.address)
        actors = job.actors or cpus
        try:
            shipped = None
            if linker is not None:  # the label embeddings, built once, to every actor
                import ray

                shipped = [ray.put(LinkerParts.of(linker, top_k))]
            say(f"{verb} {len(todo)} blocks on Ray {version} with {actors} actor(s)")
            for count, row in enumerate(run_blocks(actor, todo, (*args, shipped), actors), 1):
                if job.progress:
                    say(f"block {count}/{len(todo)} {row['key']}: {row['posts']} posts")
        finally:
            disconnect()
    summary = assemble(job.out, keys, job.studio_config is not None, linked_rows)
    summary |= {
        "skipped_blocks": len(blocks) - len(todo),
        "seconds": round(time.perf_counter() - started, 1),
        "ray": version,
    }
    return summary


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
