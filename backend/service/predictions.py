"""/predict's work: tasks read, cut and checked one by one, predicted within the request's
budget, and answered one entry per task, in order.

Label Studio 1.23 drops a whole batch whose answer has a wrong number of entries, stores
each entry that has a `result` (an empty one included: the task then counts as predicted
by that model version and is not asked for again), and skips, with a logged error, an
entry without `result` (ml/models.py, `_get_predictions_from_ml_backend`). So:

- a task it cannot read (no text field, a lone surrogate in its text) gets an empty
  result with score 1.0 (served last), and a warning in the log;
- a task the budget did not reach (or past `max_tasks`) gets an entry WITHOUT `result`:
  Label Studio stores nothing for it and asks again later (the next "Retrieve
  predictions", or when an annotator opens it), instead of keeping an empty prediction;
- a text longer than `max_text_chars` is predicted up to the limit; its entry says
  `"text_cut_at": N`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from backend.service.requests import BadRequest
from labeling.studio.config import LabelingConfig
from labeling.studio.links import link_options, linked_span, span_regions
from labeling.studio.tasks import TaskError, lone_surrogates, spans_to_regions, task_text

if TYPE_CHECKING:
    from backend.service.model_holder import ServingModel
    from backend.service.services import Services

log = logging.getLogger(__name__)
LINKER_WAIT_S = 30.0


@dataclass(frozen=True)
class Limits:
    max_text_chars: int
    max_tasks: int
    deadline: float  # a holder.clock() value by which the answer must be under way


@dataclass
class _Read:
    text: str | None = None
    error: str | None = None
    cut: bool = False


def _read(task: object, labeling: LabelingConfig, max_chars: int) -> _Read:
    try:
        text = task_text(task, labeling)  # type: ignore[arg-type]
    except TaskError as err:
        return _Read(error=str(err))
    cut = len(text) > max_chars
    text = text[:max_chars]
    if lone_surrogates(text):
        task_id = task.get("id", "?") if isinstance(task, Mapping) else "?"
        return _Read(error=f"task {task_id}: the text holds a lone UTF-16 surrogate")
    return _Read(text, cut=cut)


def predict_tasks(
    s: Services,
    tasks: list,
    labeling: LabelingConfig,
    names: dict[str, str],
    model: ServingModel,
    limits: Limits,
) -> list[dict]:
    """One entry per task, in order (module docstring); `s` is the app's Services."""
    reads = [_read(task, labeling, limits.max_text_chars) for task in tasks[: limits.max_tasks]]
    if reads and all(r.error is not None for r in reads):
        # nothing readable at all: a config/data mismatch the user must see, not empty results
        raise BadRequest(f"no task has a readable text: {reads[0].error}", 422)
    texts = {i: r.text for i, r in enumerate(reads) if r.text is not None}
    order = list(texts)
    predictions, model = s.holder.predict(list(texts.values()), model, limits.deadline)
    by_task = dict(zip(order, predictions, strict=True)) if predictions is not None else {}
    links = _links(s, labeling, texts, by_task, limits)
    results: list[dict] = []
    not_reached = 0
    for i in range(len(tasks)):
        read = reads[i] if i < len(reads) else None
        if read is not None and read.error is not None:
            log.warning("predict: task %d of %d answered empty: %s", i + 1, len(tasks), read.error)
            s.metrics.inc("prediction_task_errors_total")
            results.append({"result": [], "score": 1.0, "model_version": model.version})
            continue
        if read is not None and predictions is None:  # no model yet
            results.append({"result": [], "model_version": model.version})
            continue
        prediction = by_task.get(i)
        if prediction is None or read is None:
            not_reached += 1
            reason = "time budget spent" if read is not None else "past the tasks limit"
            results.append({"model_version": model.version, "not_reached": reason})
            continue
        spans = prediction.spans
        if i in links:
            spans = [linked_span(span, link) for span, link in zip(spans, links[i], strict=True)]
        regions = spans_to_regions(spans, labeling, texts[i], names)
        if i in links and s.link_options is not None and isinstance(tasks[i], dict):
            options = link_options(links[i], span_regions(spans, regions, labeling))
            s.link_options.submit(tasks[i], options)
        entry = {
            "result": regions,
            "score": round(s.scorer(prediction), 6),
            "model_version": model.version,
        }
        if read.cut:
            entry["text_cut_at"] = limits.max_text_chars
        results.append(entry)
    if not_reached:
        log.warning(
            "predict: %d of %d tasks not reached (budget or max tasks); answered without a "
            "result so Label Studio asks for them again",
            not_reached,
            len(tasks),
        )
        s.metrics.inc("prediction_tasks_not_reached_total", not_reached)
    s.metrics.inc("predictions_total", len(tasks) - not_reached, model_version=model.version)
    return results


def _links(
    s: Services, labeling: LabelingConfig, texts: dict, by_task: dict, limits: Limits
) -> dict[int, list]:
    """Task index -> the links of its predicted spans, when the project links, the config
    has a link control, the linker is loaded and the budget is not spent (milliseconds per
    span with cached label embeddings). Never fails a prediction: links are an extra."""
    linker = s.linker
    if linker is None or not linker.enabled or not labeling.links or not by_task:
        return {}
    # a linker still loading (seconds, from cached label embeddings) is waited for like the
    # model: Label Studio does not ask again for a task it holds a prediction of; one still
    # embedding the taxonomy's labels (minutes) is not: spans go without links meanwhile
    if linker.embedding() is None:
        linker.wait_ready(max(0.0, min(LINKER_WAIT_S, limits.deadline - s.holder.clock() - 1.0)))
    if linker.linker is None:
        return {}
    if s.holder.clock() >= limits.deadline:
        log.warning("predict: no time left to link spans")
        return {}
    order = [i for i in by_task if by_task[i].spans]
    try:
        found = linker.link([texts[i] for i in order], [by_task[i].spans for i in order])
    except Exception:
        log.exception("linking failed; predictions go without links")
        return {}
    s.metrics.inc("linked_spans_total", sum(len(f) for f in found))
    return dict(zip(order, found, strict=True))


def deadline_from(started: float, budget_s: float, clock: Callable[[], float]) -> float:
    """`started` is a time.perf_counter() value; the deadline is on `clock` (the holder's)."""
    return clock() + budget_s - (time.perf_counter() - started)
