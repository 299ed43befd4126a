"""The tagger's encoder and head through ONNX Runtime: the fast path on CPUs without bf16.

`torch.onnx.export` (the TorchScript exporter, `dynamo=False`: it needs no extra package and
works offline with transformers 5) writes the token-classification model, inputs
`input_ids` and `attention_mask` of any batch and length, outputs `logits` and the last
hidden state (what the classifier reads, for BALD). For "onnx-int8" the graph then goes
through `onnxruntime.quantization.quantize_dynamic`: int8 weights, activations quantized
per tensor at run time (so, as with torch's int8, one window per pass keeps a post's
result independent of its batchmates). The "-fused" precisions first run ONNX Runtime's
transformer optimizer (`onnxruntime.transformers.optimizer`, BERT fusions: embeddings +
layer norm, attention, bias + GELU, skip + layer norm) on a graph exported with eager
attention (torch's SDPA exports as primitives the attention fusion does not recognise);
docs/tagger.md measures when that helps. Export and quantization take a few seconds at load
(docs/tagger.md) and happen in a temporary folder: nothing is written beside the checkpoint.

Only the forward pass moves to ONNX Runtime: tokenization, windows, softmax and the CRF's
Viterbi decoding are the tagger's own, the same for every precision.
"""

from __future__ import annotations

import copy
import logging
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from training.windows import WindowJob, padded_batches

log = logging.getLogger(__name__)

ONNX_PRECISIONS = ("onnx", "onnx-int8", "onnx-fused", "onnx-fused-int8")
INT8_PRECISIONS = ("onnx-int8", "onnx-fused-int8")  # quantized: one window per pass
FUSED_PRECISIONS = ("onnx-fused", "onnx-fused-int8")
OPSET = 17
# windows run concurrently, one thread each, rather than one at a time on all threads
CONCURRENT = True
# onnxruntime.quantization.quantize_dynamic settings (measured in docs/tagger.md)
# plus "fp32_ffn_outputs": True, which keeps the feed-forward output products in fp32
# (as torch's int8 here does)
# (per output channel: 0.3 points of span F1 below fp32 where per tensor lost 2.9)
INT8_OPTIONS: dict = {"weight_type": "QInt8", "per_channel": True, "reduce_range": False}
# onnxruntime.transformers FusionOptions flags for the "-fused" precisions (benchmarks
# compare settings; docs/tagger.md); for int8, attention stays unfused: its fused operator
# (QAttention) was slower than the int8 products and attention it replaces
FUSIONS: dict = {}
FUSIONS_INT8: dict = {"enable_attention": False}


def available() -> bool:
    """Whether onnxruntime (and onnx, for int8 quantization) can be imported."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class _Logits(torch.nn.Module):
    """What is exported: logits and the last hidden state as plain outputs."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        out = self.model(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True
        )
        return out.logits, out.hidden_states[-1]


