"""Annotations whose webhooks failed, fetched back from Label Studio.

Label Studio gives a webhook 1 s and never retries it, so an annotation submitted while
the annotation database was away (the webhook got a 503) is in Label Studio only. A
catch-up reads the connected project's annotations (labeling/studio/catch_up.py), keeps
those the store lacks or holds an older version of, reads each exactly as its webhook
would have been read (the project's labeling config and label mapping,
`record_from_annotation`) and stores them in one transaction. Stored annotations compare
by id and `updated_at`, so a catch-up that finds nothing new changes nothing. In the same
transaction it marks deleted (the tombstone of an ANNOTATIONS_DELETED webhook) the live
annotations of the project's tasks that Label Studio listed completely and that no longer
hold them: deletions made while the webhooks failed. A task read short deletes nothing,
and a failed listing nothing at all. When the listing holds all the project's tasks (its
task count, read before and after, agrees with it) the live annotations of tasks it no
longer holds are marked deleted too: tasks deleted there (`deleted_with_tasks`,
`tasks_deleted`); otherwise such tasks are left alone (`tasks_unlisted_not_decided`).

It runs when the database answers again after an outage (in a thread of its own:
`Database.on_back`) and at the start of every training round (`TrainingWorker.before_round`),
so a round trains on everything annotators submitted even if the outage went unnoticed
here. It never raises: Label Studio or the database away is one log line, and /status
shows the last catch-up (`studio_catch_up`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from backend.service.requests import WebhookRequest
from backend.service.webhooks import annotation_config, stored
from labeling.studio.catch_up import Missed, TaskSource, missed_annotations
from labeling.studio.payloads import record_from_annotation

if TYPE_CHECKING:
    from backend.service.services import Services
    from labeling.store import AnnotationRecord

log = logging.getLogger(__name__)
SHOWN_IDS = 20  # annotation ids named in a log line / /status


class StudioCatchUp:
    """One project's catch-up with its Label Studio project; one at a time."""

    def __init__(self, services: Services, make_client: Callable[[], TaskSource]):
        self.s = services
        self._make_client = make_client
        self._client: TaskSource | None = None
        self._running = threading.Lock()  # one catch-up at a time
        self._guard = threading.Lock()
        self._queued = False  # a spawned catch-up waits for its turn
        self.last: dict | None = None  # the last catch-up's outcome (/status)

    def spawn(self, reason: str) -> None:
        """Catch up in a thread of its own (quick: for the database's `on_back`)."""
        with self._guard:
            if self._queued:  # one already waits: it will see what this one would
                return
            self._queued = True
        threading.Thread(
            target=self._spawned, args=(reason,), name="skillloop-catch-up", daemon=True
        ).start()

    def _spawned(self, reason: str) -> None:
        with self._running:
            with self._guard:
                self._queued = False
            self._catch_up(reason)

    def run(self, reason: str) -> dict:
        """Catch up now; the outcome (also kept in `last`)."""
        with self._running:
            return self._catch_up(reason)

    def _catch_up(self, reason: str) -> dict:
        project_id = self.s.studio.project_id
        outcome: dict = {"reason": reason, "at": time.time(), "studio_project": project_id}
        if project_id is None:
            outcome.update(ok=True, stored=0, note="no Label Studio project connected yet")
            self.last = outcome
            return outcome
        try:
            if self._client is None:
                self._client = self._make_client()
            # the store first, then Label Studio: an annotation in this read is in the
            # listing unless it was deleted there (labeling/studio/catch_up.py)
            records = self.s.store.annotations.records(include_deleted=True, include_cancelled=True)
            known = {r.annotation_id: None if r.deleted else r.updated_at for r in records}
            ours = str(project_id)
            live = {
                r.annotation_id: r.task_id for r in records if not r.deleted and r.project == ours
            }
            missed = missed_annotations(self._client, project_id, known, live)
            found, refused = self._read(missed, project_id)
            changed, deleted, with_tasks = self.s.store.annotations.catch_up(
                found, missed.gone, missed.gone_with_tasks
            )
        except Exception as err:  # Label Studio or the database away, a config it refuses
            outcome.update(ok=False, error=f"{type(err).__name__}: {str(err)[:300]}")
            log.warning(
                "catching up with Label Studio project %s (%s) failed: %s",
                project_id,
                reason,
                outcome["error"],
            )
            self.last = outcome
            return outcome
        if deleted:
            self.s.metrics.inc("annotations_caught_up_deleted_total", deleted)
            self.s.metrics.inc("annotations_deleted_total", deleted)
        if with_tasks:
            self.s.metrics.inc("annotations_caught_up_task_deleted_total", with_tasks)
        if changed:
            self.s.metrics.inc("annotations_caught_up_total", changed)
        if changed or deleted:
            stored(self.s, changed)  # counted, and the training worker told
        ids = [r.annotation_id for r in found]
        outcome.update(ok=True, seen=missed.seen, stored=changed, annotation_ids=ids[:SHOWN_IDS])
        gone = sorted({*missed.gone, *missed.gone_with_tasks})
        outcome.update(deleted=deleted, deleted_ids=gone[:SHOWN_IDS])
        outcome.update(deleted_with_tasks=with_tasks, tasks_deleted=missed.gone_tasks)
        if missed.partial_tasks:
            outcome["tasks_not_read_completely"] = missed.partial_tasks
        if missed.unlisted_tasks:
            outcome["tasks_unlisted_not_decided"] = missed.unlisted_tasks
        if refused:
            outcome["refused"] = refused[:SHOWN_IDS]
        if found or refused or gone:
            log.warning(
                "caught up with Label Studio project %s (%s): %d of its %d annotations were "
                "missing or older here, %d stored (ids %s), %d unreadable; %d deleted there "
                "(ids %s), %d of them with their %d tasks",
                project_id,
                reason,
                len(found),
                missed.seen,
                changed,
                ids[:SHOWN_IDS],
                len(refused),
                deleted,
                gone[:SHOWN_IDS],
                with_tasks,
                missed.gone_tasks,
            )
        self.last = outcome
        return outcome

    def _read(self, missed: Missed, project_id: int) -> tuple[list[AnnotationRecord], list[str]]:
        """Each missed annotation read as its webhook would have been (ConfigError: the
        project's config cannot be read, nothing stored); unreadable ones are left out."""
        if not missed.items:
            return [], []
        req = WebhookRequest("ANNOTATION_CREATED", {"id": project_id}, missed.label_config, {})
        labeling, names = annotation_config(self.s, req)
        found, refused = [], []
        for annotation, task in missed.items:
            try:
                found.append(
                    record_from_annotation(annotation, task, labeling, str(project_id), names)
                )
            except ValueError as err:  # as its webhook would have got a 422
                refused.append(str(err)[:300])
        return found, refused
