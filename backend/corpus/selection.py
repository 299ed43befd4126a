"""`skillloop select --pool`: the next batch out of a corpus, scored on Ray.

Each actor scores its blocks with the serving model and the strategy the service uses
(`labeling.active.strategies.build_strategy`) and sends back only each block's best `keep`
candidates (`keep` = n x the diversity factor for `+diverse`, else n), their per-word
probabilities included. The driver keeps the best `keep` of all blocks as they arrive
(memory: `keep` candidates, never the pool) and runs the strategy's own `query` on them:
for strategies whose score is the post's own (all but random and BALD), the best `keep` of
the pool are the best `keep` of the union of the blocks', so the batch is the one the
single-process `skillloop select` picks from the same pool (diversity clustering included,
as it only looks at the top n x factor). With a token budget the fallbacks past those
`keep` are not available, a documented difference.
"""

from __future__ import annotations

import heapq
import pickle
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backend.bulk_predict import TaggerSpec
from backend.corpus.actors import CHUNK, blocks_of, one_thread
from backend.corpus.outputs import text_hash
from backend.corpus.sources import Block, Row, post_id, read_block


@dataclass
class Candidate:
    """One post that may be picked: where it came from, the model's view of it."""

    block: str
    row: int
    file: str
    data: dict  # the input row's fields
    item: Any  # labeling.active.base.PoolItem
    score: float
    spans: list = field(default_factory=list)  # training.text.Span
    version: str = ""


@dataclass(frozen=True)
class ScoreSettings:
    strategy: str
    keep: int
    labelled: tuple[str, ...]  # labels of the labelled spans, for +balanced
    seed: int
    max_chars: int
    threads: int = 1


def keep_for(strategy: str, n: int) -> int:
    """How many candidates each block (and the driver) keeps for a batch of `n`."""
    from labeling.active.modifiers import DiverseBatch
    from labeling.active.strategies import StrategyName, get_strategy

    if StrategyName.parse(strategy).needs_head:
        raise ValueError(f"{strategy!r} samples the model's head per post: not with --pool yet")
    built = get_strategy(strategy, label_counts={})
    return n * built.factor if isinstance(built, DiverseBatch) else n


class BlockScorer:
    """A Ray Data callable class: the serving model and the strategy, once per actor."""

    def __init__(self, spec: TaggerSpec, settings: ScoreSettings, skip: list | None = None):
        import ray

        from labeling.active.strategies import build_strategy

        one_thread(settings.threads)
        self.settings, self.tagger = settings, spec.load()
        self.strategy = build_strategy(settings.strategy, dict, settings.labelled)
        self.skip: set[str] = ray.get(skip[0]) if skip else set()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        out: dict[str, list] = {"key": [], "rows": [], "skipped": [], "rejects": [], "kept": []}
        for block in blocks_of(batch):
            kept, counts = self.block(block)
            out["key"].append(block.key)
            for name in ("rows", "skipped", "rejects"):
                out[name].append(counts[name])
            out["kept"].append(pickle.dumps(kept))
        return out

    def block(self, block: Block) -> tuple[list[Candidate], dict]:
        counts = {"rows": 0, "skipped": 0, "rejects": 0}
        best: list = []
        pending: list[Row] = []
        # random draws differ per block (one seed for all would repeat the same draws)
        self.rng = np.random.default_rng([self.settings.seed, zlib.crc32(block.key.encode())])
        for row in read_block(block, self.settings.max_chars):
            counts["rows"] += 1
            if row.data is None:
                counts["rejects"] += 1
            elif text_hash(row.data["text"]) in self.skip or f"id:{post_id(row)}" in self.skip:
                counts["skipped"] += 1
            else:
                pending.append(row)
            if len(pending) == CHUNK:
                self.chunk(block, pending, best)
                pending = []
        if pending:
            self.chunk(block, pending, best)
        return [entry[-1] for entry in best], counts

    def chunk(self, block: Block, rows: Sequence[Row], best: list) -> None:
        from labeling.active.base import item_from_prediction

        texts = [row.data["text"] for row in rows if row.data is not None]
        predictions = self.tagger.predict(texts)
        items = [
            item_from_prediction(p, post_id(r)) for p, r in zip(predictions, rows, strict=True)
        ]
        for item in items:  # as `skillloop select`: the tag profile is the post vector
            item.embedding = item.probs.mean(axis=0) if item.cost else None
        scores = self.strategy.scores(items, self.rng)
        for row, item, score, prediction in zip(rows, items, scores, predictions, strict=True):
            if not np.isfinite(score):
                continue
            assert row.data is not None
            candidate = Candidate(
                block.key,
                row.number,
                row.file,
                row.data,
                item,
                float(score),
                list(prediction.spans),
                self.tagger.version,
            )
            offer(best, candidate, 0, self.settings.keep)