class OnnxForward:
    """A model's forward pass in an ONNX Runtime session: `(ids, mask, hidden) -> (logits,
    last hidden state or None)` as numpy arrays. Threads: torch's intra-op thread count
    when the session is made, unless `threads` says otherwise."""

    def __init__(
        self,
        model: torch.nn.Module,
        precision: str,
        threads: int | None = None,
        int8_options: dict | None = None,
        concurrent: bool | None = None,
    ):
        if precision not in ONNX_PRECISIONS:
            raise ValueError(f"not an ONNX precision: {precision!r}")
        import onnxruntime as ort

        self.precision = precision
        concurrent = CONCURRENT if concurrent is None else concurrent
        self._pool: ThreadPoolExecutor | None = None
        with tempfile.TemporaryDirectory(prefix="skillloop-onnx-") as folder:
            fused = precision in FUSED_PRECISIONS
            path = export(model, Path(folder) / "model.onnx", eager_attention=fused)
            if fused:
                target = Path(folder) / "model-fused.onnx"
                path = fuse(path, target, model.config, precision in INT8_PRECISIONS)
            if precision in INT8_PRECISIONS:
                path = quantize(path, Path(folder) / "model-int8.onnx", int8_options)
            options = ort.SessionOptions()
            threads = threads or torch.get_num_threads()
            # `concurrent`: one intra-op thread per run and `threads` runs at once, each
            # window on its own core; else one run at a time on `threads` threads
            self.concurrency = threads if concurrent else 1
            options.intra_op_num_threads = 1 if concurrent else threads
            options.inter_op_num_threads = 1
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )

    def __call__(
        self, ids: torch.Tensor, mask: torch.Tensor, hidden: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
        outputs = self.session.run(["logits", "hidden"] if hidden else ["logits"], feeds)
        return outputs[0], outputs[1] if hidden else None

    def forward_windows(
        self,
        jobs: Sequence[WindowJob],
        hidden: bool,
        *,
        pad_id: int,
        batch_tokens: int,
        width: Callable[[int], int] | None = None,
        splits: Sequence[int] | None = None,
    ) -> Iterator[tuple[WindowJob, list[np.ndarray]]]:
        """`training.windows.forward_windows` run by this session: per job, its words'
        tag probabilities (and, with `hidden`, last hidden states). `splits`: the logits
        are several heads side by side (a layered model's, `training.layers`), of these
        sizes: one probability row per head, each head's softmax its own."""
        batches = list(padded_batches(jobs, pad_id, batch_tokens, width))
        outputs = self.map([(ids, mask) for _, ids, mask in batches], hidden)
        for (batch, _, _), (logits, states) in zip(batches, outputs, strict=True):
            heads = torch.from_numpy(logits).float().split(list(splits or [logits.shape[-1]]), -1)
            probs = [torch.softmax(head, dim=-1).numpy() for head in heads]
            for row, job in enumerate(batch):
                rows = [p[row, job.positions] for p in probs]
                if states is not None:
                    rows.append(states[row, job.positions].astype(np.float32))
                yield job, rows

    def map(
        self, inputs: Sequence[tuple[torch.Tensor, torch.Tensor]], hidden: bool = False
    ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """`self(ids, mask, hidden)` for each input, in order, `concurrency` at a time
        (ONNX Runtime releases the GIL while it runs)."""
        if self.concurrency == 1:
            return (self(ids, mask, hidden) for ids, mask in inputs)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="onnx")
        return self._pool.map(lambda pair: self(pair[0], pair[1], hidden), inputs)


def export(model: torch.nn.Module, path: Path, eager_attention: bool = False) -> Path:
    """Write `model` (a transformers token classifier) as ONNX; the model is not changed
    (the exporter leaves modules in train mode, so a copy is exported). With
    `eager_attention` the copy computes attention as explicit products and softmax, the
    pattern ONNX Runtime's attention fusion matches."""
    copied = copy.deepcopy(model).float()
    if eager_attention:
        getattr(copied, "set_attn_implementation")("eager")  # noqa: B009 (a transformers model)
    wrapped = _Logits(copied).eval()
    ids = torch.ones((1, 8), dtype=torch.long)
    dynamic = {0: "batch", 1: "length"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapped,
            (ids, torch.ones_like(ids)),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits", "hidden"],
            dynamic_axes={
                name: dynamic for name in ("input_ids", "attention_mask", "logits", "hidden")
            },
            opset_version=OPSET,
            dynamo=False,
        )
    return path


def quantize(source: Path, target: Path, options: dict | None = None) -> Path:
    """Dynamic int8 quantization of the graph's matrix products (`INT8_OPTIONS` unless
    `options` says otherwise: benchmarks compare settings)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    settings = {**INT8_OPTIONS, **(options or {})}
    settings["weight_type"] = getattr(QuantType, settings["weight_type"])
    # the head's product stays fp32 (it is tiny, and its rounding would go straight into
    # the logits); with "fp32_ffn_outputs" the feed-forward outputs' products too
    ffn_outputs = settings.pop("fp32_ffn_outputs", False)
    import onnx

    graph = onnx.load(str(source), load_external_data=False).graph
    settings["nodes_to_exclude"] = [
        node.name
        for node in graph.node
        if node.op_type == "MatMul"
        and (
            "classifier" in node.name
            or "/heads." in node.name  # a layered model's heads (training.layers)
            or (ffn_outputs and "/output/dense/" in node.name and "/attention/" not in node.name)
        )
    ]
    # a fused graph's ONNX Runtime operators (Attention, SkipLayerNormalization) escape
    # ONNX's shape inference: their outputs are fp32 like everything quantized here
    settings["extra_options"] = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    with _root_logger_kept():
        quantize_dynamic(str(source), str(target), **settings)
    return target


def fuse(source: Path, target: Path, config, int8: bool = False) -> Path:
    """ONNX Runtime's BERT fusions on the graph at `source` (heads and width from the
    transformers `config`), written to `target`; `int8`: the graph is to be quantized
    (`FUSIONS_INT8`). ONNX Runtime's own graph optimizations still run when the session
    loads."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    for flag, value in {**(FUSIONS_INT8 if int8 else {}), **FUSIONS}.items():
        setattr(options, flag, value)
    with _root_logger_kept(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimized = optimize_model(
            str(source),
            model_type="bert",
            num_heads=config.num_attention_heads,
            hidden_size=config.hidden_size,
            opt_level=0,
            optimization_options=options,
        )
        optimized.save_model_to_file(str(target))
    fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    log.info("ONNX fusions: %s", fused)
    return target


@contextmanager
def _root_logger_kept() -> Iterator[None]:
    """onnxruntime's tools log through the root logger, which configures logging for the
    whole process when nothing has: keep the root logger as it was."""
    root = logging.getLogger()
    handlers, disabled = list(root.handlers), root.disabled
    root.disabled = True
    try:
        yield
    finally:
        root.disabled = disabled
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
