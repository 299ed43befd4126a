"""Numeric precision (and runtime) for prediction on CPU, chosen per CPU class.

- "fp32": torch, exact reference numbers.
- "bf16": torch in bf16; fast only where the CPU computes bf16 natively.
- "int8": torch dynamic int8 (fbgemm) for the encoder's Linear layers but the feed-forward
  output layers.
- "onnx": the same model through ONNX Runtime in fp32 (`training.onnx_runtime`).
- "onnx-int8": ONNX Runtime with dynamic int8 matrix products.
- "onnx-fused", "onnx-fused-int8": the same after ONNX Runtime's BERT graph fusions
  (attention, bias + GELU, skip + layer norm; `training.onnx_runtime.fuse`).
- "auto": `AUTO[cpu_class()]`, the fastest variant that kept span F1 within 0.5 points of
  fp32 in docs/tagger.md's measurements on that class of CPU.

Whatever the precision, only the forward pass changes: windows, softmax and decoding (the
CRF's Viterbi) are the tagger's own.
"""

from __future__ import annotations

import logging
import warnings

import torch

from training.cpu import cpu_class, native_bf16
from training.onnx_runtime import ONNX_PRECISIONS, OnnxForward
from training.onnx_runtime import available as onnx_available

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "int8", *ONNX_PRECISIONS)
# per CPU class (training.cpu.CPU_CLASSES): measured in docs/tagger.md ("other", e.g. Arm,
# is not measured: fp32); avx2: ONNX int8 after the GELU and layer-norm fusions, 1.3-2x
# plain onnx-int8 in docs/tagger.md's runs (issue 23)
AUTO = {"bf16": "bf16", "avx2": "onnx-fused-int8", "other": "fp32"}

__all__ = ["AUTO", "PRECISIONS", "native_bf16", "resolve_precision", "set_precision"]


def resolve_precision(precision: str, quantize: bool | None = None) -> str:
    """The precision a tagger runs in: "auto" resolved for this CPU; `quantize=False`
    forces fp32. Raises ValueError for an unknown name."""
    if quantize is False:
        precision = "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: choose one of {PRECISIONS}")
    if precision == "auto":
        chosen = AUTO[cpu_class()]
        if chosen in ONNX_PRECISIONS and not onnx_available():
            log.warning("onnxruntime is not installed: %s falls back to fp32", chosen)
            chosen = "fp32"
        log.info("precision auto: %s for this CPU (class %s)", chosen, cpu_class())
        return chosen
    return precision


def set_precision(model: torch.nn.Module, precision: str) -> tuple[str, OnnxForward | None]:
    """Convert `model` in place for a torch precision, or build the ONNX Runtime session
    for an ONNX one (the torch model is left as it is). Returns the precision it ends up
    in (fp32 where the asked one is unavailable here) and the ONNX forward pass, if any."""
    if precision == "bf16":
        model.to(torch.bfloat16)
    elif precision == "int8" and not quantize_encoder(model):
        return "fp32", None
    elif precision in ONNX_PRECISIONS:
        try:
            return precision, OnnxForward(model, precision)
        except (ImportError, RuntimeError, ValueError, OSError) as err:
            log.warning("ONNX Runtime unavailable (%s); predicting in fp32", err)
            return "fp32", None
    return precision, None


def quantize_encoder(model: torch.nn.Module, *, ffn_outputs: bool = False) -> bool:
    """In place: dynamic int8 weights (per output channel) for the encoder's Linear layers.

    The feed-forward output layers (after GELU, where activations have outliers) and the
    head stay fp32 unless `ffn_outputs`: quantizing them too doubled the disagreement with
    fp32 tags on an earlier model, though they are a third of the encoder's matrix work
    (docs/tagger.md).

    torch marks this eager-mode API deprecated (its successor, torchao, is not a
    dependency); where it is gone the model stays fp32, with a warning, rather than fail.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        try:
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

            encoder = model.base_model
            assert isinstance(encoder, torch.nn.Module)  # a transformers model's encoder
            spec = {
                name: per_channel_dynamic_qconfig
                for name, module in encoder.named_modules()
                if isinstance(module, torch.nn.Linear)
                and (ffn_outputs or not (name.endswith("output.dense") and "attention" not in name))
            }
            quantize_dynamic(encoder, spec, dtype=torch.qint8, inplace=True)
        except (ImportError, AttributeError, RuntimeError) as err:
            log.warning("int8 quantization unavailable (%s); predicting in fp32", err)
            return False
    return True
