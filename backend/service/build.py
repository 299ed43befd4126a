"""A project's `Services` built: its store, registry, model holder, training worker,
Label Studio connection, linker and webhook inbox, from the service config and a project state.
Nothing slow: the model loads when the services start."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from backend.loop.worker import TrainingWorker
from backend.service.catch_up import StudioCatchUp
from backend.service.config import ServiceConfig
from backend.service.inbox_reader import InboxReader
from backend.service.linker_holder import LinkerHolder, TaskOptionsWriter
from backend.service.metrics import Metrics
from backend.service.model_cache import ModelCache
from backend.service.model_holder import ModelHolder
from backend.service.services import Services
from backend.service.studio_ledger import PublicationLedger
from backend.service.studio_sync import StudioConnection
from backend.service.webhooks import read_queued, stored
from labeling.active.task_score import TaskScorer
from labeling.project import load_project
from labeling.state import ProjectState
from labeling.studio.client import StudioClient

if TYPE_CHECKING:
    from labeling.project import Project

MakeWorker = Callable[..., "TrainingWorker"]


def build_services(
    config: ServiceConfig,
    make_worker: MakeWorker | None = None,
    *,
    project: Project | None = None,
    state: ProjectState | None = None,
    metrics: Metrics | None = None,
    models: ModelCache | None = None,
    linkers: ModelCache | None = None,
) -> Services:
    """The store, registry, model holder and training worker of `project` (default: the
    config's) in `state` (default: the project's own state folder). Nothing slow: the
    model is loaded by `Services.start`.

    `make_worker(project, state, on_promoted)` defaults to backend.loop.worker.TrainingWorker.
    `models` holds the loaded models, shared by the projects of one backend (default: a
    cache of the config's bounds for this project alone); `linkers` the loaded linkers,
    shared the same way (default: this project's alone).
    """
    project = project or load_project(config.project)
    state = state or ProjectState.of(project, config.state_dir)
    state.root.mkdir(parents=True, exist_ok=True)
    registry = state.registry()
    studio = StudioConnection(
        state.studio_file,
        PublicationLedger(state.studio_publish_lock, state.studio_published),
        config.label_studio_url,
        config.label_studio_api_key,
        remove_older=config.remove_older_predictions,
        serving_version=lambda: getattr(registry.serving(), "version", None),
    )
    holder = ModelHolder(
        project,
        registry,
        on_swap=studio.model_swapped,
        watch_interval=config.watch_interval,
        threads=config.threads,
        training_threads=config.training_threads,
        cache=model_cache(config) if models is None else models,
    )
    worker: TrainingWorker | None = None
    if config.training:
        worker = (make_worker or TrainingWorker)(project, state, on_promoted=holder.promoted)
        holder.training_running = worker.is_running  # an Event: no I/O per /predict
    link_options = None
    if studio.configured and project.linking.taxonomy and project.config.links:
        url, key = config.label_studio_url or "", config.label_studio_api_key or ""
        link_options = TaskOptionsWriter(
            lambda: StudioClient(url, key),
            project.config.link_choices_key,
            project.config.link_search_key,
        )
    services = Services(
        config,
        project,
        state,
        state.store(),
        registry,
        worker,
        holder,
        studio,
        metrics or make_metrics(),
        scorer=TaskScorer(project.selection.strategy),
        linker=LinkerHolder(project, state, linkers),
        link_options=link_options,
    )
    services.inbox_reader = InboxReader(
        services.store.inbox,
        lambda body: read_queued(services, body),
        lambda n: stored(services, n),
    )
    if studio.configured:
        url, key = config.label_studio_url or "", config.label_studio_api_key or ""
        catch_up_with_studio(services, url, key)
    return services


def catch_up_with_studio(services: Services, url: str, api_key: str) -> StudioCatchUp:
    """Annotations whose webhooks failed fetched from Label Studio when the annotation
    database answers again after an outage, and before every training round."""
    catch_up = StudioCatchUp(services, lambda: StudioClient(url, api_key))
    services.catch_up = catch_up
    services.store.db.on_back = lambda: catch_up.spawn("the annotation database is back")
    if services.worker is not None:
        services.worker.before_round = lambda: catch_up.run("a training round starts")
    return catch_up


def model_cache(config: ServiceConfig) -> ModelCache:
    """The process's loaded models, bounded by SKILLLOOP_MAX_MODELS and _MODEL_IDLE_S."""
    return ModelCache(config.max_models, config.model_idle_s)


def make_metrics() -> Metrics:
    metrics = Metrics()
    metrics.counter("http_requests_total", "HTTP requests by route and status")
    metrics.histogram("http_request_duration_seconds", "request latency by route")
    metrics.counter("predictions_total", "tasks predicted, by model version")
    metrics.counter("prediction_task_errors_total", "tasks answered empty: unreadable")
    metrics.counter(
        "prediction_tasks_not_reached_total", "tasks past the time budget or the tasks limit"
    )
    metrics.counter("annotations_stored_total", "annotations written by webhooks")
    metrics.counter("annotations_deleted_total", "annotations tombstoned by webhooks")
    metrics.counter(
        "annotations_caught_up_total", "annotations fetched from Label Studio that webhooks missed"
    )
    metrics.counter(
        "annotations_caught_up_deleted_total",
        "annotations tombstoned by a catch-up: deleted in Label Studio while webhooks failed",
    )
    metrics.counter(
        "annotations_caught_up_task_deleted_total",
        "of those, annotations of tasks deleted in Label Studio (a complete task listing)",
    )
    metrics.counter("webhook_events_total", "webhook events by action (unknown: other)")
    metrics.counter("training_requests_total", "training triggers by source and outcome")
    return metrics
