"""A whole round in the foreground, as the command line runs it: interrupted rounds
recovered first, then planned, trained (in this process, or a child) and concluded, under
the project's training lock."""

from __future__ import annotations

import logging

from backend.loop.child import run, write_json
from backend.loop.lock import training_lock
from backend.loop.recovery import recover_interrupted
from backend.loop.rounds import RoundOutcome, append_round, conclude_round, launch, plan_round
from labeling.project import Project
from labeling.state import ProjectState
from training.registry import ModelVersion
from training.text import Document

log = logging.getLogger(__name__)


def run_round(
    project: Project,
    state: ProjectState,
    trigger: str = "cli",
    *,
    in_process: bool = True,
    progress_bar: bool = False,
    num_threads: int = 1,
    documents: list[Document] | None = None,
) -> tuple[RoundOutcome, ModelVersion | None]:
    """A whole round in the foreground (the CLI): returns the outcome and, when one was
    promoted, the new serving version. Raises TrainingBusy if a round is running."""
    with training_lock(state):
        recover_interrupted(project, state)
        plan = plan_round(project, state, trigger, num_threads, documents)
        if isinstance(plan, RoundOutcome):
            append_round(state, plan)
            return plan, None
        if not in_process:
            child = launch(plan)
            return conclude_round(project, state, plan, child.wait())
        try:
            run(plan.spec, progress_bar=progress_bar)
            code = 0
        except Exception as err:  # recorded as a failed round, like a crashed child
            log.exception("round %s failed", plan.round_id)
            write_json(plan.folder / "error.json", {"error": f"{type(err).__name__}: {err}"})
            code = 1
        return conclude_round(project, state, plan, code)
