"""What serves one project: its store, registry, warm model, training worker, Label Studio
link and webhook inbox, built from a project and its state folder and started together.

A backend serving one project holds one `Services`; a backend serving several Label Studio
projects holds one per connected project (backend/projects.py), so two projects never
share a store, a model or a round. The metrics are the process's, shared by all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from backend.inbox import Inbox
from backend.metrics import Metrics
from backend.predictions import TaskScorer
from backend.serving import ModelHolder, StudioLink
from backend.settings import ServiceConfig

if TYPE_CHECKING:
    from pathlib import Path

    from backend.linking import LinkerHolder, TaskOptionsWriter
    from backend.worker import TrainingWorker
    from labeling.project import Project
    from labeling.state import ProjectState
    from labeling.store import AnnotationStore
    from training.registry import Registry

log = logging.getLogger(__name__)

MakeWorker = Callable[..., "TrainingWorker"]


@dataclass
class Services:
    """Everything the routes use for one project."""

    config: ServiceConfig
    project: Project
    state_dir: Path
    store: AnnotationStore
    registry: Registry
    worker: TrainingWorker | None  # None: training disabled
    holder: ModelHolder
    studio: StudioLink
    metrics: Metrics
    # the config Label Studio last sent to /setup: how webhooks without one are read
    connected_config: str | None = None
    inbox: Inbox | None = None  # bulk webhooks stored first, read after (backend/inbox.py)
    scorer: TaskScorer = field(default_factory=TaskScorer)  # the project's selection strategy
    linker: LinkerHolder | None = None  # the project's taxonomy linker (backend/linking.py)
    link_options: TaskOptionsWriter | None = None  # candidates into Label Studio's tasks

    # the Label Studio project these services are for, on a backend serving several
    # (None: a backend serving one project answers every Label Studio project)
    studio_id: int | None = None

    def start(self) -> None:
        """Load the model (in a background thread unless configured otherwise), start the
        training worker and the inbox of big webhooks."""
        from backend.webhooks import read_queued, stored

        self.holder.start(background=self.config.background_load)
        if self.linker is not None:
            holder = self.holder  # the linker loads after the model: both at once broke imports
            self.linker.start(self.config.background_load, after=lambda: holder.wait_ready(600))
        if self.worker is not None:
            self.worker.start()
        self.inbox = Inbox(
            self.store, lambda body: read_queued(self, body), lambda n: stored(self, n)
        )
        self.inbox.start()

    def stop_predicting(self) -> None:
        self.holder.stop_predicting()

    def close(self) -> None:
        if self.inbox is not None:
            self.inbox.stop()
        if self.worker is not None:
            self.worker.stop()
        self.holder.stop()
        self.store.close()


def build_services(
    config: ServiceConfig,
    make_worker: MakeWorker | None = None,
    *,
    project: Project | None = None,
    state: ProjectState | None = None,
    metrics: Metrics | None = None,
) -> Services:
    """The store, registry, model holder and training worker of `project` (default: the
    config's) in `state` (default: the project's own state folder). Nothing slow: the
    model is loaded by `Services.start`.

    `make_worker(project, state_dir, on_promoted)` defaults to backend.worker.TrainingWorker.
    """
    from labeling.project import load_project
    from labeling.state import ProjectState

    project = project or load_project(config.project)
    state = state or ProjectState.of(project, config.state_dir)
    state.root.mkdir(parents=True, exist_ok=True)
    registry = state.registry()
    studio = StudioLink(
        state.studio_file,
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
    )
    worker: TrainingWorker | None = None
    if config.training:
        if make_worker is None:
            from backend.worker import TrainingWorker

            make_worker = TrainingWorker
        worker = make_worker(project, state.root, on_promoted=holder.promoted)
        holder.training_running = worker.is_running  # an Event: no I/O per /predict
    from backend.linking import LinkerHolder, TaskOptionsWriter
    from labeling.studio.client import StudioClient

    link_options = None
    if studio.configured and project.linking.taxonomy and project.config.links:
        url, key = config.label_studio_url or "", config.label_studio_api_key or ""
        link_options = TaskOptionsWriter(
            lambda: StudioClient(url, key),
            project.config.link_choices_key,
            project.config.link_search_key,
        )
    return Services(
        config,
        project,
        state.root,
        state.store(),
        registry,
        worker,
        holder,
        studio,
        metrics or make_metrics(),
        scorer=TaskScorer(project.selection.strategy),
        linker=LinkerHolder(project, config.state_dir),
        link_options=link_options,
    )


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
    metrics.counter("webhook_events_total", "webhook events by action (unknown: other)")
    metrics.counter("training_requests_total", "training triggers by source and outcome")
    return metrics
