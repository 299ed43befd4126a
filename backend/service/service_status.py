"""What the running service says about a project: `/status`'s body and the gauges
`/metrics` reads at scrape time."""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backend.service.metrics import Gauge, Labels
from backend.service.shown import shown

if TYPE_CHECKING:
    from backend.service.services import Services


def status(s: Services) -> dict:
    """The body of /status: no absolute paths (files in the state folder relative to it)."""
    model = s.holder.current()
    worker = jsonable(s.worker.status()) if s.worker is not None else {"training": "disabled"}
    body = {
        **worker,
        "project": s.project.name,
        "model_version": model.version,
        "model_loaded": model.loaded,
        "model_source": model.source,
        "model_unloaded": model.unloaded,  # idle: loaded again by the next /predict
        "models_in_memory": s.holder.cache.summary(),  # the process's, shared by projects
        "studio_project": s.studio.project_id,
        "studio_refresh": s.studio.last_refresh,
        "studio_catch_up": s.catch_up.last if s.catch_up is not None else None,
        "webhook_inbox": {**s.store.inbox.counts(), "refused_last": s.store.inbox.refusals()},
        "linking": s.linker.state() if s.linker is not None else {"enabled": False},
    }
    return shown(jsonable(body), s.state.root)


def gauges(s: Services, labels: Labels = ()) -> list[Gauge]:
    """The project's gauges; `labels` (e.g. `(("studio_project", "7"),)`) tell projects
    apart when one backend serves several."""
    model = s.holder.current()
    found = [
        Gauge("model_loaded", "1 when a model serves predictions", float(model.loaded), labels),
        Gauge(
            "serving_info",
            "the model version answering /predict",
            1.0,
            (*labels, ("model_version", model.version)),
        ),
    ]
    inbox = s.store.inbox.counts()
    pending = float(inbox["pending"])
    found.append(Gauge("webhook_inbox_pending", "bulk webhooks not read yet", pending, labels))
    found.append(
        Gauge("webhook_inbox_refused", "bulk webhooks refused", float(inbox["refused"]), labels)
    )
    events: dict[str, int] = {}
    for event in s.registry.events():
        events[event["action"]] = events.get(event["action"], 0) + 1
    for action, name, help_text in (
        ("add", "rounds_run", "rounds that registered a new version"),
        ("promote", "rounds_promoted", "versions promoted by the held-out gate"),
        ("refuse", "rounds_refused", "versions refused by the held-out gate"),
        ("rollback", "rollbacks", "rollbacks to an earlier version"),
    ):
        found.append(Gauge(name, help_text, float(events.get(action, 0)), labels))
    if s.worker is not None:
        worker = s.worker.status()
        running = float(bool(worker.get("running")))
        found.append(Gauge("training_running", "1 while a round trains", running, labels))
        queued = float(bool(worker.get("queued")))
        found.append(Gauge("training_queued", "1 when a follow-up round is queued", queued, labels))
    return found


def jsonable(value: Any) -> Any:
    """Dataclasses, paths and nested containers as JSON-ready values."""
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    return str(value)
