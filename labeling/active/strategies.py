"""Query strategies: which unlabelled posts to label next.

In the spirit of small-text's query strategies, every strategy scores plain per-post data
(`PoolItem`: the model's per-word tag probabilities, optionally a post embedding or the
encoder's last hidden states) and `query` returns the next batch as `Pick`s, most useful
first. They never call a model themselves, so they work with any tagger and in the
simulator alike.

The probabilities are the tagger's reported ones (`training.tagger.Prediction.probs`):
for a CRF checkpoint the CRF's marginals, for a plain one the emission softmax, both
after the checkpoint's temperature, so the ranking and the editor's span scores come from
one model.

Conventions: a strategy's `uncertainty(item)` is HIGHER for a more useful post.
`task_score` turns it into Label Studio's task-level prediction score, where LOWER is served
first. Posts without words carry nothing to label: they are never picked (score -inf).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from labeling.active.base import (
    PoolItem,
    QueryStrategy,
    best_path_log_prob,
    entropy,
    item_from_prediction,
    max_probs,
    word_text,
)
from labeling.active.modifiers import ClassBalanced, DiverseBatch
from training.text import OUTSIDE, is_joiner, split_tag, tag_runs

if TYPE_CHECKING:  # training.crf imports torch, which this numpy-only module avoids
    from training.crf import Lattice


class RandomSampling(QueryStrategy):
    """Uniform random choice: the baseline every other strategy is measured against."""

    name = "random"

    def uncertainty(self, item: PoolItem) -> float:
        return 0.0

    def scores(self, pool, rng):
        return np.array([rng.random() if it.cost else -np.inf for it in pool])

    def confidence(self, u: float) -> float:
        return float(np.random.default_rng().random())


class LeastConfidence(QueryStrategy):
    """Least confidence of the best tag sequence, 1 - P(y*) (Culotta & McCallum, 2005; as
    compared in Shen et al., 2017, "Deep Active Learning for Named Entity Recognition").
    With per-word softmax outputs P(y*) is the product of per-word maxima; with a CRF it
    is the decoded path's probability under the CRF. It favours long posts."""

    name = "least_confidence"

    def uncertainty(self, item):
        return float(1.0 - np.exp(best_path_log_prob(item)))

    def confidence(self, u):
        return 1.0 - u


class MNLP(QueryStrategy):
    """Maximum normalised log-probability (Shen et al., 2017): -(1/n) log P(y*), the
    length-normalised least confidence, so long posts are not favoured for their length."""

    name = "mnlp"

    def uncertainty(self, item):
        return float(-best_path_log_prob(item) / max(item.cost, 1))


class TokenEntropy(QueryStrategy):
    """Per-word Shannon entropy of the tag distribution, averaged ("mean") or the most
    uncertain word ("max") (Settles & Craven, 2008, "An Analysis of Active Learning
    Strategies for Sequence Labeling Tasks")."""

    def __init__(self, aggregate: str = "mean"):
        if aggregate not in ("mean", "max"):
            raise ValueError(f"aggregate must be 'mean' or 'max', got {aggregate!r}")
        self.aggregate = aggregate
        self.name = f"entropy_{aggregate}"

    def uncertainty(self, item):
        h = entropy(item.probs)
        return float(h.mean() if self.aggregate == "mean" else h.max())


class Margin(QueryStrategy):
    """Margin sampling (Scheffer et al., 2001): 1 - (best - second best) per word, averaged
    over the words of the post."""

    name = "margin"

    def uncertainty(self, item):
        if item.probs.shape[1] < 2:
            return 0.0
        top2 = np.sort(item.probs, axis=1)[:, -2:]
        return float((1.0 - (top2[:, 1] - top2[:, 0])).mean())

    def confidence(self, u):
        return 1.0 - u


@dataclass(slots=True)
class SpanDoubt:
    first: int
    last: int  # inclusive word index
    label: str
    doubt: float  # 1 - P(the span's tags)
    predicted: bool  # False: a near miss (predicted O, but likely an entity)


