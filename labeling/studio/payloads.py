"""Label Studio's webhook payloads read into AnnotationRecords, every field checked.

ANNOTATION_CREATED / ANNOTATION_UPDATED carry `{action, annotation, task, project}`, the bulk
ANNOTATIONS_CREATED the same with lists, ANNOTATIONS_DELETED `{annotations: [{id}]}`,
TASKS_DELETED `{tasks: [{id}]}`.
Anything Label Studio could not have sent for the config raises ValueError naming the item
and the field; a bulk payload is read all or nothing. Ids must fit SQLite's INTEGER.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

from labeling.store import AnnotationRecord, check_id, now, short_repr, store_text
from labeling.studio.config import LabelingConfig
from labeling.studio.links import option_labels, settle_link_status
from labeling.studio.tasks import (
    lone_surrogates,
    read_annotation_regions,
    regions_to_spans,
    relabel,
    task_text,
)
from training.text import Span

log = logging.getLogger(__name__)

SINGLE_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")


def _object(value, what: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _annotator(annotation: Mapping) -> str | None:
    """Who annotated: the e-mail where Label Studio sends one. Its webhooks carry
    `completed_by` as the user id and `created_username` as "<e-mail>, <id>"; an expanded
    `completed_by` object gives email, then username, then id."""
    completed_by = annotation.get("completed_by")
    if isinstance(completed_by, Mapping):
        for key in ("email", "username", "id"):
            if completed_by.get(key) not in (None, ""):
                return store_text(completed_by[key])
        return None
    created = annotation.get("created_username")
    if isinstance(created, str) and "@" in created:
        email = created.rsplit(",", 1)[0].strip()
        if email:
            return store_text(email)
    return None if completed_by is None else store_text(completed_by)


def _project_id(payload: Mapping, annotation: Mapping) -> str:
    project = payload.get("project", annotation.get("project"))
    if isinstance(project, Mapping):
        project = project.get("id")
    return "" if project is None else str(project)


def record_from_annotation(
    annotation: Mapping,
    task: Mapping,
    config: LabelingConfig,
    project: str = "",
    label_names: Mapping[str, str] | None = None,
) -> AnnotationRecord:
    """A record from one Label Studio annotation object and the task it belongs to.

    `config` is the config the annotation was made with and `label_names` maps its label
    values to the project's (None: the same). Every region is checked
    (tasks.read_annotation_regions): a malformed one raises ValueError naming it. A lone
    surrogate or a NUL in the text is replaced by U+FFFD (offsets unchanged) and the repair
    noted in `raw["repairs"]`; the raw payload keeps the original. Links chosen with the
    config's link control ride on the spans, "confirmed" or "corrected" against the prediction.
    """
    annotation = _object(annotation, "annotation")
    task = _object(task, "task")
    annotation_id = check_id(annotation.get("id"), "annotation.id")
    task_id = check_id(task.get("id", annotation.get("task")), "task.id")
    owner = annotation.get("task")
    if owner is not None and check_id(owner, "annotation.task") != task_id:
        raise ValueError(f"annotation {annotation_id} is of task {owner}, not of task {task_id}")
    original = task_text(task, config)
    text = store_text(original)
    repairs = []
    if lone_surrogates(original):
        repairs.append(f"text: {lone_surrogates(original)} lone surrogate(s) replaced by U+FFFD")
    if "\x00" in original:  # PostgreSQL's text cannot hold NUL; stored alike on SQLite
        repairs.append(f"text: {original.count(chr(0))} NUL character(s) replaced by U+FFFD")
    for repair in repairs:
        log.warning("annotation %d: %s", annotation_id, repair)
    link_labels = option_labels(task, config)
    try:
        spans = read_annotation_regions(
            annotation.get("result"), config, text, label_names, link_labels
        )
    except ValueError as err:
        raise ValueError(f"annotation {annotation_id}: {err}") from None
    prediction = annotation.get("prediction")
    prediction_spans: list[Span] = []
    model_version = None
    if isinstance(prediction, Mapping) and prediction:
        model_version = prediction.get("model_version")
        try:
            result = prediction.get("result") or []
            prediction_spans = relabel(
                regions_to_spans(result, config, text, link_labels), label_names or {}
            )
        except (ValueError, TypeError, AttributeError):
            prediction_spans = []  # a stale prediction on edited text is not worth a 4xx
    spans = settle_link_status(spans, prediction_spans)
    meta = task.get("meta")
    meta = meta if isinstance(meta, Mapping) else {}
    data = task.get("data")
    data = data if isinstance(data, Mapping) else {}
    selected_by = meta.get("selected_by") or data.get("selected_by")
    created = annotation.get("created_at")
    raw: dict = {"annotation": dict(annotation), "task": dict(task)}
    if repairs:
        raw["repairs"] = repairs
    return AnnotationRecord(
        annotation_id=annotation_id,
        task_id=task_id,
        project=store_text(project),
        text=text,
        spans=spans,
        annotator=_annotator(annotation),
        created_at=store_text(created) if created else now(),
        updated_at=store_text(annotation.get("updated_at") or created or now()),
        lead_time=_seconds(annotation.get("lead_time")),
        cancelled=bool(annotation.get("was_cancelled")),
        ground_truth=bool(annotation.get("ground_truth")),
        prediction_model_version=None if model_version is None else store_text(model_version),
        prediction_spans=prediction_spans,
        selected_by=None if selected_by is None else store_text(selected_by),
        raw=raw,
    )


def _seconds(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = float(value)
    except OverflowError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def record_from_webhook(
    payload: Mapping, config: LabelingConfig, label_names: Mapping[str, str] | None = None
) -> AnnotationRecord:
    """The record an ANNOTATION_CREATED / ANNOTATION_UPDATED webhook describes
    (`{action, annotation, task, project}`); ValueError naming what is malformed."""
    payload = _object(payload, "the webhook body")
    action = payload.get("action")
    if action not in SINGLE_ACTIONS:
        raise ValueError(f"expected action {' or '.join(SINGLE_ACTIONS)}, got {short_repr(action)}")
    annotation = _object(payload.get("annotation"), f"{action} 'annotation'")
    task = _object(payload.get("task"), f"{action} 'task'")
    project = _project_id(payload, annotation)
    return record_from_annotation(annotation, task, config, project, label_names)


def records_from_webhook(
    payload: Mapping, config: LabelingConfig, label_names: Mapping[str, str] | None = None
) -> list[AnnotationRecord]:
    """Records of ANNOTATION_CREATED/UPDATED and of the bulk ANNOTATIONS_CREATED (whose
    `annotation` and `task` are lists). All or nothing: any bad item raises ValueError
    naming it (`item 2 of 3: ...`), and the caller stores none."""
    payload = _object(payload, "the webhook body")
    if payload.get("action") != "ANNOTATIONS_CREATED":
        return [record_from_webhook(payload, config, label_names)]
    annotations, tasks = payload.get("annotation"), payload.get("task")
    if not isinstance(annotations, list) or not isinstance(tasks, list):
        raise ValueError("ANNOTATIONS_CREATED needs 'annotation' and 'task' lists")
    by_id = {}
    for index, task in enumerate(tasks):
        try:
            by_id[check_id(_object(task, "task").get("id"), "task.id")] = task
        except ValueError as err:
            raise ValueError(f"task {index + 1} of {len(tasks)}: {err}") from None
    records = []
    for index, annotation in enumerate(annotations):
        try:
            annotation = _object(annotation, "annotation")
            task_id = check_id(annotation.get("task"), "annotation.task")
            if task_id not in by_id:
                who = short_repr(annotation.get("id"))
                raise ValueError(f"annotation {who}: task {task_id} not sent")
            project = _project_id(payload, annotation)
            record = record_from_annotation(
                annotation, by_id[task_id], config, project, label_names
            )
        except ValueError as err:
            raise ValueError(f"item {index + 1} of {len(annotations)}: {err}") from None
        records.append(record)
    return records


def deleted_ids_from_webhook(payload: Mapping) -> list[int]:
    """Annotation ids of an ANNOTATIONS_DELETED webhook (`{annotations: [{id}], ...}`)."""
    payload = _object(payload, "the webhook body")
    items = payload.get("annotations")
    if not isinstance(items, list):
        raise ValueError("ANNOTATIONS_DELETED needs an 'annotations' list")
    return [check_id(_object(item, "annotation").get("id"), "annotation.id") for item in items]


def deleted_task_ids_from_webhook(payload: Mapping) -> list[int]:
    """Task ids of a TASKS_DELETED webhook (`{tasks: [{id}], project?}`: Label Studio
    1.23.2's webhooks/models.py, WebhookAction.ACTIONS[TASKS_DELETED], key "tasks" and
    OnlyIDWebhookSerializer; sent by tasks/api.py TaskAPI.delete,
    data_manager/actions/basic.py delete_tasks and projects/api.py
    ProjectTaskListAPI.delete, the last without a project)."""
    payload = _object(payload, "the webhook body")
    items = payload.get("tasks")
    if not isinstance(items, list):
        raise ValueError("TASKS_DELETED needs a 'tasks' list")
    return [check_id(_object(item, "task").get("id"), "task.id") for item in items]
