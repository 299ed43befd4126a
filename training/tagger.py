"""Prediction: raw texts in, exact character spans and per-word tag probabilities out.

A text is tokenized once (`training.windows.encode`), cut into overlapping windows (a
`training.windows.WindowConfig`: at most `max_tokens` subwords), and every word takes its
probabilities from the one window that owns it, so a post of any length is read whole and
a span crossing a seam is decoded once. A word's emission probabilities are the softmax of
its first subword's logits. Windows from all texts are sorted by length and batched under
a token budget, so little compute goes to padding. Spans come from one decoding per
document (`training.decoding`, then `training.text.tags_to_spans`).

What a prediction reports is the probability under the model that decoded it
(`training.crf.Lattice`): for a CRF checkpoint decoded by viterbi, the CRF's marginals
(forward-backward over the same constrained lattice, line rule included) per word, and
per span the exact probability that its words carry exactly its B-/I- tags and the next
word does not continue it; for a plain checkpoint (or argmax decoding), the emission
probabilities, and per span the same event under independent words. Both are divided by
the checkpoint's fitted temperature (`training.calibration`), which leaves the decoded
tags unchanged: every path score is divided alike.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from training import checkpoint
from training.crf import Lattice, Transitions
from training.decoding import DECODINGS, decode_texts
from training.layered_tagger import LayeredTagger
from training.onnx_runtime import INT8_PRECISIONS, OnnxForward
from training.precision import resolve_precision, set_precision
from training.reading import (
    Prediction,
    Reading,
    WindowedText,
    check_texts,
    continue_orphans,
    prediction_of,
)
from training.text import TagSet, words
from training.windows import (
    WINDOWS,
    WindowConfig,
    WindowJob,
    encode,
    forward_windows,
    make_windows,
    special_tokens,
    usable_window,
    window_jobs,
)

log = logging.getLogger(__name__)

# Defaults measured by benchmarks/predict_speed.py (see docs/tagger.md); the window's is
# training.windows.WINDOWS.
DEFAULT_DECODING = "viterbi"
# Windows per forward pass are limited by total padded subwords, not by count: short and
# long windows then cost about the same memory and time per batch. int8 (torch or ONNX
# Runtime) runs one window per pass: dynamic quantization scales activations per tensor,
# so batching would make a post's prediction depend on the posts it happens to share a
# batch with.
BATCH_TOKENS = 4096
# Inputs are padded to a multiple of WIDTH_STEP (at most the longest window): bf16 kernels
# are compiled per input shape on first use (a noticeable stall), so bf16 runs one window
# per pass, and `warm_up` compiles every width once at load, outside any request. ONNX
# Runtime compiles nothing per shape: its inputs are not padded at all.
WIDTH_STEP = 32
# where a transformers config keeps the dropout in front of its token classifier
_DROPOUT_KEYS = ("classifier_dropout", "hidden_dropout_prob", "dropout")


class Tagger:
    """A loaded token-classification model that predicts spans of the project's labels.

    Load it once (`Tagger.load`) and call `predict` many times; the model stays in memory.
    """

    def __init__(
        self,
        tokenizer,
        model: torch.nn.Module,
        labels: Sequence[str],
        source: str,
        *,
        window: WindowConfig = WINDOWS,
        decoding: str = DEFAULT_DECODING,
        version: str | None = None,
        batch_tokens: int = BATCH_TOKENS,
        transitions: Transitions | None = None,
        temperature: float = 1.0,
    ):
        if decoding not in DECODINGS:
            raise ValueError(f"unknown decoding {decoding!r}: choose one of {DECODINGS}")
        self.tokenizer = tokenizer
        self.model = model.eval()
        self.labels = list(labels)
        self.tagset = TagSet.of(self.labels)  # the columns of every probability row
        self.tags = list(self.tagset.tags)
        self.source = source
        self.version = version or Path(source).name or source
        self.decoding = decoding
        # a CRF's learned scores, which viterbi decoding adds (None: constraints only)
        self.transitions = transitions.reorder(self.tags) if transitions else None
        self.temperature = 1.0
        self.set_temperature(temperature)
        self.precision = "fp32"  # as far as this class knows; from_loaded sets it
        # the forward pass in ONNX Runtime (training.onnx_runtime), else None: the torch model
        self.runtime: OnnxForward | None = None
        # a layered checkpoint's per-layer taggers (training.layered_tagger), else None
        self.layered: LayeredTagger | None = None
        self.width_step = WIDTH_STEP
        self.batch_tokens = batch_tokens
        self.specials = special_tokens(tokenizer)
        # the window as read: max_tokens capped at the model's limit
        self.window = usable_window(window, tokenizer, model, self.specials)
        if self.window.max_tokens < window.max_tokens:
            log.info(
                "max_tokens %d exceeds the model's limit; using %d",
                window.max_tokens,
                self.window.max_tokens,
            )
        self.max_width = self.window.max_tokens + sum(map(len, self.specials))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        n_out = getattr(model.config, "num_labels", len(self.tags))
        if n_out != len(self.tags):
            raise ValueError(f"the model has {n_out} outputs for {len(self.tags)} tags")

    @classmethod
    def load(
        cls,
        source: str | Path | None,
        labels: Sequence[str],
        label_map: Mapping[str, str] | None = None,
        *,
        window: WindowConfig = WINDOWS,
        precision: str = "auto",
        quantize: bool | None = None,
        num_threads: int | None = None,
        decoding: str = DEFAULT_DECODING,
        allow_new_labels: bool = False,
    ) -> Tagger:
        """Load a checkpoint folder, hub name or the backbone (`None`) for `labels`.

        `precision` is one of `training.precision.PRECISIONS`; `quantize=False` is short
        for "fp32" (exact reference numbers), `quantize=True` for the default "auto".
        `num_threads` sets torch's intra-op threads for the whole process (None: unchanged).
        `allow_new_labels` gives tags the checkpoint lacks a random head (benchmarks only).
        Raises `checkpoint.CheckpointError` when the model cannot serve `labels`.
        """
        loaded = checkpoint.load(source, labels, label_map, allow_new_labels=allow_new_labels)
        resolved = checkpoint.resolve_source(source)
        chosen = resolve_precision(precision, quantize)
        tagger = cls.from_loaded(
            loaded,
            resolved,
            window=window,
            precision=chosen,
            num_threads=num_threads,
            decoding=decoding,
            version=checkpoint.version_name(resolved, source),
        )
        log.info("tagger %s: precision %s (asked %s)", tagger.version, tagger.precision, precision)
        if tagger.precision != "fp32":
            tagger.warm_up()
        return tagger

    @classmethod
    def from_loaded(
        cls,
        loaded: checkpoint.Loaded,
        source: str,
        *,
        precision: str = "fp32",
        num_threads: int | None = None,
        **options,
    ) -> Tagger:
        """Wrap an already loaded model (e.g. the trainer's, for dev evaluation).

        A precision other than fp32 converts `loaded.model` in place: keep fp32 for a model
        that is still training.
        """
        if num_threads is not None:
            if num_threads < 1:
                raise ValueError(f"num_threads must be at least 1, got {num_threads}")
            torch.set_num_threads(num_threads)
        precision = resolve_precision(precision, None)
        precision, runtime = set_precision(loaded.model, precision)
        if precision in ("int8", "bf16", *INT8_PRECISIONS):
            options.setdefault("batch_tokens", 0)  # one window per pass, see BATCH_TOKENS
        options.setdefault("transitions", loaded.transitions)
        options.setdefault("temperature", loaded.temperature)
        tagger = cls(loaded.tokenizer, loaded.model, loaded.labels, source, **options)
        tagger.precision = precision
        if runtime is not None:
            tagger.runtime = runtime
            tagger.width_step = 1  # ONNX Runtime compiles nothing per shape: no padding
        if precision != "fp32":
            tagger.version += f"+{precision}"
        if loaded.layers:
            tagger.layered = LayeredTagger.build(cls, loaded, source, tagger, options)
        return tagger

    def __repr__(self) -> str:
        return (
            f"Tagger({self.version!r}, labels={self.labels}, "
            f"max_tokens={self.window.max_tokens}, stride={self.window.stride}, "
            f"precision={self.precision!r}, decoding={self.decoding!r}"
            f"{', crf' if self.transitions else ''}"
            f"{f', temperature={self.temperature:g}' if self.temperature != 1.0 else ''})"
        )

    def set_temperature(self, temperature: float) -> None:
        """Divide emissions (and CRF scores) by `temperature` from now on (1.0: as trained)."""
        Lattice.free_words(self.tags, temperature)  # validates it
        self.temperature = float(temperature)

    def lattice(self, decoding: str | None = None, temperature: float | None = None) -> Lattice:
        """The lattice whose probabilities this tagger reports for `decoding`: the CRF's
        for a CRF checkpoint decoded by viterbi, independent words otherwise; at
        `temperature` (None: the tagger's own)."""
        t = self.temperature if temperature is None else temperature
        if self.transitions is not None and (decoding or self.decoding) == "viterbi":
            return Lattice.crf(self.tags, self.transitions, t)
        return Lattice.free_words(self.tags, t)

    def predict(
        self, texts: Sequence[str], decoding: str | None = None, hidden: bool = False
    ) -> list[Prediction]:
        """Spans and per-word probabilities for each text, in order; with `hidden`, also
        each word's last hidden state (the classifier's input, for BALD).

        An empty (or whitespace-only) text gets an empty prediction.
        """
        if self.layered is not None:  # every layer's spans, overlaps across layers kept
            return self.layered.predict(texts, decoding, hidden)
        return self.score(self.read(texts, decoding, hidden))

    def read(
        self, texts: Sequence[str], decoding: str | None = None, hidden: bool = False
    ) -> list[Reading]:
        """Run the model and decode: everything `predict` does but reading probabilities
        off the lattice, which `score` does (calibration scores one reading at many
        temperatures without running the model again)."""
        if self.layered is not None:
            raise ValueError(f"{self.version} is layered: read each layer's tagger (.layered)")
        texts = check_texts(texts)
        docs = [self._prepare(text) for text in texts]
        self._fill_probs(docs, hidden)
        return self.decode(docs, decoding or self.decoding)

    def decode(self, docs: list[WindowedText], decoding: str) -> list[Reading]:
        """Decode texts whose probabilities the model filled in (`read`; a layered tagger
        fills each layer's from one forward pass)."""
        for doc in docs:
            continue_orphans(doc, self.tagset)
        learned = self.transitions
        scores = None if learned is None else (learned.start, learned.matrix, learned.end)
        line_aware, word_tags = decode_texts(
            [d.probs for d in docs],
            [d.words for d in docs],
            [d.text for d in docs],
            self.tags,
            decoding,
            scores,
        )
        return [
            Reading(doc, probs, tags, decoding)
            for doc, probs, tags in zip(docs, line_aware, word_tags, strict=True)
        ]

    def score(
        self, readings: Sequence[Reading], temperature: float | None = None
    ) -> list[Prediction]:
        """Predictions from `read`'s readings, probabilities under `self.lattice` at
        `temperature` (None: the tagger's own)."""
        out: list[Prediction | None] = [None] * len(readings)
        for decoding in {r.decoding for r in readings}:
            lattice = self.lattice(decoding, temperature)
            which = [i for i, r in enumerate(readings) if r.decoding == decoding]
            # a CRF's probabilities come from the very lattice viterbi decoded; a plain
            # model's are its own emissions (the line rule is a decoding device, not its
            # claim)
            probs = [
                readings[i].doc.probs if lattice.free else readings[i].decode_probs for i in which
            ]
            for i, posterior in zip(which, lattice.posteriors(probs), strict=True):
                out[i] = prediction_of(readings[i].doc, readings[i].word_tags, posterior, self.tags)
        return [p for p in out if p is not None]

    def forward_torch(
        self, net: torch.nn.Module, jobs, read, hidden: bool
    ) -> Iterator[tuple[WindowJob, list[np.ndarray]]]:
        """`forward_windows` with this tagger's padding, batch size and widths: one place for
        the flat model and a layered tagger's heads (training/layered_tagger.py)."""
        return forward_windows(
            net,
            jobs,
            read,
            pad_id=self.pad_id,
            batch_tokens=self.batch_tokens,
            width=self.input_width,
            hidden_states=hidden,
        )

    def forward_runtime(
        self, jobs, hidden: bool, splits: Sequence[int] | None = None
    ) -> Iterator[tuple[WindowJob, list[np.ndarray]]]:
        """The same jobs and batches run by the ONNX Runtime session (`splits`: a layered
        model's heads, side by side in the exported graph's logits)."""
        assert self.runtime is not None
        return self.runtime.forward_windows(
            jobs,
            hidden,
            pad_id=self.pad_id,
            batch_tokens=self.batch_tokens,
            width=self.input_width,
            splits=splits,
        )

    def input_width(self, length: int) -> int:
        """Padded width of a batch whose longest input (specials included) is `length`."""
        return min(-(-length // self.width_step) * self.width_step, self.max_width)

    def warm_up(self) -> None:
        """Run one window of each input width once, so first requests are not slow."""
        widths = sorted({*range(WIDTH_STEP, self.max_width, WIDTH_STEP), self.max_width})
        self.model.eval()
        with torch.inference_mode():
            for width in widths if self.runtime is None else widths[-1:]:
                ids = torch.full((1, width), self.pad_id, dtype=torch.long)
                self._forward(ids, torch.ones_like(ids), hidden=False)

    def _prepare(self, text: str) -> WindowedText:
        offsets = words(text)
        encoding = encode(self.tokenizer, text, offsets)
        windows = make_windows(encoding, self.window)
        # words no subword stands for (characters the tokenizer drops) are read as O,
        # unless continue_orphans ties them to the word before
        probs = np.zeros((len(offsets), len(self.tags)), dtype=np.float32)
        probs[:, 0] = 1.0
        return WindowedText(text, offsets, encoding, windows, probs)

    def classifier_head(self) -> dict:
        """The linear head as numpy (`weight` (n_tags, hidden), `bias`) and the dropout
        rate it was trained with, and the lattice whose marginals the tagger reports: what
        MC-dropout BALD samples (labeling.active.strategies)."""
        head = getattr(self.model, "classifier", None)
        if not isinstance(head, torch.nn.Linear):
            raise ValueError(f"{self.version} has no linear classifier head")
        config = self.model.config
        dropout = next((r for r in (getattr(config, k, None) for k in _DROPOUT_KEYS) if r), 0.1)
        return {
            "weight": head.weight.detach().float().numpy().copy(),
            "bias": head.bias.detach().float().numpy().copy(),
            "dropout": float(dropout),
            "lattice": self.lattice(),
        }

    def _fill_probs(self, docs: list[WindowedText], hidden: bool = False) -> None:
        """Run every window of every document through the model (`forward_windows`)."""
        jobs = [
            job
            for d, doc in enumerate(docs)
            for job in window_jobs(d, doc.encoding, doc.windows, self.specials)
        ]

        def read(out) -> list:
            probs = torch.softmax(out.logits.float(), dim=-1)
            return [probs, out.hidden_states[-1]] if hidden else [probs]

        if self.runtime is None:
            results = self.forward_torch(self.model, jobs, read, hidden)
        else:  # ONNX Runtime: the same jobs and batches, run by its session
            results = self.forward_runtime(jobs, hidden)
        for job, rows in results:
            doc = docs[job.doc]
            doc.probs[job.owned] = rows[0]
            if hidden:
                if doc.hidden is None:
                    doc.hidden = np.zeros((len(doc.words), rows[1].shape[-1]), np.float32)
                doc.hidden[job.owned] = rows[1]

    def _forward(
        self, ids: torch.Tensor, mask: torch.Tensor, hidden: bool
    ) -> tuple[torch.Tensor, np.ndarray | None]:
        """fp32 logits (batch, width, n_tags) and, with `hidden`, the last hidden states."""
        if self.runtime is not None:
            logits, states = self.runtime(ids, mask, hidden)
            return torch.from_numpy(logits), states
        extra = {"output_hidden_states": True} if hidden else {}
        out = self.model(input_ids=ids, attention_mask=mask, **extra)
        states = out.hidden_states[-1].float().numpy() if hidden else None
        return out.logits.float(), states
