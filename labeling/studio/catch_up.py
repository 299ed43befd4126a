"""What Label Studio holds that the annotation store lacks.

Label Studio gives a webhook 1 s and never sends it again, so an annotation submitted
while the store was away (the database down or frozen: the webhook got a 503) exists only
in Label Studio. `missed_annotations` lists the connected project's annotations whose id
the store does not hold, or that Label Studio changed after the version stored (its
`updated_at` is later); backend/service/catch_up.py reads them as their webhooks would
have been read and stores them. Annotations the store holds as deleted are never brought
back (a deletion wins, as it does for a late webhook replay).

It also lists the deletions the store missed (`Missed.gone`): annotations the store holds
live for a task whose annotations Label Studio listed completely, and that the listing no
longer holds. A task counts as read completely only when its `annotations` is a list of
readable annotations no shorter than its own counts (`total_annotations` +
`cancelled_annotations`, sent by Label Studio 1.23 with fields=all); anything else (no
list, no counts, an entry without an id, fewer entries than counted, a task listed twice
with one read short) deletes nothing of that task, and a task missing from the listing
deletes nothing either. A listing that fails raises: nothing is decided.

Deleted tasks (`Missed.gone_with_tasks`): Label Studio deletes a task's annotations with
it, and its TASKS_DELETED webhook may have failed too. A task the listing does not hold
is gone only when the listing is complete: the project's own task count
(`task_number` of GET /api/projects/<id>) read before the listing and again after it is
the same, and equals the number of distinct tasks listed, each with an id
(`listing_complete`), and each unlisted task is then asked for on its own and answers
404 (`TaskSource.task_exists`: up to `CONFIRMED_AT_MOST` tasks a catch-up, the next one
takes the rest). Only then are its live annotations deleted. When the listing is not
known complete (a count missing or changed, a task without an id, more or fewer tasks
than counted) or a task does not answer 404, nothing of it is (`Missed.unlisted_tasks`
says how many such tasks were left undecided). The count is read again only when there
is something to decide. Why both: the counts alone cannot see a task deleted and another
created while the listing ran, the deletion shifting a later page so that a third task
is skipped (the counts then agree with the listing); the 404 alone would cost a request
for every unlisted task of a listing that is merely short.

Why a listing read after the store cannot delete a fresh annotation: the caller reads the
store's live annotations first, and Label Studio sends an annotation's webhook only after
the request that saved it has committed, so every annotation in that read was already in
Label Studio when the listing started; one it no longer lists was deleted there.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

# what a task from the API carries beside what its webhooks carry: not kept in the record
_TASK_EXTRAS = ("annotations", "predictions", "drafts")


class TaskSource(Protocol):
    """The StudioClient calls a catch-up makes (labeling/studio/client.py)."""

    def project(self, project_id: int) -> dict: ...

    def tasks(self, project_id: int) -> list[dict]: ...

    def task_exists(self, task_id: int) -> bool | None: ...


CONFIRMED_AT_MOST = 200  # unlisted tasks asked for one by one in a catch-up


@dataclass(slots=True)
class Missed:
    """Label Studio's annotations the store lacks, as (annotation, task) pairs, oldest
    first, with the project's labeling config (what its webhooks carry)."""

    label_config: str | None
    items: list[tuple[dict, dict]] = field(default_factory=list)
    seen: int = 0  # annotations Label Studio holds in the project
    gone: list[int] = field(default_factory=list)  # live in the store, deleted in Label Studio
    partial_tasks: int = 0  # tasks not read completely: nothing of theirs deleted
    gone_with_tasks: list[int] = field(default_factory=list)  # of tasks deleted there
    gone_tasks: int = 0  # tasks deleted in Label Studio that held live annotations here
    unlisted_tasks: int = 0  # tasks with live annotations, not listed, the listing unsure


