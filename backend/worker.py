"""The service's training worker: one background thread that runs retraining rounds,
one at a time, each in a niced child process (backend.train_round), so the web
process keeps answering /predict and webhooks while a model trains.

Triggers: `request(reason)` (Start Training, POST /train, `skillloop retrain --url`) and
`annotation_changed()` after each stored change: once `[retrain] every_n_annotations`
changes have accumulated since the last round's snapshot, a round starts after
`debounce_seconds` without further changes (or at most MAX_WAIT_FACTOR x debounce after
the first of them, so a steady stream of annotations still gets rounds). A trigger while
a round runs queues exactly one follow-up round; more triggers join that one.
A child that crashes is a failed round in the log; the worker carries on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from backend.rounds import (
    RoundOutcome,
    RoundPlan,
    TrainingBusy,
    append_round,
    conclude_round,
    launch,
    plan_round,
    read_progress,
    read_rounds,
    registry_for,
    store_for,
    training_lock,
)
from labeling.project import Project
from training.registry import ModelVersion

log = logging.getLogger(__name__)

MAX_WAIT_FACTOR = 4


class TrainingWorker:
    def __init__(
        self,
        project: Project,
        state_dir: str | Path,
        on_promoted: Callable[[ModelVersion], None] | None = None,
        *,
        poll_seconds: float = 0.5,
    ):
        """`state_dir` is the project's state folder (`project.state_dir()`): the one that
        holds annotations.sqlite and models/."""
        self.project = project
        self.state_dir = Path(state_dir)
        self.on_promoted = on_promoted
        self.poll_seconds = poll_seconds
        self.registry = registry_for(self.state_dir)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: str | None = None  # the one queued trigger
        self._running: str | None = None  # trigger of the round in progress
        self._plan: RoundPlan | None = None
        self._last_round: dict | None = None
        self._first_change: float | None = None  # of the changes not yet checked
        self._last_change: float | None = None
        self._counter = 0  # store change counter at the last round's snapshot
        self._store = None  # the worker thread's own connection, for counting changes

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        rounds = read_rounds(self.state_dir)
        self._last_round = rounds[-1] if rounds else None
        self._counter = self._last_counter()
        self._stop.clear()
        now = time.monotonic()  # changes made while the service was down count after a debounce
        self._first_change = self._last_change = now
        self._thread = threading.Thread(target=self._loop, name="training-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the thread; a round in progress is cancelled (its child killed)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._store is not None and (self._thread is None or not self._thread.is_alive()):
            self._store.close()
            self._store = None

    def request(self, reason: str = "request") -> dict:
        """Ask for a round. While one runs, one follow-up is queued; more requests join it."""
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                return {
                    "accepted": False,
                    "queued": False,
                    "running": False,
                    "message": "the training worker is not running",
                }
            if self._running is not None or self._pending is not None:
                joined = self._pending is not None
                self._pending = self._pending or reason
                message = (
                    "a follow-up round is already queued"
                    if joined
                    else "queued: starts when the current round ends"
                )
                return {
                    "accepted": True,
                    "queued": True,
                    "running": self._running is not None,
                    "message": message,
                }
            self._pending = reason
            self._cond.notify_all()
            return {
                "accepted": True,
                "queued": False,
                "running": True,
                "message": "training round starting",
            }

    def annotation_changed(self) -> None:
        """Called after each stored annotation change; cheap (no I/O)."""
        with self._cond:
            now = time.monotonic()
            self._first_change = self._first_change or now
            self._last_change = now
            self._cond.notify_all()

    def status(self) -> dict:
        with self._cond:
            plan, running, pending = self._plan, self._running, self._pending
            last = self._last_round
        serving = self.registry.serving()
        progress = read_progress(plan) if plan is not None else None
        return {
            "running": running is not None,
            "trigger": running,
            "round": plan.round_id if plan is not None else None,
            "phase": progress.get("phase") if progress else None,
            "progress": progress.get("progress") if progress else None,
            "queued": pending is not None,
            "queued_trigger": pending,
            "last_round": last,
            "serving": serving.version if serving is not None else None,
            "every_n_annotations": self.project.retrain.every_n_annotations,
            "alive": self._thread is not None and self._thread.is_alive(),
        }

    # ------------------------------------------------------------------ the thread

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                self._cond.wait_for(
                    lambda: self._stop.is_set() or self._pending is not None,
                    timeout=self.poll_seconds,
                )
                if self._stop.is_set():
                    return
                trigger = self._pending
                seen = self._last_change if trigger is None and self._auto_ready() else None
            if seen is not None:  # the store is read outside the lock webhooks wait on
                if self._enough_changes():
                    trigger = "auto"
                else:
                    with self._cond:
                        if self._last_change == seen:  # no change arrived meanwhile
                            self._first_change = self._last_change = None
            if trigger is None:
                continue
            with self._cond:
                trigger = self._pending or trigger  # a request that came meanwhile is this round
                self._pending, self._running = None, trigger
            outcome = None
            try:
                outcome = self._run_one(trigger)
            except TrainingBusy:  # stopped while another process held the training lock
                log.info("stopped before the %s round could start", trigger)
            except Exception as err:  # a bug here must not end the worker
                log.exception("training round failed")
                outcome = RoundOutcome("?", trigger, "failed", f"{type(err).__name__}: {err}")
                append_round(self.state_dir, outcome)
            finally:
                with self._cond:
                    self._running, self._plan = None, None
                    if outcome is not None:
                        self._last_round = outcome.to_dict()

    def _auto_ready(self) -> bool:
        """Changes have come and are quiet (or overdue) enough to count them (under lock)."""
        every = self.project.retrain.every_n_annotations
        if every <= 0 or self._last_change is None:
            return False
        now, debounce = time.monotonic(), self.project.retrain.debounce_seconds
        quiet = now - self._last_change >= debounce
        overdue = now - (self._first_change or now) >= MAX_WAIT_FACTOR * max(debounce, 1.0)
        return quiet or overdue

    def _enough_changes(self) -> bool:
        if self._store is None:
            self._store = store_for(self.state_dir)
        changes = self._store.changes_since(self._counter)
        return changes >= self.project.retrain.every_n_annotations

    def _run_one(self, trigger: str) -> RoundOutcome:
        with training_lock(self.state_dir, wait=lambda: not self._stop.is_set()):
            plan = plan_round(self.project, self.state_dir, trigger)
            if isinstance(plan, RoundOutcome):
                append_round(self.state_dir, plan)
                log.info("round skipped: %s", plan.reason)
                return plan
            with self._cond:
                self._plan = plan
                self._counter = plan.snapshot["change_counter"]
            log.info(
                "round %s (%s): %d training posts, %d held out",
                plan.round_id,
                trigger,
                plan.train_documents,
                plan.heldout_documents,
            )
            child = launch(plan)
            while child.poll() is None:
                if self._stop.wait(self.poll_seconds):
                    child.kill()
                    child.wait()
                    outcome, _ = conclude_round(self.project, self.state_dir, plan, -9, True)
                    return outcome
            outcome, promoted = conclude_round(self.project, self.state_dir, plan, child.returncode)
        log.info("round %s %s: %s", plan.round_id, outcome.status, outcome.reason)
        if promoted is not None and self.on_promoted is not None:
            try:
                self.on_promoted(promoted)
            except Exception:  # the registry already serves it; the swap can be retried
                log.exception("on_promoted(%s) failed", promoted.version)
        return outcome

    def _last_counter(self) -> int:
        versions = self.registry.versions()
        return int(versions[-1].snapshot.get("change_counter", 0)) if versions else 0
