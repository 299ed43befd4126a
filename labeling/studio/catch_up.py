"""What Label Studio holds that the annotation store lacks.

Label Studio gives a webhook 1 s and never sends it again, so an annotation submitted
while the store was away (the database down or frozen: the webhook got a 503) exists only
in Label Studio. `missed_annotations` lists the connected project's annotations whose id
the store does not hold, or that Label Studio changed after the version stored (its
`updated_at` is later); backend/service/catch_up.py reads them as their webhooks would
have been read and stores them. Annotations the store holds as deleted are never brought
back (a deletion wins, as it does for a late webhook replay).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

# what a task from the API carries beside what its webhooks carry: not kept in the record
_TASK_EXTRAS = ("annotations", "predictions", "drafts")


class TaskSource(Protocol):
    """The two StudioClient calls a catch-up makes (labeling/studio/client.py)."""

    def project(self, project_id: int) -> dict: ...

    def tasks(self, project_id: int) -> list[dict]: ...


@dataclass(slots=True)
class Missed:
    """Label Studio's annotations the store lacks, as (annotation, task) pairs, oldest
    first, with the project's labeling config (what its webhooks carry)."""

    label_config: str | None
    items: list[tuple[dict, dict]] = field(default_factory=list)
    seen: int = 0  # annotations Label Studio holds in the project


def missed_annotations(
    client: TaskSource, project_id: int, known: Mapping[int, str | None]
) -> Missed:
    """`known`: annotation id -> the `updated_at` the store holds (None: deleted there)."""
    config = client.project(project_id).get("label_config")
    missed = Missed(config if isinstance(config, str) and config else None)
    for task in client.tasks(project_id):
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
    return missed


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