def missed_annotations(
    client: TaskSource,
    project_id: int,
    known: Mapping[int, str | None],
    live: Mapping[int, int] | None = None,
) -> Missed:
    """`known`: annotation id -> the `updated_at` the store holds (None: deleted there);
    `live`: annotation id -> task id of the store's live annotations of this project
    (read from the store BEFORE this call), the candidates for `gone`."""
    project = client.project(project_id)
    config = project.get("label_config")
    missed = Missed(config if isinstance(config, str) and config else None)
    held: dict[int, set[int]] = {}  # task id -> its annotation ids, tasks read completely
    partial: set[int] = set()
    tasks = client.tasks(project_id)
    listed: set[int] = set()
    unnamed = False  # a task without a readable id: the listing cannot prove an absence
    for task in tasks:
        task_id = _id(task.get("id"))
        unnamed = unnamed or task_id is None
        if task_id is not None:
            listed.add(task_id)
            ids = held_annotations(task)
            if ids is None:
                partial.add(task_id)
            else:
                held.setdefault(task_id, set()).update(ids)
        bare = {k: v for k, v in task.items() if k not in _TASK_EXTRAS}
        for annotation in task.get("annotations") or []:
            annotation_id = annotation.get("id") if isinstance(annotation, Mapping) else None
            if not isinstance(annotation_id, int) or isinstance(annotation_id, bool):
                continue
            missed.seen += 1
            if annotation_id in known:
                stored = known[annotation_id]
                if stored is None or not later(annotation.get("updated_at"), stored):
                    continue
            missed.items.append((dict(annotation), bare))
    missed.items.sort(key=_order)
    missed.gone = gone_annotations(live or {}, held, partial)
    missed.partial_tasks = len(partial)
    unlisted = {a: t for a, t in (live or {}).items() if t not in listed}
    if unlisted:
        before = project.get("task_number")
        complete = not unnamed and listing_complete(
            before, client.project(project_id).get("task_number"), len(listed)
        )
        by_task: dict[int, list[int]] = {}
        for annotation_id, task_id in unlisted.items():
            by_task.setdefault(task_id, []).append(annotation_id)
        asked = sorted(by_task)[:CONFIRMED_AT_MOST] if complete else []
        gone = [task_id for task_id in asked if client.task_exists(task_id) is False]
        missed.gone_with_tasks = sorted(a for task_id in gone for a in by_task[task_id])
        missed.gone_tasks = len(gone)
        missed.unlisted_tasks = len(by_task) - len(gone)
    return missed


def listing_complete(before: Any, after: Any, listed: int) -> bool:
    """Whether a listing of `listed` distinct tasks holds all of the project's tasks: its
    task count read before the listing and after it agree, and equal `listed`."""
    before, after = _id(before), _id(after)
    return before is not None and before == after == listed


def held_annotations(task: Mapping) -> set[int] | None:
    """The ids of a task's annotations if the listing holds all of them, else None."""
    annotations = task.get("annotations")
    total, cancelled = _id(task.get("total_annotations")), _id(task.get("cancelled_annotations"))
    if not isinstance(annotations, list) or total is None or cancelled is None:
        return None
    ids: set[int] = set()
    for annotation in annotations:
        annotation_id = _id(annotation.get("id")) if isinstance(annotation, Mapping) else None
        if annotation_id is None:
            return None
        ids.add(annotation_id)
    return ids if len(ids) >= total + cancelled else None


def gone_annotations(
    live: Mapping[int, int], held: Mapping[int, set[int]], partial: Set[int] = frozenset()
) -> list[int]:
    """The live annotations (id -> task id) that a completely read task no longer holds;
    a task in `partial` (also read short once) or absent from `held` deletes nothing."""
    return sorted(
        annotation_id
        for annotation_id, task_id in live.items()
        if task_id in held and task_id not in partial and annotation_id not in held[task_id]
    )


def _id(value: Any) -> int | None:
    """A count or an id as JSON gives it (a non-negative int, not a bool), else None."""
    readable = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return value if readable else None


def _order(item: tuple[dict, dict]) -> tuple[float, int]:
    moment = _instant(item[0].get("updated_at"))
    return (moment.timestamp() if moment is not None else 0.0, item[0]["id"])


def later(theirs: Any, ours: str) -> bool:
    """Whether Label Studio's `updated_at` is after the stored one (unreadable: not)."""
    mine, other = _instant(ours), _instant(theirs)
    return mine is not None and other is not None and other > mine


def _instant(text: Any) -> datetime | None:
    """An ISO time as Label Studio writes it ("...Z"); one without a zone is UTC."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