def offer(best: list, candidate: Candidate, ordinal: int, keep: int) -> None:
    """Keep the `keep` highest scores in the min-heap `best`; on equal scores the earlier
    post (block `ordinal`, then row) stays, as a stable sort of the pool keeps it."""
    entry = (candidate.score, -ordinal, -candidate.row, id(candidate), candidate)
    if len(best) < keep:
        heapq.heappush(best, entry)
    elif entry[:3] > best[0][:3]:
        heapq.heapreplace(best, entry)


@dataclass
class Selected:
    picks: list  # labeling.active.base.Pick, index into `pool`
    pool: list[Candidate]
    strategy: Any
    counts: dict


def select_from(
    results: Iterable[dict],
    order: dict[str, int],
    settings: ScoreSettings,
    n: int,
    budget_tokens: int | None,
) -> Selected:
    """The batch out of the actors' results (streamed): the best `keep` overall, then the
    strategy's `query` over them in pool order."""
    from labeling.active.strategies import build_strategy

    counts = {"blocks": 0, "rows": 0, "skipped": 0, "rejects": 0}
    best: list = []
    for result in results:
        counts["blocks"] += 1
        for name in ("rows", "skipped", "rejects"):
            counts[name] += int(result[name])
        for candidate in pickle.loads(result["kept"]):
            offer(best, candidate, order[candidate.block], settings.keep)
    pool = sorted((entry[-1] for entry in best), key=lambda c: (order[c.block], c.row))
    strategy = build_strategy(settings.strategy, dict, settings.labelled)
    items = [c.item for c in pool]
    picks = strategy.query(items, n, budget_tokens=budget_tokens, rng=settings.seed)
    return Selected(picks, pool, strategy, counts)


def block_order(blocks: Sequence[Block]) -> dict[str, int]:
    return {block.key: i for i, block in enumerate(blocks)}


@dataclass
class SelectJob:
    """One `select --pool` run: the pool, the batch asked for, where Ray runs it."""

    inputs: list[str]  # files, globs or folders (`backend.corpus.sources.expand_inputs`)
    settings: ScoreSettings
    n: int
    budget_tokens: int | None = None
    skip: set[str] = field(default_factory=set)  # text hashes and "id:" ids left out
    address: str = "local"
    actors: int | None = None  # default: the cluster's CPUs
    block_rows: int = 2000
    progress: bool = True


def run_select(spec: TaggerSpec, job: SelectJob) -> Selected:
    """Score the job's pool on Ray and pick its batch (on the cluster for a `ray://`
    address: only the selection comes back)."""
    from backend.corpus.engine import on_cluster

    return on_cluster(job.address, _run_select, spec, job)


def _run_select(spec: TaggerSpec, job: SelectJob) -> Selected:
    import ray

    from backend.corpus.engine import connect, disconnect, run_blocks
    from backend.corpus.sources import expand_inputs, plan_blocks

    blocks = list(plan_blocks(expand_inputs(job.inputs), job.block_rows))
    cpus = connect(job.address)
    try:
        args = (spec, job.settings, [ray.put(job.skip)])
        actors = job.actors or cpus
        results = run_blocks(BlockScorer, blocks, args, actors, progress=job.progress)
        return select_from(results, block_order(blocks), job.settings, job.n, job.budget_tokens)
    finally:
        disconnect()
