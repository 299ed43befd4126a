"""Do span scores mean what they say? Span-level calibration and temperature scaling.

A predicted span's score is its probability under the model that decoded it
(`training.tagger`). It is calibrated when, of the spans scored about p, a share p is
right; "right" is an exact match of offsets and label with a gold span.

- `span_outcomes`: (score, correct) for every predicted span of some documents.
- `expected_calibration_error`: ECE over 10 equal-width score bins, weighted by the
  bins' span counts (Guo et al., 2017, "On Calibration of Modern Neural Networks").
- `reliability_diagram`: accuracy against mean score per bin, as a PNG.
- `fit_temperature`: one scalar T dividing the emissions (and, for a CRF, its
  transition scores, so the marginals change coherently). The decoded tags stay the
  same at any T (every path score is divided alike); only the probabilities move.

T minimises the span NLL on held-out documents: the log loss of the predicted spans'
scores against their correctness, -sum(c log s + (1 - c) log(1 - s)). It is a proper
scoring rule on the very numbers shown to annotators and smooth in T, so a bounded 1-D
search finds it reliably; ECE is piecewise constant in T (spans jump between bins) and
noisy on the few hundred spans a round holds out, so it is reported, not optimised.

The fitted temperature lives in the checkpoint's `skillloop.json` under "calibration"
(`write_calibration`), and `training.checkpoint.load` hands it to the Tagger.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.checkpoint import METADATA_FILE, read_metadata
from training.datasets import split_documents
from training.text import Document

BINS = 10
# `skillloop train` without dev data holds out this share of the training posts to fit the
# temperature on (never fewer than MIN_CALIBRATION_POSTS posts, else it does not calibrate)
CALIBRATION_SHARE = 0.1
MIN_CALIBRATION_POSTS = 5
# the temperatures searched (log-uniformly); beyond them the scores are all 0.5 or 0/1
T_RANGE = (0.05, 20.0)
_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class Bin:
    low: float
    high: float
    count: int
    mean_score: float  # nan when empty
    accuracy: float  # nan when empty


@dataclass(frozen=True, slots=True)
class Calibration:
    """What a temperature fit found on held-out documents (before = at T = 1)."""

    temperature: float
    spans: int
    documents: int
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float

    def to_json(self) -> dict:
        return {
            "temperature": round(self.temperature, 5),
            "objective": "span_nll",
            "spans": self.spans,
            "documents": self.documents,
            "ece_before": round(self.ece_before, 5),
            "ece_after": round(self.ece_after, 5),
            "nll_before": round(self.nll_before, 5),
            "nll_after": round(self.nll_after, 5),
        }


def span_outcomes(
    predictions: Sequence, documents: Sequence[Document]
) -> tuple[np.ndarray, np.ndarray]:
    """`(scores, correct)` over every predicted span: correct = a gold span of the same
    document has exactly its start, end and label."""
    scores, correct = [], []
    for prediction, doc in zip(predictions, documents, strict=True):
        gold = {span.key() for span in doc.spans}
        for span in prediction.spans:
            scores.append(float(span.score if span.score is not None else 0.0))
            correct.append(span.key() in gold)
    return np.asarray(scores, dtype=np.float64), np.asarray(correct, dtype=bool)


def reliability(scores: np.ndarray, correct: np.ndarray, bins: int = BINS) -> list[Bin]:
    """Equal-width bins over [0, 1] (the last one closed): count, mean score, accuracy."""
    scores, correct = np.asarray(scores, dtype=np.float64), np.asarray(correct, dtype=bool)
    which = np.minimum((scores * bins).astype(np.int64), bins - 1)
    out = []
    for b in range(bins):
        inside = which == b
        n = int(inside.sum())
        mean = float(scores[inside].mean()) if n else math.nan
        accuracy = float(correct[inside].mean()) if n else math.nan
        out.append(Bin(b / bins, (b + 1) / bins, n, mean, accuracy))
    return out


def expected_calibration_error(scores: np.ndarray, correct: np.ndarray, bins: int = BINS) -> float:
    """sum over bins of (share of spans in the bin) * |accuracy - mean score|; 0 for none."""
    total = len(scores)
    if total == 0:
        return 0.0
    return float(
        sum(
            b.count / total * abs(b.accuracy - b.mean_score)
            for b in reliability(scores, correct, bins)
            if b.count
        )
    )


def span_nll(scores: np.ndarray, correct: np.ndarray) -> float:
    """Mean binary log loss of the span scores against their correctness."""
    if len(scores) == 0:
        return 0.0
    s = np.clip(np.asarray(scores, dtype=np.float64), _EPS, 1.0 - _EPS)
    c = np.asarray(correct, dtype=bool)
    return float(-np.where(c, np.log(s), np.log1p(-s)).mean())


def fit_temperature(
    tagger, documents: Sequence[Document], steps: int = 40, readings: Sequence | None = None
) -> Calibration:
    """The temperature minimising the span NLL of `tagger` on `documents` (held out from
    its training). The model runs once (or not at all, given its `readings` of the
    documents, `Tagger.read`); each candidate T only re-reads the lattice. The tagger
    itself is left unchanged: apply the result with `set_temperature`."""
    if readings is None:
        readings = tagger.read([doc.text for doc in documents])

    def outcomes(t: float) -> tuple[np.ndarray, np.ndarray]:
        return span_outcomes(tagger.score(readings, temperature=t), documents)

    def loss(log_t: float) -> float:
        return span_nll(*outcomes(math.exp(log_t)))

    before = outcomes(1.0)
    if len(before[0]) == 0:  # nothing predicted: nothing to calibrate
        nll = 0.0
        return Calibration(1.0, 0, len(documents), 0.0, 0.0, nll, nll)
    log_t = _golden_minimum(loss, math.log(T_RANGE[0]), math.log(T_RANGE[1]), steps)
    if loss(log_t) > loss(0.0):  # the search never makes things worse than T = 1
        log_t = 0.0
    t = math.exp(log_t)
    after = outcomes(t)
    return Calibration(
        t,
        len(before[0]),
        len(documents),
        expected_calibration_error(*before),
        expected_calibration_error(*after),
        span_nll(*before),
        span_nll(*after),
    )


def _golden_minimum(f, low: float, high: float, steps: int) -> float:
    """Golden-section search for the minimum of a unimodal `f` on [low, high]."""
    ratio = (math.sqrt(5) - 1) / 2
    a, b = low, high
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(steps):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(d)
    return (a + b) / 2


def write_calibration(folder: str | Path, calibration: Calibration | Mapping) -> None:
    """Store a fit in a checkpoint's `skillloop.json` (other keys kept), atomically."""
    path = Path(folder) / METADATA_FILE
    metadata = read_metadata(folder)
    data = calibration.to_json() if isinstance(calibration, Calibration) else dict(calibration)
    metadata["calibration"] = data
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(metadata, indent=2) + "\n")
    os.replace(partial, path)


