"""Early stopping on dev F1, holding the best epoch's state."""

from __future__ import annotations

import copy

import torch

from training.crf import CRF, Transitions


class EarlyStopping:
    """Keeps the weights (and CRF scores) of the best epoch by dev F1, and says when
    `patience` epochs have passed without improvement."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best_f1 = -1.0
        self.best_epoch = 0
        self.since_best = 0
        self.state: dict | None = None
        self.crf_scores: Transitions | None = None

    def update(self, epoch: int, f1: float, model: torch.nn.Module, crf: CRF | None) -> bool:
        """Record epoch `epoch`'s dev F1; True when training should stop."""
        if f1 > self.best_f1:
            self.best_f1, self.best_epoch, self.since_best = float(f1), epoch, 0
            self.state = copy.deepcopy(model.state_dict())
            self.crf_scores = crf.transitions() if crf else None
            return False
        self.since_best += 1
        return self.since_best >= self.patience

    def restore(self, model: torch.nn.Module) -> None:
        if self.state is not None:
            model.load_state_dict(self.state)

    def crf_scores_to_save(self, crf: CRF | None, had_dev: bool) -> Transitions | None:
        """The CRF scores saved beside the weights: the best epoch's, else the last ones."""
        scores = self.crf_scores if had_dev else None
        if scores is None and crf is not None:
            scores = crf.transitions()
        return scores
