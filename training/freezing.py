"""Which encoder weights a training epoch leaves untouched.

Freezing the word embeddings (a third of MiniLM's weights, only rows of seen subwords
would move) spares their gradient and AdamW update on every step; freezing the embeddings
and the lowest layers for the first epochs spares the backward pass below them.
A frozen weight has no gradient, so AdamW skips it (no update, no decay) and the clip
ignores it; nothing else about a step changes.
"""

from __future__ import annotations

import re
from typing import Protocol

import torch

# the index of an encoder block in a parameter name: BERT `encoder.layer.3.`, DistilBERT
# `transformer.layer.3.`, others `layers.3.`
LAYER_INDEX = re.compile(r"\.layers?\.(\d+)\.")


class FreezeSettings(Protocol):
    freeze_embeddings: bool
    freeze_layers: int
    freeze_epochs: int


def is_frozen(name: str, settings: FreezeSettings, epoch: int) -> bool:
    """Whether parameter `name` stays fixed during `epoch` (1-based)."""
    if settings.freeze_embeddings and "word_embeddings" in name:
        return True
    if settings.freeze_layers > 0 and epoch <= settings.freeze_epochs:
        if "embeddings." in name:
            return True
        found = LAYER_INDEX.search(name)
        return found is not None and int(found.group(1)) < settings.freeze_layers
    return False


def freeze_for_epoch(model: torch.nn.Module, settings: FreezeSettings, epoch: int) -> int:
    """Set `requires_grad` on every weight for `epoch`; the number of frozen weights."""
    frozen = 0
    for name, param in model.named_parameters():
        fixed = is_frozen(name, settings, epoch)
        param.requires_grad_(not fixed)
        frozen += param.numel() if fixed else 0
    return frozen