def reliability_diagram(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str = ""
) -> Path:
    """A PNG: per named (scores, correct) set, accuracy against mean score per bin (with
    its ECE in the legend) over the diagonal of perfect calibration, and below it how
    many spans each bin holds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(6, 7), gridspec_kw={"height_ratios": [3, 1]}, sharex=True
    )
    top.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
    width = 1.0 / BINS / (len(curves) + 1)
    for k, (name, (scores, correct)) in enumerate(curves.items()):
        bins = [b for b in reliability(scores, correct) if b.count]
        ece = expected_calibration_error(scores, correct)
        top.plot(
            [b.mean_score for b in bins],
            [b.accuracy for b in bins],
            marker="o",
            label=f"{name} (ECE {ece:.3f}, {len(scores)} spans)",
        )
        bottom.bar(
            [b.low + (k + 0.5) * width for b in bins],
            [b.count for b in bins],
            width=width,
            label=name,
        )
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="share exactly right", title=title)
    top.legend(loc="upper left", fontsize=8)
    bottom.set(xlabel="span score (10 equal-width bins)", ylabel="spans")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def calibrate_checkpoint(
    folder: str | Path,
    labels: Sequence[str],
    documents: Sequence[Document],
    label_map: Mapping[str, str] | None = None,
    **tagger_options,
) -> dict:
    """Fit the temperature of the checkpoint in `folder` on held-out `documents` and store
    it there (what a retraining round does before its gate). Returns the fit as JSON.

    The gate may score the same documents: the decoded spans, hence F1, do not depend
    on the temperature, so fitting on them leaks nothing into the decision."""
    from training.tagger import Tagger

    tagger = Tagger.load(folder, labels, label_map, **tagger_options)
    if tagger.layered is not None:  # a label-layered model: one temperature per layer
        fitted = fit_layer_temperatures(tagger.layered, documents)
        write_calibration(folder, fitted)
        return fitted
    tagger.set_temperature(1.0)  # fit from the model as trained, not a stale temperature
    fit = fit_temperature(tagger, documents)
    write_calibration(folder, fit)
    return fit.to_json()


def fit_layer_temperatures(layered, documents: Sequence[Document]) -> dict:
    """Each layer's temperature (`training.layered_tagger.LayeredTagger`), fitted on its
    own spans against the layer's full gold, from one run of the model. The JSON holds
    `temperatures` (per layer, what `training.checkpoint.load` reads), each layer's fit
    under `layers`, and the spans of all layers pooled under the flat fit's keys."""
    from training.layers import layer_documents

    layered.set_temperatures([1.0] * len(layered.parts))
    readings = layered.read([doc.text for doc in documents])
    fits, before, after = [], [], []
    for part, layer_readings in zip(layered.parts, readings, strict=True):
        docs = layer_documents(documents, part.labels)
        fit = fit_temperature(part, docs, readings=layer_readings)
        fits.append(fit)
        before.append(span_outcomes(part.score(layer_readings), docs))
        after.append(span_outcomes(part.score(layer_readings, fit.temperature), docs))
    pooled = [
        (np.concatenate([o[0] for o in outcomes]), np.concatenate([o[1] for o in outcomes]))
        for outcomes in (before, after)
    ]
    some = len(pooled[0][0]) > 0
    summary = Calibration(
        1.0,
        sum(f.spans for f in fits),
        len(documents),
        *(expected_calibration_error(*o) if some else 0.0 for o in pooled),
        *(span_nll(*o) if some else 0.0 for o in pooled),
    ).to_json()
    del summary["temperature"]
    return {
        "temperatures": [round(f.temperature, 5) for f in fits],
        **summary,
        "layers": [
            {"labels": part.labels, **f.to_json()}
            for part, f in zip(layered.parts, fits, strict=True)
        ],
    }


@dataclass(frozen=True)
class CalibrationPlan:
    """Which posts a new model trains on and which it fits its temperature on."""

    train: list[Document]
    held: list[Document]
    source: str  # where the held posts come from, said to the user


def plan_calibration(
    train_docs: Sequence[Document],
    dev_docs: Sequence[Document] | None,
    share: float = CALIBRATION_SHARE,
    seed: int = 0,
) -> CalibrationPlan:
    """Dev posts when there are any (F1, hence early stopping, does not depend on the
    temperature); else `share` of the training posts, held out from training, when that is
    at least MIN_CALIBRATION_POSTS posts; else none (the model serves unscaled scores)."""
    if dev_docs:
        return CalibrationPlan(list(train_docs), list(dev_docs), f"{len(dev_docs)} dev posts")
    if share > 0:
        rest, held = split_documents(train_docs, [1 - share, share], seed)
        if len(held) >= MIN_CALIBRATION_POSTS and rest:
            return CalibrationPlan(rest, held, f"{len(held)} training posts held out")
    return CalibrationPlan(list(train_docs), [], "")
