"""The service's training worker: one background thread that runs retraining rounds,
one at a time, each in a niced child process (backend.loop.child), so the web
process keeps answering /predict and webhooks while a model trains.

Triggers: `request(reason)` (Start Training, POST /train, `skillloop retrain --url`) and
`annotation_changed()` after each stored change, which feeds the auto trigger
(backend.loop.trigger.AutoTrigger: every_n_annotations changes, debounced). A trigger while a
round runs queues exactly one follow-up round; more triggers join that one. Every round
(run, skipped or failed) consumes its trigger. A child that crashes is a failed round in
the log; the worker carries on. On start, rounds interrupted with an earlier process are
recorded (backend.loop.recovery).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from backend.loop.lock import TrainingBusy, training_lock
from backend.loop.recovery import recover_interrupted
from backend.loop.rounds import (
    RoundOutcome,
    RoundPlan,
    append_round,
    conclude_round,
    launch,
    plan_round,
    read_progress,
    read_rounds,
)
from backend.loop.trigger import AutoTrigger
from labeling.project import Project
from labeling.state import ProjectState
from labeling.store import Store
from training.registry import ModelVersion

log = logging.getLogger(__name__)

REQUEST_WAIT_SECONDS = 0.3  # how long request() waits to say "started" or "skipped"
BUSY_ELSEWHERE = (
    "queued: a round is training in another process (another worker or host); this one "
    "starts when it ends, and is skipped if the training data is then the serving model's"
)


class TrainingWorker:
    def __init__(
        self,
        project: Project,
        state: ProjectState,
        on_promoted: Callable[[ModelVersion], None] | None = None,
        *,
        poll_seconds: float = 0.5,
        request_wait: float = REQUEST_WAIT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        num_threads: int = 1,
    ):
        """`state` is the project's state (`ProjectState.of(project)`): its folder holds
        models/ and rounds, its store the annotations."""
        self.project = project
        self.state = state
        self.on_promoted = on_promoted
        self.poll_seconds = poll_seconds
        self.request_wait = request_wait
        self.clock = clock
        self.num_threads = num_threads  # the child's torch threads (1 beside a service)
        self.registry = self.state.registry()
        # set while a round runs: cheap for the model holder to ask on every /predict
        self.running = threading.Event()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: str | None = None  # the one queued trigger
        self._running: str | None = None  # trigger of the round in progress
        self._plan: RoundPlan | None = None
        self._last_round: dict | None = None
        self._requests = 0  # request() calls so far ...
        self._decided: tuple[int, str, str] = (0, "", "")  # ... how far rounds answered them
        retrain = project.retrain
        self._auto = AutoTrigger(retrain.every_n_annotations, retrain.debounce_seconds)
        # the worker thread's own connection, for counting changes
        self._store: Store | None = None
        # called before each round reads its data (the service fetches there what Label
        # Studio holds that the store missed: backend/service/catch_up.py); must not raise
        self.before_round: Callable[[], object] | None = None

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self.state.root.mkdir(parents=True, exist_ok=True)
        self._recover()
        rounds = read_rounds(self.state)
        self._last_round = rounds[-1] if rounds else None
        self._auto.consumed = self._last_counter(rounds)
        self._stop.clear()
        self._auto.observe(None, self.clock())  # changes made while down count after a debounce
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

    def is_running(self) -> bool:
        """Whether a round runs now (no I/O, no lock)."""
        return self.running.is_set()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Whether, within `timeout` seconds, no round runs and none is queued: what a caller
        that needs the state folder to settle after an accepted request waits for."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._running is None and self._pending is None, timeout
            )

    def request(self, reason: str = "request") -> dict:
        """Ask for a round. While one runs, one follow-up is queued; more requests join it.
        Otherwise waits up to `request_wait` seconds for the round's plan, to say whether
        it started or was skipped (`state`: "started", "skipped", "starting", "queued",
        "joined" or "refused")."""
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                return _reply(False, False, "refused", "the training worker is not running")
            if self._running is not None or self._pending is not None:
                joined = self._pending is not None
                self._pending = self._pending or reason
                if joined:
                    return _reply(
                        True,
                        True,
                        "joined",
                        "a follow-up round is already queued",
                        running=self._running is not None,
                    )
                return _reply(
                    True,
                    True,
                    "queued",
                    "queued: starts when the current round ends (and is skipped if the "
                    "training data is then the serving model's)",
                    running=self._running is not None,
                )
            self._pending = reason
            self._requests += 1
            mine = self._requests
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._decided[0] >= mine, timeout=self.request_wait)
            seen, state, message = self._decided
        if seen < mine:
            return _reply(True, False, "starting", "training round starting")
        queued = state == "queued"  # behind a round of another process
        return _reply(True, queued, state, message, running=state == "started" or queued)

    def annotation_changed(self) -> None:
        """Called after each stored annotation change; cheap (no I/O)."""
        with self._cond:
            self._auto.observe(None, self.clock())
            self._cond.notify_all()

    def status(self) -> dict:
        with self._cond:
            plan, running, pending = self._plan, self._running, self._pending
            last = self._last_round
        serving = self.registry.serving()
        progress = read_progress(plan) if plan is not None else None
        return {
            "running": self.running.is_set(),
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
                now = self.clock()
                count = self._pending is None and self._auto.needs_count(now)
            if count:  # the store is read outside the lock webhooks wait on
                consumed = self._shared_counter()
                changes = self._changes_since(max(consumed, self._auto.consumed))
                with self._cond:
                    self._auto.consumed = max(consumed, self._auto.consumed)
                    self._auto.observe(changes, now)
            with self._cond:
                trigger = self._pending
                if trigger is None and self._auto.due(self.clock()):
                    trigger = "auto"
                if trigger is None:
                    continue
                self._pending, self._running = None, trigger
                answering = self._requests
                self.running.set()
            outcome = None
            try:
                outcome = self._run_one(trigger, answering)
            except TrainingBusy:  # stopped while another process held the training lock
                log.info("stopped before the %s round could start", trigger)
            except Exception as err:  # a bug here must not end the worker
                log.exception("training round failed")
                outcome = RoundOutcome("?", trigger, "failed", f"{type(err).__name__}: {err}")
                append_round(self.state, outcome)
            finally:
                with self._cond:
                    self._running, self._plan = None, None
                    self.running.clear()
                    if outcome is not None:
                        self._last_round = outcome.to_dict()
                        self._auto.consume(outcome.change_counter)  # even a skipped round
                    if self._decided[0] < answering:
                        state = outcome.status if outcome is not None else "stopped"
                        self._answer(answering, state, outcome.reason if outcome else "")
                    self._cond.notify_all()  # wait_idle callers

    def _answer(self, upto: int, state: str, message: str) -> None:
        """Tell request() callers up to number `upto` what their round became (under lock)."""
        self._decided = (upto, state, message)
        self._cond.notify_all()

    def _changes_since(self, counter: int) -> int:
        if self._store is None:
            self._store = self.state.store()
        return self._store.annotations.changes_since(counter)

    def _run_one(self, trigger: str, answering: int = 0) -> RoundOutcome | None:
        """One round under the project's round lock (None: an auto round that another
        process's round, run while this one waited for the lock, made unnecessary)."""

        def busy() -> None:  # another process (another worker, another host) trains
            with self._cond:
                self._answer(answering, "queued", BUSY_ELSEWHERE)

        with training_lock(self.state, wait=lambda: not self._stop.is_set(), on_busy=busy):
            self._announce(recover_interrupted(self.project, self.state))
            if trigger == "auto" and not self._still_due():
                return None
            if self.before_round is not None:
                self.before_round()
            plan = plan_round(self.project, self.state, trigger, self.num_threads)
            if isinstance(plan, RoundOutcome):
                append_round(self.state, plan)
                log.info("round skipped: %s", plan.reason)
                return plan
            with self._cond:
                self._plan = plan
                self._answer(
                    answering,
                    "started",
                    f"training round {plan.round_id} started: {plan.train_documents} "
                    f"training posts, {plan.heldout_documents} held out",
                )
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
                    outcome, _ = conclude_round(self.project, self.state, plan, -9, True)
                    return outcome
            outcome, promoted = conclude_round(self.project, self.state, plan, child.returncode)
        log.info("round %s %s: %s", plan.round_id, outcome.status, outcome.reason)
        self._announce([(outcome, promoted)], recovered=False)
        return outcome

    def _shared_counter(self) -> int:
        """The change counter of the latest round any process ran on this project (its
        rounds log and registry are shared), so one process's round consumes the changes
        for all of them."""
        return self._last_counter(read_rounds(self.state))

    def _still_due(self) -> bool:
        """Under the round lock: whether enough changes came after the latest round's
        snapshot (which another process may have taken while this one waited)."""
        consumed = max(self._shared_counter(), self._auto.consumed)
        with self._cond:
            self._auto.consumed = consumed
        return self._changes_since(consumed) >= max(1, self.project.retrain.every_n_annotations)

    def _recover(self) -> None:
        """Record rounds an earlier process left half done (skipped while another process
        trains: that one holds the lock, and the next round here recovers them)."""
        try:
            with training_lock(self.state):
                recovered = recover_interrupted(self.project, self.state)
        except TrainingBusy:
            return
        self._announce(recovered)

    def _announce(
        self, outcomes: list[tuple[RoundOutcome, ModelVersion | None]], recovered: bool = True
    ) -> None:
        for outcome, promoted in outcomes:
            if recovered:
                log.info(
                    "earlier round %s %s: %s", outcome.round_id, outcome.status, outcome.reason
                )
            if promoted is not None and self.on_promoted is not None:
                try:
                    self.on_promoted(promoted)
                except Exception:  # the registry already serves it; the swap can be retried
                    log.exception("on_promoted(%s) failed", promoted.version)

    def _last_counter(self, rounds: list[dict]) -> int:
        """The store's change counter at the latest snapshot a version was trained on or a
        round was skipped on (the data of a failed, cancelled or interrupted round is tried
        again after a restart)."""
        versions = self.registry.versions()
        counters = [int(v.snapshot.get("change_counter", 0)) for v in versions[-1:]]
        counters += [
            int(r["change_counter"])
            for r in rounds
            if r.get("status") == "skipped" and r.get("change_counter") is not None
        ]
        return max(counters, default=0)


def _reply(accepted: bool, queued: bool, state: str, message: str, running: bool = True) -> dict:
    return {
        "accepted": accepted,
        "queued": queued,
        "running": running if accepted else False,
        "started": state == "started",
        "state": state,
        "message": message,
    }
