"""The Label Studio project a backend is connected to, kept in step with the serving model:
its predictions, model version and ranked tab published after every swap and on /setup."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from backend.service.requests import StudioProjectKey
from backend.service.studio_ledger import PublicationLedger, Published

if TYPE_CHECKING:
    from backend.service.model_holder import ServingModel
    from labeling.studio.client import StudioClient

log = logging.getLogger(__name__)


class StudioConnection:
    """Remembers the Label Studio project id (from /setup or webhooks, persisted in the
    state dir) and, when a URL and API key are configured, points Label Studio at the
    serving model with `StudioClient.publish_model`: its predictions fetched, the project's
    model_version + uncertainty sampling set, skillloop's Data Manager tab (ordered by
    prediction score: what "Label All Tasks" serves) made the first, and (`remove_older`,
    on by default) older versions' predictions removed from tasks nobody has annotated yet.
    It does so after every swap, and on /setup once per project and model version, so a
    project connected by hand (Settings -> Model) is arranged too. Always in a thread of
    its own, one publication at a time.
    """

    RETRY_S = 60.0  # a failed arrangement on /setup is retried on a /setup after this

    def __init__(
        self,
        studio_file: Path,
        ledger: PublicationLedger,
        url: str | None = None,
        api_key: str | None = None,
        remove_older: bool = True,
        serving_version: Callable[[], str | None] | None = None,
    ):
        self.path = Path(studio_file)
        # the registry's serving version now: a model that no longer serves is not published
        self.serving_version = serving_version
        self.ledger = ledger  # whose turn it is to publish, across the project's processes
        self._url, self._api_key = url, api_key
        self.remove_older = remove_older
        self._client: StudioClient | None = None
        self._lock = threading.Lock()
        self._publishing = threading.Lock()  # one publication at a time
        self._arranged: tuple[int, str] | None = None  # (project, version) last published
        self._pending: tuple[int, str] | None = None  # ... and the one /setup queued
        self._retry_at = 0.0  # monotonic: no /setup arrangement before, after a failure
        self.project_id: int | None = self._read()
        self.last_refresh: dict | None = None

    @property
    def configured(self) -> bool:
        return bool(self._url and self._api_key)

    def _read(self) -> int | None:
        try:
            return int(json.loads(self.path.read_text())["project_id"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def remember(self, project_field) -> int | None:
        """Record the project id from `"12.1700000000"` (/setup), 12, or {"id": 12}, read
        by the one strict parser of project ids; anything else leaves the record as it is."""
        key = StudioProjectKey.of(project_field)
        if key is None:
            return self.project_id
        project_id = key.id
        if project_id != self.project_id:
            with self._lock:
                self.project_id = project_id
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(json.dumps({"project_id": project_id}))
                os.replace(tmp, self.path)
        return project_id

    def model_swapped(self, model: ServingModel) -> None:
        """Refresh Label Studio in its own thread: Label Studio answers the refresh by
        calling /predict for its tasks, which may take long, and must not hold the worker."""
        if not self.configured or not model.loaded:
            return
        if self.project_id is None:
            log.info("Label Studio project unknown until /setup or a webhook; no refresh")
            return
        self._spawn(model, "swap")

    def connected(self, project_field, model: ServingModel) -> int | None:
        """/setup: remember the project and, once per project and model version, arrange
        it in the background (a loaded model published; without one, the ordered tab
        alone). Label Studio calls /setup before every prediction fetch too, so a repeat
        costs one comparison, and a fetch started by the arrangement starts no other."""
        project_id = self.remember(project_field)
        if not self.configured or project_id is None:
            return project_id
        key = (project_id, model.version)
        with self._lock:
            if key in (self._arranged, self._pending) or time.monotonic() < self._retry_at:
                return project_id
            self._pending = key
        self._spawn(model, "setup")
        return project_id

    def _needless(self, project_id: int, model: ServingModel, last: Published | None) -> str:
        """Why publishing `model` would be wrong or done already ("" when it is neither)."""
        if not model.loaded:
            return ""
        if last == Published(project_id, model.version):
            return "already published (by this or another process of the project)"
        serving = self.serving_version() if self.serving_version is not None else None
        if serving is not None and serving != model.version:
            return f"{serving} serves now: Label Studio's version never goes back"
        return ""

    def _spawn(self, model: ServingModel, trigger: str) -> None:
        thread = threading.Thread(
            target=self.refresh,
            args=(model, trigger),
            name="skillloop-studio-refresh",
            daemon=True,
        )
        thread.start()

    def refresh(self, model: ServingModel, trigger: str = "swap") -> None:
        from labeling.studio.client import StudioClient
        from labeling.studio.queue import rank_tab, wait_for_connection

        if self._url is None or self._api_key is None or self.project_id is None:
            return  # not configured (model_swapped checks it first)
        with self._publishing:
            project_id = self.project_id
            with self._lock:
                self._pending = None
                if trigger == "setup" and self._arranged == (project_id, model.version):
                    return  # a swap published it meanwhile
                if self._client is None:
                    self._client = StudioClient(self._url, self._api_key)
                client = self._client
            started = time.time()
            try:
                with self.ledger.turn() as last:  # one publisher at a time, across processes
                    skip = self._needless(project_id, model, last)
                    if skip:
                        self._arranged = (project_id, model.version)
                        self.last_refresh = {"version": model.version, "ok": True}
                        self.last_refresh.update(trigger=trigger, skipped=skip)
                        log.info("Label Studio not pointed at %s: %s", model.version, skip)
                        return
                    if trigger == "setup":
                        wait_for_connection(client, project_id)
                    if model.loaded:
                        removed = client.publish_model(
                            project_id, model.version, sampling=True, remove_older=self.remove_older
                        )
                        self.ledger.record(Published(project_id, model.version))
                    else:  # no model yet: its predictions come with the first promotion
                        removed = 0
                        rank_tab(client, project_id)
            except Exception as err:  # reported in /status, never raised
                self._retry_at = time.monotonic() + self.RETRY_S
                self.last_refresh = {"version": model.version, "ok": False, "trigger": trigger}
                self.last_refresh["error"] = str(err)[:300]
                log.warning("Label Studio refresh for %s failed: %s", model.version, err)
                return
            self._arranged = (project_id, model.version)
            self.last_refresh = {"version": model.version, "ok": True, "trigger": trigger}
            self.last_refresh.update(at=started, older_predictions_removed=removed)
        log.info(
            "Label Studio project %s now on model_version %s, its ranked tab first "
            "(%d older predictions removed; after %s)",
            project_id,
            model.version,
            removed,
            trigger,
        )
