"""Numeric precision for prediction and training on CPU: bf16 where the CPU computes it
natively, dynamic int8 on request, fp32 otherwise (measured in docs/tagger.md)."""

from __future__ import annotations

import logging
import warnings

import torch

log = logging.getLogger(__name__)

# "auto": bf16 where the CPU computes it natively (AVX512-BF16/AMX), else fp32. int8
# (dynamic quantization) is faster still but costs several points of span F1.
PRECISIONS = ("auto", "fp32", "bf16", "int8")


def resolve_precision(precision: str, quantize: bool | None = None) -> str:
    """The precision a tagger runs in: "auto" resolved for this CPU; `quantize=False`
    forces fp32. Raises ValueError for an unknown name."""
    if quantize is False:
        precision = "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: choose one of {PRECISIONS}")
    if precision == "auto":
        return "bf16" if native_bf16() else "fp32"
    return precision


def native_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products natively (else bf16 is emulated, slow)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def set_precision(model: torch.nn.Module, precision: str) -> str:
    """Convert `model` in place; returns the precision it ends up in."""
    if precision == "bf16":
        model.to(torch.bfloat16)
    elif precision == "int8" and not quantize_encoder(model):
        return "fp32"
    return precision


def quantize_encoder(model: torch.nn.Module) -> bool:
    """In place: dynamic int8 weights (per output channel) for the encoder's Linear layers.

    The feed-forward output layers (after GELU, where activations have outliers) and the
    head stay fp32: quantizing them too doubled the disagreement with fp32 tags.

    torch marks this eager-mode API deprecated (its successor, torchao, is not a
    dependency); where it is gone the model stays fp32, with a warning, rather than fail.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        try:
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

            spec = {
                name: per_channel_dynamic_qconfig
                for name, module in model.base_model.named_modules()
                if isinstance(module, torch.nn.Linear)
                and not (name.endswith("output.dense") and "attention" not in name)
            }
            quantize_dynamic(model.base_model, spec, dtype=torch.qint8, inplace=True)
        except (ImportError, AttributeError, RuntimeError) as err:
            log.warning("int8 quantization unavailable (%s); predicting in fp32", err)
            return False
    return True
