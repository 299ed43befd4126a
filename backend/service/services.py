"""What serves one project: its store, registry, warm model, training worker, Label Studio
link and webhook inbox (built by backend/service/build.py), started and closed together.

A backend serving one project holds one `Services`; a backend serving several Label Studio
projects holds one per connected project (backend/service/routing.py), so two projects never
share a store, a registry or a round. The metrics are the process's, shared by all, and so
are the loaded models: projects serving the same model hold one copy of it
(backend/service/model_cache.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from labeling.active.task_score import TaskScorer

if TYPE_CHECKING:
    from backend.loop.worker import TrainingWorker
    from backend.service.config import ServiceConfig
    from backend.service.inbox_reader import InboxReader
    from backend.service.linker_holder import LinkerHolder, TaskOptionsWriter
    from backend.service.metrics import Metrics
    from backend.service.model_holder import ModelHolder
    from backend.service.studio_sync import StudioConnection
    from labeling.project import Project
    from labeling.state import ProjectState
    from labeling.store import Store
    from training.registry import Registry

log = logging.getLogger(__name__)


class CatchUp(Protocol):
    """What the services keep of their catch-up with Label Studio: its last outcome for
    /status (a `backend.service.catch_up.StudioCatchUp`, which reads these services: named
    here by this protocol, not imported, so that neither module imports the other)."""

    last: dict | None


@dataclass
class Services:
    """Everything the routes use for one project."""

    config: ServiceConfig
    project: Project
    state: ProjectState  # its folder, and where its annotations live
    store: Store  # its annotations, webhook inbox and training requests: one database
    registry: Registry
    worker: TrainingWorker | None  # None: training disabled
    holder: ModelHolder
    studio: StudioConnection
    metrics: Metrics
    # the config Label Studio last sent to /setup: how webhooks without one are read
    connected_config: str | None = None
    inbox_reader: InboxReader | None = (
        None  # bulk webhooks stored first, read after (backend/service/inbox_reader.py)
    )
    scorer: TaskScorer = field(default_factory=TaskScorer)  # the project's selection strategy
    linker: LinkerHolder | None = (
        None  # the project's taxonomy linker (backend/service/linker_holder.py)
    )
    link_options: TaskOptionsWriter | None = None  # candidates into Label Studio's tasks
    # what webhooks missed, fetched from Label Studio (backend/service/catch_up.py)
    catch_up: CatchUp | None = None

    # the Label Studio project these services are for, on a backend serving several
    # (None: a backend serving one project answers every Label Studio project)
    studio_id: int | None = None

    def start(self) -> None:
        """Load the model (in a background thread unless configured otherwise), start the
        training worker and the inbox of big webhooks."""
        self.holder.start(background=self.config.background_load)
        if self.linker is not None:
            holder = self.holder  # the linker loads after the model: both at once broke imports
            self.linker.start(self.config.background_load, after=lambda: holder.wait_ready(600))
        if self.worker is not None:
            self.worker.start()
        if self.inbox_reader is not None:
            self.inbox_reader.start()

    def stop_predicting(self) -> None:
        self.holder.stop_predicting()

    def close(self) -> None:
        if self.inbox_reader is not None:
            self.inbox_reader.stop()
        if self.worker is not None:
            self.worker.stop()
        self.holder.stop()
        if self.linker is not None:
            self.linker.close()
        self.store.close()
