"""The task-level score Label Studio sorts by, from a prediction: what /predict and
`skillloop predict --format label-studio` give each task."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from labeling.active.strategies import get_strategy, task_score

if TYPE_CHECKING:
    from training.tagger import Prediction

log = logging.getLogger(__name__)


class TaskScorer:
    """The task-level score Label Studio sorts by (lower = served first): the project's
    `[selection] strategy` over a prediction's word probabilities
    (`labeling.active.strategies.task_score`), built once per service."""

    def __init__(self, strategy_name: str = "mnlp"):
        try:
            self.strategy = get_strategy(strategy_name or "mnlp")
        except ValueError as err:
            log.warning("%s; task scores use 'mnlp'", err)
            self.strategy = get_strategy("mnlp")

    def __call__(self, prediction: Prediction) -> float:
        try:
            return float(task_score(prediction, self.strategy))
        except Exception:  # a strategy bug must not fail a prediction batch
            log.exception("task_score failed; using mean span confidence")
            return mean_span_confidence(prediction)


def mean_span_confidence(prediction: Prediction) -> float:
    """Fallback task score: the mean score of the predicted spans; with no spans, the
    mean confidence of the words' most likely tags (1.0 for a post without words)."""
    scores = [s.score for s in prediction.spans if s.score is not None]
    if scores:
        return float(sum(scores) / len(scores))
    if len(prediction.probs) == 0:
        return 1.0
    return float(prediction.probs.max(axis=1).mean())