def candidate_spans(item: PoolItem, near_miss: float = 0.2) -> list[SpanDoubt]:
    """Predicted spans (argmax tags) and near misses (runs of words predicted O whose entity
    probability 1 - P(O) is at least `near_miss`), each with the doubt of its word tags."""
    if item.cost == 0:
        return []
    tags = list(item.tags)
    best = item.probs.argmax(axis=1)
    p_best = max_probs(item)
    outside = tags.index(OUTSIDE) if OUTSIDE in tags else None
    p_entity = 1.0 - item.probs[:, outside] if outside is not None else np.ones(item.cost)
    # near misses decode as runs of their own pseudo-label, apart from predicted spans
    near = "\0near-miss"
    run_tags = [
        f"I-{near}" if split_tag(tags[b])[0] == OUTSIDE and p_entity[i] >= near_miss else tags[b]
        for i, b in enumerate(best)
    ]
    # a span never starts or ends on a lone joiner ("real-", "-time", "Python."), as decoded
    # spans do not (training.text.tags_to_spans); needs the item's text and words
    readable = bool(item.text) and len(item.words) == item.cost
    spans: list[SpanDoubt] = []
    for first, last, label in tag_runs(run_tags):
        if readable:
            while first <= last and is_joiner(item.text, item.words[first]):
                first += 1
            while last >= first and is_joiner(item.text, item.words[last]):
                last -= 1
            if first > last:
                continue
        # a near miss's words are argmax O, so this is 1 - P(all O) for it
        p_span = float(np.exp(np.log(p_best[first : last + 1]).sum()))
        predicted = label != near
        spans.append(SpanDoubt(first, last, label if predicted else "?", 1.0 - p_span, predicted))
    return spans


class SpanUncertainty(QueryStrategy):
    """Span-level uncertainty: the doubt 1 - P(span tags) of the most uncertain predicted
    span or near-miss span, so one doubtful skill in a long confident post is not averaged
    away (in the spirit of entity-level AL, e.g. Radmard et al., 2021, "Subsequence Based
    Deep Active Learning for NER")."""

    name = "span"

    def __init__(self, near_miss: float = 0.2):
        self.near_miss = near_miss

    def uncertainty(self, item):
        spans = candidate_spans(item, self.near_miss)
        return max((s.doubt for s in spans), default=0.0)

    def confidence(self, u):
        return 1.0 - u

    def explain(self, item, score):
        spans = sorted(candidate_spans(item, self.near_miss), key=lambda s: -s.doubt)[:3]
        out = [f"{self.name}={score:.4f}"]
        for s in spans:
            kind = s.label if s.predicted else "near miss"
            out.append(f"{kind} {word_text(item, s.first, s.last)!r} doubt {s.doubt:.2f}")
        return out


class BALD(QueryStrategy):
    """BALD (Houlsby et al., 2011) with Monte Carlo dropout on the classification head only
    (Shelmanov et al., 2021, "Active Learning for Sequence Tagging with Deep Pre-trained
    Models and Bayesian Uncertainty Estimates"): the encoder runs once, dropout masks on its
    last hidden states feed the linear head `samples` times; the mutual information between
    tags and head weights is averaged over the words.

    With a `lattice` (the tagger's, `Tagger.lattice()`), each sample's tag probabilities
    are that lattice's marginals (a CRF's, after the temperature), the same probabilities
    the tagger reports; without one, the sample's softmax."""

    name = "bald"

    def __init__(
        self,
        weight: np.ndarray,
        bias: np.ndarray,
        dropout: float = 0.1,
        samples: int = 10,
        lattice: Lattice | None = None,
    ):
        if not 0.0 < dropout < 1.0:
            raise ValueError(f"dropout must be in (0, 1), got {dropout}")
        self.weight = np.asarray(weight, dtype=np.float64)  # (n_tags, d)
        self.bias = np.asarray(bias, dtype=np.float64)
        self.dropout, self.samples = dropout, samples
        self.lattice = lattice
        self._rng = np.random.default_rng(0)

    def uncertainty(self, item):
        if item.hidden is None:
            raise ValueError(f"BALD needs the encoder's hidden states of post {item.id!r}")
        h = np.asarray(item.hidden, dtype=np.float64)
        keep = self._rng.random((self.samples, *h.shape)) >= self.dropout
        logits = (h[None] * keep / (1.0 - self.dropout)) @ self.weight.T + self.bias
        logits -= logits.max(axis=-1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=-1, keepdims=True)  # (samples, n_words, n_tags)
        if self.lattice is not None:
            p = np.stack([post.marginals for post in self.lattice.posteriors(list(p))])
        mutual = entropy(p.mean(axis=0)) - entropy(p).mean(axis=0)
        return float(mutual.mean())

    def scores(self, pool, rng):
        self._rng = rng
        return super().scores(pool, rng)


