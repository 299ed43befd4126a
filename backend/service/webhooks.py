"""What a webhook does to one project: annotations read with the config they were made
with and stored (all or none, durable before the answer), deletions tombstoned (of
annotations, and of tasks: their annotations), training requested; and the same reading
for a big body queued in the project's inbox."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from backend.service.requests import (
    ANNOTATION_EVENTS,
    BadRequest,
    StudioProjectKey,
    WebhookRequest,
    json_object,
)
from backend.service.service_status import jsonable
from labeling.studio.config import parse_config
from labeling.studio.label_map import project_labels

if TYPE_CHECKING:
    from backend.service.services import Services
    from labeling.studio.config import LabelingConfig

log = logging.getLogger(__name__)


def annotation_config(s: Services, req: WebhookRequest) -> tuple[LabelingConfig, dict | None]:
    """The config an annotation was made with (the webhook's project's own, else the one
    /setup last sent, else the project folder's) and its labels -> the project's."""
    xml = req.label_config or s.connected_config
    if xml is None:
        return s.project.config, None
    labeling = parse_config(xml)  # ConfigError: 422 (backend.service.requests)
    return labeling, project_labels(labeling, s.project)


def records(s: Services, req: WebhookRequest) -> list:
    from labeling.studio.payloads import records_from_webhook

    labeling, names = annotation_config(s, req)
    try:
        return records_from_webhook(req.body, labeling, names)
    except ValueError as err:  # TaskError and ConfigError are ValueErrors too
        raise BadRequest(f"cannot read the annotation: {err}", 422) from None


def store_annotations(s: Services, req: WebhookRequest) -> dict:
    """All the webhook's annotations in one transaction, or (422) none of them."""
    found = records(s, req)
    s.store.annotations.upsert_many(found)  # durable (committed, fsynced) before we acknowledge
    stored(s, len(found))
    return {"status": "stored", "annotation_ids": [r.annotation_id for r in found]}


def read_queued(s: Services, body: bytes) -> tuple[list, list[int]]:
    """What a queued webhook body stores or deletes (ValueError: refused, nothing done)."""
    from labeling.studio.payloads import deleted_ids_from_webhook, deleted_task_ids_from_webhook

    try:
        req = WebhookRequest.parse(json_object(body))
        s.metrics.inc("webhook_events_total", action=req.metrics_action)
        named = StudioProjectKey.of(req.project)
        if s.studio_id is not None and (named is None or named.id != s.studio_id):
            raise ValueError(
                f"queued for Label Studio project {s.studio_id}, but the body names "
                f"{named.id if named else 'no project'}: not stored in this project"
            )
        if req.action in ANNOTATION_EVENTS:
            return records(s, req), []
        if req.action == "ANNOTATIONS_DELETED":
            return [], deleted_ids_from_webhook(req.body)
        if req.action == "TASKS_DELETED":  # their annotations live now, tombstoned on settling
            return [], s.store.annotations.live_of_tasks(deleted_task_ids_from_webhook(req.body))
    except BadRequest as err:
        raise ValueError(str(err)) from None
    raise ValueError(
        f"only annotation and task deletion events are read from the inbox, not {req.action}"
    )


def stored(s: Services, count: int) -> None:
    s.metrics.inc("annotations_stored_total", count)
    _notify_worker(s)


def delete_annotations(s: Services, body: dict) -> dict:
    from labeling.studio.payloads import deleted_ids_from_webhook

    try:
        ids = deleted_ids_from_webhook(body)
    except ValueError as err:
        raise BadRequest(f"cannot read the deletion: {err}", 422) from None
    deleted = s.store.annotations.tombstone(ids)
    s.metrics.inc("annotations_deleted_total", deleted)
    _notify_worker(s)
    return {"status": "deleted", "deleted": deleted, "annotation_ids": ids}


def delete_tasks(s: Services, body: dict) -> dict:
    """TASKS_DELETED: Label Studio deleted these tasks, and their annotations with them
    without an ANNOTATIONS_DELETED; each live one of them is tombstoned (a replay: none)."""
    from labeling.studio.payloads import deleted_task_ids_from_webhook

    try:
        task_ids = deleted_task_ids_from_webhook(body)
    except ValueError as err:
        raise BadRequest(f"cannot read the task deletion: {err}", 422) from None
    ids = s.store.annotations.tombstone_tasks(task_ids)
    s.metrics.inc("annotations_deleted_total", len(ids))
    if ids:
        _notify_worker(s)
    return {"status": "deleted", "deleted": len(ids), "annotation_ids": ids, "task_ids": task_ids}


def _notify_worker(s: Services) -> None:
    if s.worker is None:
        return
    try:
        s.worker.annotation_changed()
    except Exception:  # the annotation is stored: acknowledge it whatever the worker says
        log.exception("the training worker failed to take an annotation change")


def request_training(s: Services, source: str) -> dict:
    # a round reads the annotations from the store: with the database away it would fail
    # after this answered "accepted", so say so now (StoreUnavailable: 503)
    s.store.db.ping()
    if s.worker is None:
        if s.state.database_url is None:
            raise BadRequest("training is disabled in this service (SKILLLOOP_TRAINING=0)", 409)
        # a serving host beside a training host (`skillloop worker`) on the shared database:
        # the request is recorded there and that host starts the round
        total = s.store.training_requests.request()
        s.metrics.inc("training_requests_total", source=source, outcome="forwarded")
        reason = f"recorded in the shared database for the training worker (request {total})"
        return {"accepted": True, "state": "forwarded", "reason": reason}
    reply = s.worker.request(source)
    outcome = "accepted" if reply.get("accepted") else "refused"
    s.metrics.inc("training_requests_total", source=source, outcome=outcome)
    return {**reply, "status": jsonable(s.worker.status())}
