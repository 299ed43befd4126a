"""Prediction with a layered model (`training.layers`): one forward pass, every layer's
spans.

`Tagger.from_loaded` gives a layered checkpoint's tagger one `Tagger` per layer (on a
`HeadView` of that layer's head, with that layer's CRF scores and temperature) and hands
them here. `LayeredTagger.read` runs the encoder once per window (in torch, or in the
outer tagger's ONNX Runtime session, whose graph holds every head), splits the heads'
logits, and each layer's tagger decodes and scores its own words exactly as a flat tagger
does (`Tagger.decode`, `Tagger.score`): span scores are each layer's calibrated span
probabilities. `merge` puts the layers' predictions together: spans of every layer, so a
Knowledge span may lie inside a Skill span.

This module does not import `training.tagger` (which imports it): the per-layer taggers
are built by the class `Tagger.from_loaded` passes in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from training.layers import HeadView, LayeredTokenClassifier
from training.reading import Prediction, Reading, check_texts
from training.text import OUTSIDE
from training.windows import window_jobs

if TYPE_CHECKING:
    from training.checkpoint import Loaded

# a `training.tagger.Tagger`; not imported, even for type checking: tagger imports this
Tagger = Any


class LayeredTagger:
    """The per-layer taggers of one layered model, predicting together."""

    def __init__(self, net: LayeredTokenClassifier, parts: Sequence[Tagger], outer: Tagger):
        self.net = net
        self.parts = list(parts)
        self.layers = [list(part.labels) for part in self.parts]
        self.outer = outer  # the tagger callers hold: its windows, batches and tags

    @classmethod
    def build(
        cls, tagger_class: type[Tagger], loaded: Loaded, source: str, outer: Tagger, options: dict
    ) -> LayeredTagger:
        net = loaded.model
        assert isinstance(net, LayeredTokenClassifier) and loaded.layers is not None
        transitions = loaded.layer_transitions or [None] * len(loaded.layers)
        temperatures = loaded.layer_temperatures or [1.0] * len(loaded.layers)
        parts = []
        for i, layer in enumerate(loaded.layers):
            own = {**options, "transitions": transitions[i], "temperature": temperatures[i]}
            part = tagger_class(loaded.tokenizer, HeadView(net, i), layer, source, **own)
            part.precision = outer.precision
            part.version = f"{outer.version}[{'+'.join(layer)}]"
            parts.append(part)
        return cls(net, parts, outer)

    @property
    def temperatures(self) -> list[float]:
        return [part.temperature for part in self.parts]

    def set_temperatures(self, temperatures: Sequence[float]) -> None:
        if len(temperatures) != len(self.parts):
            raise ValueError(f"{len(temperatures)} temperatures for {len(self.parts)} layers")
        for part, temperature in zip(self.parts, temperatures, strict=True):
            part.set_temperature(temperature)

    def refresh_transitions(self) -> None:
        """Take the CRF scores from the model again (the trainer's dev evaluation)."""
        for part, scores in zip(self.parts, self.net.transitions(), strict=True):
            part.transitions = scores.reorder(part.tags) if scores is not None else None

    def predict(
        self, texts: Sequence[str], decoding: str | None = None, hidden: bool = False
    ) -> list[Prediction]:
        """One prediction per text with the spans of every layer (`merge`)."""
        per_layer = self.predict_layers(texts, decoding, hidden)
        return [merge(list(preds), self.outer.tags) for preds in zip(*per_layer, strict=True)]

    def predict_layers(
        self, texts: Sequence[str], decoding: str | None = None, hidden: bool = False
    ) -> list[list[Prediction]]:
        """Per layer, its own predictions of `texts` (its tags, spans and word tags)."""
        readings = self.read(texts, decoding, hidden)
        return [part.score(r) for part, r in zip(self.parts, readings, strict=True)]

    def read(
        self, texts: Sequence[str], decoding: str | None = None, hidden: bool = False
    ) -> list[list[Reading]]:
        """Per layer, that layer's readings of `texts` (`Tagger.read`'s, for its head),
        from one pass of the encoder over every window."""
        texts = check_texts(texts)
        outer = self.outer
        docs = [outer._prepare(text) for text in texts]
        layer_docs = [[_fresh(doc, len(part.tags)) for doc in docs] for part in self.parts]
        jobs = [
            job
            for d, doc in enumerate(docs)
            for job in window_jobs(d, doc.encoding, doc.windows, outer.specials)
        ]
        n = len(self.parts)

        def read(out) -> list:
            probs = [torch.softmax(logits.float(), dim=-1) for logits in out.layer_logits]
            return [*probs, out.hidden_states[-1]] if hidden else probs

        if outer.runtime is None:
            results = outer.forward_torch(self.net, jobs, read, hidden)
        else:  # ONNX Runtime: the exported graph's logits are the heads side by side
            results = outer.forward_runtime(jobs, hidden, self.net.sizes)
        for job, rows in results:
            for i in range(n):
                layer_docs[i][job.doc].probs[job.owned] = rows[i]
            if hidden:
                for i in range(n):
                    doc = layer_docs[i][job.doc]
                    if doc.hidden is None:
                        doc.hidden = np.zeros((len(doc.words), rows[n].shape[-1]), np.float32)
                    doc.hidden[job.owned] = rows[n]
        return [
            part.decode(ds, decoding or part.decoding)
            for part, ds in zip(self.parts, layer_docs, strict=True)
        ]


def _fresh(doc: Any, n_tags: int) -> Any:
    """`doc` with its own probabilities for a layer of `n_tags` tags (all O until filled)."""
    probs = np.zeros((len(doc.words), n_tags), dtype=np.float32)
    probs[:, 0] = 1.0
    return replace(doc, probs=probs, hidden=None)


def merge(predictions: list[Prediction], tags: Sequence[str]) -> Prediction:
    """The layers' predictions of one text as one: every layer's spans (sorted; they may
    overlap across layers), per word the first layer's non-O tag, and per word a
    distribution over the union `tags`: O when every layer says O, a layer's tag when
    that layer says it and the others say O (the layers read as independent given the
    encoder), renormalised. The path log-probability is the layers' sum."""
    first = predictions[0]
    column = {tag: j for j, tag in enumerate(tags)}
    outside = np.stack([p.probs[:, 0] for p in predictions], axis=1)  # (words, layers)
    probs = np.zeros((len(first.words), len(tags)), dtype=np.float64)
    probs[:, column[OUTSIDE]] = outside.prod(axis=1)
    for i, pred in enumerate(predictions):
        others = np.delete(outside, i, axis=1).prod(axis=1)
        for j, tag in enumerate(pred.tags[1:], start=1):
            probs[:, column[tag]] = pred.probs[:, j] * others
    probs /= np.clip(probs.sum(axis=1, keepdims=True), 1e-12, None)
    word_tags = [
        next((t for t in layer_tags if t != OUTSIDE), OUTSIDE)
        for layer_tags in zip(*(p.word_tags for p in predictions), strict=True)
    ]
    logs = [p.path_log_prob for p in predictions]
    return Prediction(
        first.text,
        first.words,
        list(tags),
        probs.astype(np.float32),
        sorted((s for p in predictions for s in p.spans), key=lambda s: (s.start, s.end, s.label)),
        word_tags,
        first.hidden,
        None if any(v is None for v in logs) else float(sum(v for v in logs if v is not None)),
    )
