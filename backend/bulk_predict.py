"""Bulk prediction for `skillloop predict`: in this process, or in N worker processes.

Workers are spawned (never forked: a forked torch or ONNX Runtime thread pool can hang),
each runs one torch thread and loads the model once, and chunks of texts go to them with
`Pool.imap`, so results come back in input order. On two cores, two one-thread workers
beat one two-thread process on a large set (benchmarks/predict_workers.py, docs/tagger.md).

Output rows are either skillloop's JSONL (`{"id"?, "text", "spans"}`) or Label Studio's
task import JSON (a list of `{"data", "predictions"}`), regions from
`labeling.studio.tasks.spans_to_regions` (code-point offsets, as Label Studio reads them).
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from training.tagger_spec import TaggerSpec  # what a worker loads (picklable)

FORMATS = ("jsonl", "label-studio")


@dataclass(frozen=True, slots=True)
class Tagged:
    """One text's result, small enough to send between processes (no probabilities)."""

    spans: list  # training.text.Span
    score: float  # task score, as /predict gives it (labeling.active.task_score.TaskScorer, MNLP)


@dataclass(frozen=True, slots=True)
class Batch:
    version: str  # the tagger's model_version, e.g. "name@hash+onnx-int8"
    precision: str
    results: list[Tagged]


def tag(tagger, texts: Sequence[str]) -> Batch:
    from labeling.active.task_score import TaskScorer

    scorer = TaskScorer()
    results = [Tagged(p.spans, round(scorer(p), 6)) for p in tagger.predict(list(texts))]
    return Batch(tagger.version, tagger.precision, results)


def predict_chunks(
    spec: TaggerSpec,
    chunks: Sequence[Sequence[str]],
    workers: int | None,
    on_load: Callable[[str], None] | None = None,
) -> Iterator[Batch]:
    """Each chunk's batch, in order. `workers` None: in this process (torch's threads as
    set); N >= 1: N spawned processes with one torch thread each."""
    if not workers:
        tagger = spec.load()
        if on_load:
            on_load(f"{tagger.version} ({tagger.precision}) in this process")
        for chunk in chunks:
            yield tag(tagger, chunk)
        return
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    context = multiprocessing.get_context("spawn")
    ready = context.Queue()
    with context.Pool(workers, initializer=_start_worker, initargs=(spec, ready)) as pool:
        for _ in range(workers):  # each worker says once that its model is loaded (or not)
            problem = ready.get(timeout=LOAD_TIMEOUT)
            if problem:
                raise ValueError(f"a worker could not load the model: {problem}")
        if on_load:
            on_load(f"{workers} worker process(es), one torch thread each")
        yield from pool.imap(_tag_in_worker, chunks)


LOAD_TIMEOUT = 900  # seconds for a worker to load the model (ONNX export included)
_worker_tagger = None


def _start_worker(spec: TaggerSpec, ready) -> None:
    """Pool initializer: one torch thread, the model loaded once. A failure is reported
    through `ready`, not raised (a raising initializer makes Pool respawn it forever)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    global _worker_tagger
    try:
        _worker_tagger = spec.load()
    except Exception as err:  # reported to the parent, which raises it
        ready.put(f"{type(err).__name__}: {err}")
        return
    ready.put("")


def _tag_in_worker(texts: Sequence[str]) -> Batch:
    return tag(_worker_tagger, texts)


# ------------------------------------------------------------------ output


def jsonl_row(row: dict, tagged: Tagged, links: Sequence[dict] | None = None) -> str:
    """One output line; `links` (one dict per span, `training.linker.link_fields`) adds
    each span's taxonomy fields."""
    from training.datasets import span_dict

    spans = [span_dict(s) for s in tagged.spans]
    for span, fields in zip(spans, links or [{}] * len(spans), strict=True):
        span |= fields
    result = {"id": row["id"]} if "id" in row else {}
    result |= {"text": row["text"], "spans": spans}
    if "text_cut_at" in row:  # the text was read up to the limit (`skillloop predict`)
        result["text_cut_at"] = row["text_cut_at"]
    return json.dumps(result, ensure_ascii=False)


def studio_task(row: dict, tagged: Tagged, version: str, config, label_names) -> dict:
    """A Label Studio import task: the row's fields as data (the text under the config's
    value key) and one prediction."""
    from labeling.studio.tasks import spans_to_regions

    text = row["text"]
    data = {k: v for k, v in row.items() if k != "text"} | {config.value_key: text}
    regions = spans_to_regions(tagged.spans, config, text, label_names)
    prediction = {"model_version": version, "score": tagged.score, "result": regions}
    return {"data": data, "predictions": [prediction]}


class StudioWriter:
    """Writes a JSON list of tasks, one per line, as results arrive."""

    def __init__(self, handle, config, model_labels: Sequence[str]):
        from labeling.studio.config import map_model_labels

        self.handle, self.config, self.count = handle, config, 0
        self.label_names = map_model_labels(config, model_labels)
        handle.write("[\n")

    def write(self, row: dict, tagged: Tagged, version: str) -> None:
        task = studio_task(row, tagged, version, self.config, self.label_names)
        self.handle.write((",\n" if self.count else "") + json.dumps(task, ensure_ascii=False))
        self.count += 1

    def close(self) -> None:
        self.handle.write("\n]\n" if self.count else "]\n")


def studio_config(path: str | None, labels: Sequence[str]):
    """The labeling config the regions are named after: a file's, else one built for the
    model's labels (`<Labels name="label" toName="text">`, text in `data.text`)."""
    from pathlib import Path

    from labeling.studio.config import LabelSpec, build_config, parse_config

    if path:
        if not Path(path).is_file():
            raise FileNotFoundError(f"labeling config not found: {path}")
        return parse_config(Path(path).read_text(encoding="utf-8"))
    return parse_config(build_config(LabelSpec(label) for label in labels))