STRATEGIES: dict[str, Callable[[], QueryStrategy]] = {
    "random": RandomSampling,
    "least_confidence": LeastConfidence,
    "mnlp": MNLP,
    "entropy_mean": lambda: TokenEntropy("mean"),
    "entropy_max": lambda: TokenEntropy("max"),
    "margin": Margin,
    "span": SpanUncertainty,
}
NEEDS_HEAD = ("bald",)


def strategy_names() -> list[str]:
    return [*STRATEGIES, *NEEDS_HEAD]


MODIFIERS = ("diverse", "balanced")


@dataclass(frozen=True)
class StrategyName:
    """A strategy name read once: `base` (e.g. "mnlp") and an optional `modifier`
    ("diverse" or "balanced"), from "mnlp+diverse"."""

    base: str
    modifier: str = ""

    @classmethod
    def parse(cls, name: str) -> StrategyName:
        """ValueError for a name `get_strategy` cannot build, before any work is done."""
        base, _, modifier = name.partition("+")
        if base not in strategy_names():
            raise ValueError(
                f"unknown strategy {name!r}; choose from {', '.join(strategy_names())}"
            )
        if modifier and modifier not in MODIFIERS:
            raise ValueError(
                f"unknown strategy modifier {modifier!r} in {name!r}: '+diverse' or '+balanced'"
            )
        return cls(base, modifier)

    @property
    def needs_head(self) -> bool:
        """Whether the strategy reads the model's classification head (BALD)."""
        return self.base in NEEDS_HEAD


def get_strategy(name: str, **options) -> QueryStrategy:
    """A strategy by name; `name+diverse` wraps it with `DiverseBatch`, `name+balanced`
    with `ClassBalanced` (which needs `label_counts`). BALD needs `weight` and `bias` (the
    head) in `options`, and optionally `dropout`."""
    parsed = StrategyName.parse(name)
    label_counts = options.pop("label_counts", None)
    if parsed.needs_head:
        if "weight" not in options or "bias" not in options:
            raise ValueError("strategy 'bald' needs the classification head (weight, bias)")
        strategy: QueryStrategy = BALD(**options)
    else:
        strategy = STRATEGIES[parsed.base]()
    if parsed.modifier == "diverse":
        return DiverseBatch(strategy)
    if parsed.modifier == "balanced":
        if label_counts is None:
            raise ValueError(f"{name!r} needs the labelled spans' counts per label")
        return ClassBalanced(strategy, label_counts)
    return strategy


def build_strategy(name: str, head: Callable[[], dict], labelled: Iterable[str]) -> QueryStrategy:
    """The named strategy with what it needs: BALD the model's classification head (`head`
    is called for BALD only), +balanced the counts per label of `labelled` (the labels of
    the labelled spans; a label not seen yet counts as rarest)."""
    parsed = StrategyName.parse(name)
    options = dict(head()) if parsed.needs_head else {}
    if parsed.modifier == "balanced":
        options["label_counts"] = Counter(labelled)
    return get_strategy(name, **options)


def task_score(prediction, strategy: str | QueryStrategy = "mnlp") -> float:
    """Label Studio's task-level prediction score for a prediction, in [0, 1]: LOWER means
    more useful, and Label Studio's uncertainty sampling serves the lowest first. A post
    without words scores 1.0 (served last)."""
    s = get_strategy(strategy) if isinstance(strategy, str) else strategy
    item = prediction if isinstance(prediction, PoolItem) else item_from_prediction(prediction)
    if item.cost == 0:
        return 1.0
    return float(min(max(s.confidence(s.uncertainty(item)), 0.0), 1.0))
