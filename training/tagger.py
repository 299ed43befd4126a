"""Prediction: raw texts in, exact character spans and per-word tag probabilities out.

A text is tokenized once (`training.windows.encode`), cut into overlapping windows of at
most `max_tokens` subwords, and every word takes its probabilities from the one window
that owns it, so a post of any length is read whole and a span crossing a seam is decoded
once. A word's probabilities are the softmax of its first subword's logits. Windows from
all texts are sorted by length and batched under a token budget, so little compute goes
to padding. Spans come from one decoding per document (`training.decoding`, then
`training.text.tags_to_spans`); a span's score is the lowest probability of its words'
assigned tags.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from training import checkpoint
from training.crf import Transitions
from training.decoding import DECODINGS, decode_many, no_span_across_lines
from training.onnx_runtime import OnnxForward
from training.precision import resolve_precision, set_precision
from training.text import Span, Word, tag_names, tags_to_spans, words
from training.windows import (
    Encoding,
    Window,
    encode,
    make_windows,
    owned_words,
    special_tokens,
    window_inputs,
)

log = logging.getLogger(__name__)

# Defaults measured by benchmarks/predict_speed.py (see docs/tagger.md).
DEFAULT_MAX_TOKENS = 254  # 256 with [CLS] and [SEP], the windows the trainer uses
DEFAULT_STRIDE = 32
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


@dataclass(slots=True)
class Prediction:
    """What the tagger says about one text.

    `probs[i, j]` is the probability that word `words[i]` has tag `tags[j]`; `tags` is
    `tag_names(labels)`, the same for every prediction of a tagger. `word_tags` is the
    decoded tag of each word, and `spans` the decoded spans (text and score filled).
    """

    text: str
    words: list[Word]
    tags: list[str]
    probs: np.ndarray  # (n_words, n_tags) float32, rows sum to 1
    spans: list[Span] = field(default_factory=list)
    word_tags: list[str] = field(default_factory=list)
    # (n_words, hidden) float32: what the classifier reads per word (`predict(hidden=True)`)
    hidden: np.ndarray | None = None


@dataclass(slots=True)
class _Doc:
    text: str
    words: list[Word]
    encoding: Encoding
    windows: list[Window]
    probs: np.ndarray
    hidden: np.ndarray | None = None


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
        max_tokens: int = DEFAULT_MAX_TOKENS,
        stride: int = DEFAULT_STRIDE,
        decoding: str = DEFAULT_DECODING,
        version: str | None = None,
        batch_tokens: int = BATCH_TOKENS,
        transitions: Transitions | None = None,
    ):
        if decoding not in DECODINGS:
            raise ValueError(f"unknown decoding {decoding!r}: choose one of {DECODINGS}")
        if max_tokens < 2:
            raise ValueError(f"max_tokens must be at least 2, got {max_tokens}")
        if stride < 0:
            raise ValueError(f"stride must not be negative, got {stride}")
        self.tokenizer = tokenizer
        self.model = model.eval()
        self.labels = list(labels)
        self.tags = tag_names(self.labels)
        self.source = source
        self.version = version or Path(source).name or source
        self.decoding = decoding
        # a CRF's learned scores, which viterbi decoding adds (None: constraints only)
        self.transitions = transitions.reorder(self.tags) if transitions else None
        self.precision = "fp32"  # as far as this class knows; from_loaded sets it
        # the forward pass in ONNX Runtime (training.onnx_runtime), else None: the torch model
        self.runtime: OnnxForward | None = None
        self.width_step = WIDTH_STEP
        self.batch_tokens = batch_tokens
        self.specials = special_tokens(tokenizer)
        limit = _position_limit(tokenizer, model) - sum(map(len, self.specials))
        if max_tokens > limit:
            log.info("max_tokens %d exceeds the model's limit; using %d", max_tokens, limit)
        self.max_tokens = min(max_tokens, limit)
        self.stride = min(stride, self.max_tokens // 2)
        self.max_width = self.max_tokens + sum(map(len, self.specials))
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
        max_tokens: int = DEFAULT_MAX_TOKENS,
        stride: int = DEFAULT_STRIDE,
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
            max_tokens=max_tokens,
            stride=stride,
            precision=chosen,
            num_threads=num_threads,
            decoding=decoding,
            version=_version(resolved, source),
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
        precision, runtime = set_precision(loaded.model, resolve_precision(precision, None))
        if precision in ("int8", "bf16", "onnx-int8"):
            options.setdefault("batch_tokens", 0)  # one window per pass, see BATCH_TOKENS
        options.setdefault("transitions", loaded.transitions)
        tagger = cls(loaded.tokenizer, loaded.model, loaded.labels, source, **options)
        tagger.precision = precision
        if runtime is not None:
            tagger.runtime = runtime
            tagger.width_step = 1  # ONNX Runtime compiles nothing per shape: no padding
        if precision != "fp32":
            tagger.version += f"+{precision}"
        return tagger

    def __repr__(self) -> str:
        return (
            f"Tagger({self.version!r}, labels={self.labels}, max_tokens={self.max_tokens}, "
            f"stride={self.stride}, precision={self.precision!r}, decoding={self.decoding!r}"
            f"{', crf' if self.transitions else ''})"
        )

    def predict(
        self, texts: Sequence[str], decoding: str | None = None, hidden: bool = False
    ) -> list[Prediction]:
        """Spans and per-word probabilities for each text, in order; with `hidden`, also
        each word's last hidden state (the classifier's input, for BALD).

        An empty (or whitespace-only) text gets an empty prediction.
        """
        texts = _check_texts(texts)
        docs = [self._prepare(text) for text in texts]
        self._fill_probs(docs, hidden)
        for doc in docs:
            _continue_orphans(doc)
        line_aware = [no_span_across_lines(d.probs, d.words, d.text, self.tags) for d in docs]
        scores = self.transitions
        if scores is not None:
            scores = (scores.start, scores.matrix, scores.end)
        word_tags = decode_many(line_aware, self.tags, decoding or self.decoding, scores)
        return [self._prediction(doc, tags) for doc, tags in zip(docs, word_tags, strict=True)]

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

    def _prepare(self, text: str) -> _Doc:
        offsets = words(text)
        encoding = encode(self.tokenizer, text, offsets)
        windows = make_windows(encoding, self.max_tokens, self.stride)
        # words no subword stands for (characters the tokenizer drops) are read as O,
        # unless _continue_orphans ties them to the word before
        probs = np.zeros((len(offsets), len(self.tags)), dtype=np.float32)
        probs[:, 0] = 1.0
        return _Doc(text, offsets, encoding, windows, probs)

    def classifier_head(self) -> dict:
        """The linear head as numpy (`weight` (n_tags, hidden), `bias`) and the dropout
        rate it was trained with: what MC-dropout BALD samples (labeling.active.strategies)."""
        head = getattr(self.model, "classifier", None)
        if not isinstance(head, torch.nn.Linear):
            raise ValueError(f"{self.version} has no linear classifier head")
        config = self.model.config
        dropout = next((r for r in (getattr(config, k, None) for k in _DROPOUT_KEYS) if r), 0.1)
        return {
            "weight": head.weight.detach().float().numpy().copy(),
            "bias": head.bias.detach().float().numpy().copy(),
            "dropout": float(dropout),
        }

    def _fill_probs(self, docs: list[_Doc], hidden: bool = False) -> None:
        """Run every window of every document through the model, in length-sorted batches."""
        jobs = []  # (length, doc, window, owned words)
        for doc in docs:
            for window in doc.windows:
                owned = owned_words(doc.encoding, window)
                if owned.size:
                    jobs.append((window.end - window.start, doc, window, owned))
        jobs.sort(key=lambda job: job[0], reverse=True)
        offset = len(self.specials[0])
        self.model.eval()  # a trainer's dev evaluation hands over a model in train mode
        with torch.inference_mode():
            batches = list(_batches(jobs, self.batch_tokens))
            tensors = [self._batch_tensors(batch) for batch in batches]
            if self.runtime is not None and self.runtime.concurrency > 1:
                # ONNX Runtime: several windows at once, one core each (docs/tagger.md)
                outputs = self.runtime.map(tensors, hidden)
                outputs = ((torch.from_numpy(logits), states) for logits, states in outputs)
            else:
                outputs = (self._forward(ids, mask, hidden) for ids, mask in tensors)
            for batch, (logits, states) in zip(batches, outputs, strict=True):
                probs = torch.softmax(logits, dim=-1).numpy()
                for row, (_, doc, window, owned) in enumerate(batch):
                    positions = doc.encoding.first_token[owned] - window.start + offset
                    doc.probs[owned] = probs[row, positions]
                    if states is not None:
                        if doc.hidden is None:
                            doc.hidden = np.zeros((len(doc.words), states.shape[-1]), np.float32)
                        doc.hidden[owned] = states[row, positions]

    def _batch_tensors(self, batch: list) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded `input_ids` and `attention_mask` of a batch of jobs."""
        inputs = [window_inputs(d.encoding, w, self.specials) for _, d, w, _ in batch]
        width = self.input_width(len(inputs[0]))
        ids = torch.full((len(inputs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(inputs), width), dtype=torch.long)
        for row, seq in enumerate(inputs):
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        return ids, mask

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

    def _prediction(self, doc: _Doc, word_tags: list[str]) -> Prediction:
        column = {tag: j for j, tag in enumerate(self.tags)}
        chosen = [float(doc.probs[i, column[t]]) for i, t in enumerate(word_tags)]
        spans = tags_to_spans(word_tags, doc.words, doc.text, chosen)
        return Prediction(
            doc.text, doc.words, list(self.tags), doc.probs, spans, word_tags, doc.hidden
        )


def _continue_orphans(doc: _Doc) -> None:
    """A word without a subword of its own that touches the previous word (a tokenizer
    dropped the character between them, as in "ingre\u00addients") continues it: it takes
    the previous word's probabilities with each B- share moved to the label's I-."""
    orphans = np.flatnonzero(doc.encoding.first_token < 0)
    for i in orphans[orphans > 0]:
        if doc.words[i - 1][1] == doc.words[i][0]:
            row = doc.probs[i - 1].copy()
            row[2::2] += row[1::2]  # tags are O, B-a, I-a, B-b, I-b, ...
            row[1::2] = 0.0
            doc.probs[i] = row


def _batches(jobs: list, budget: int):
    """Consecutive runs of length-sorted (longest first) jobs whose padded size fits `budget`."""
    batch: list = []
    for job in jobs:
        width = batch[0][0] if batch else job[0]
        if batch and width * (len(batch) + 1) > budget:
            yield batch
            batch = []
        batch.append(job)
    if batch:
        yield batch


def _check_texts(texts) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("predict takes a list of texts, not a single string: use predict([text])")
    try:
        texts = list(texts)
    except TypeError:
        raise TypeError(f"predict takes a list of texts, got {type(texts).__name__}") from None
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"text {i} is {type(text).__name__}, not str")
    return texts


def _position_limit(tokenizer, model: torch.nn.Module) -> int:
    """Longest input (special tokens included) the model and tokenizer accept."""
    limits = [getattr(model.config, "max_position_embeddings", None)]
    limits.append(getattr(tokenizer, "model_max_length", None))
    usable = [n for n in limits if isinstance(n, int) and 0 < n < 1_000_000]
    return min(usable) if usable else 512


def _version(resolved: str, source) -> str:
    """`folder-name@hash-of-weights` for a local checkpoint, else the source name."""
    path = Path(resolved)
    if source is None or str(source) in ("", "backbone"):
        name = "backbone"
    else:
        name = path.name if path.exists() else str(source)
    weights = sorted(path.glob("*.safetensors")) + sorted(path.glob("pytorch_model*.bin"))
    if not weights:
        return name
    digest = hashlib.sha1()
    for file in weights:
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return f"{name}@{digest.hexdigest()[:10]}"
