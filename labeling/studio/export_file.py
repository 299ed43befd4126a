"""Reading a Label Studio export file into annotation records, so a dataset can be curated
and its quality measured without the backend running.

Reads Label Studio's JSON export (a list of tasks, each with `annotations` and
`predictions`) through the same conversion the webhook uses
(`labeling.studio.payloads.record_from_annotation`, offsets via `labeling.studio.tasks`),
and the JSON_MIN export (one flat object per annotation).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from labeling.store import AnnotationRecord
from labeling.studio.config import LabelingConfig
from labeling.studio.payloads import record_from_annotation


def read_studio_export(path: str | Path, config: LabelingConfig) -> list[AnnotationRecord]:
    """Every annotation in a Label Studio JSON or JSON_MIN export file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Label Studio export file not found: {path}")
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not a Label Studio JSON export ({err.msg})") from None
    except UnicodeDecodeError as err:  # a binary file: say which one
        raise ValueError(
            f"{path}: not a Label Studio JSON export (not UTF-8 text at byte {err.start})"
        ) from None
    if isinstance(tasks, Mapping):
        tasks = [tasks]
    if not isinstance(tasks, list) or not all(isinstance(t, Mapping) for t in tasks):
        raise ValueError(f"{path}: expected a JSON list of tasks (Label Studio JSON export)")
    records: list[AnnotationRecord] = []
    for n, task in enumerate(tasks, 1):
        try:
            if "annotations" in task or "data" in task:
                records += _task_records(task, config)
            else:
                records.append(_min_record(task, config, n))
        except ValueError as err:
            raise ValueError(f"{path}: task {task.get('id', n)}: {err}") from None
    return records


def _task_records(task: Mapping, config: LabelingConfig) -> list[AnnotationRecord]:
    predictions = {p.get("id"): p for p in task.get("predictions") or [] if isinstance(p, Mapping)}
    project = "" if task.get("project") is None else str(task["project"])
    records = []
    for annotation in task.get("annotations") or []:
        if not isinstance(annotation, Mapping):
            raise ValueError("an annotation must be a JSON object")
        annotation = dict(annotation)
        # the export links the pre-annotation by id; the webhook embeds it
        parent = annotation.get("parent_prediction")
        if not annotation.get("prediction") and parent in predictions:
            annotation["prediction"] = predictions[parent]
        annotation.pop("task", None)  # the export may give the task as an object
        records.append(record_from_annotation(annotation, task, config, project))
    return records


def _min_record(row: Mapping, config: LabelingConfig, n: int) -> AnnotationRecord:
    """JSON_MIN: the task data at top level, the regions under the Labels tag's name as
    `{start, end, text, labels}` (no from_name, no pre-annotation)."""
    regions = [
        {
            "from_name": config.from_name,
            "to_name": config.to_name,
            "type": "labels",
            "value": {k: region.get(k) for k in ("start", "end", "text", "labels")},
        }
        for region in row.get(config.from_name) or []
        if isinstance(region, Mapping)
    ]
    task = {"id": row.get("id", n), "data": {k: v for k, v in row.items() if k != config.from_name}}
    annotation = {
        "id": row.get("annotation_id", n),
        "result": regions,
        "completed_by": row.get("annotator"),
        "created_at": row.get("created_at"),
        "updated_at": row.get("updated_at"),
        "lead_time": row.get("lead_time"),
    }
    return record_from_annotation(annotation, task, config)
