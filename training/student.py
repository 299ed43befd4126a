"""A smaller student: the backbone's lower K encoder layers, for CPUs where every layer
costs (docs/tagger.md: MiniLM-L6's lower 3 layers read a post about 1.6x faster).

`truncate_encoder` keeps the first K transformer blocks and sets the config's
`num_hidden_layers` to K before fine-tuning, so the checkpoint training writes is a plain
K-layer model: loading it (through `training.checkpoint.load`, as every tagger does) builds
K layers and finds a weight for each.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger(__name__)


def encoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The transformer blocks of a transformers encoder model (BERT-style
    `base_model.encoder.layer`, as MiniLM, BERT and RoBERTa have them), or ValueError."""
    blocks = getattr(getattr(model.base_model, "encoder", None), "layer", None)
    if not isinstance(blocks, torch.nn.ModuleList):
        raise ValueError(f"cannot find the encoder layers of {type(model).__name__}")
    return blocks


def truncate_encoder(model: torch.nn.Module, keep: int) -> int:
    """In place: keep the lowest `keep` encoder layers (`keep` 0 or at least the model's
    count keeps them all). Returns the number of layers the model has now."""
    blocks = encoder_layers(model)
    if keep < 0:
        raise ValueError(f"encoder layers must be positive (0: all), got {keep}")
    if keep == 0 or keep >= len(blocks):
        return len(blocks)
    before = len(blocks)
    del blocks[keep:]
    config: Any = getattr(model.base_model, "config")  # noqa: B009 (typed as a Tensor)
    config.num_hidden_layers = keep
    # configs that list a type per layer (newer transformers) keep the first `keep`
    types = getattr(config, "layer_types", None)
    if isinstance(types, list) and len(types) == before:
        config.layer_types = types[:keep]
    log.info("student: the lower %d of %d encoder layers", keep, before)
    return keep
