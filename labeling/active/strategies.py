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

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from training.text import OUTSIDE, is_joiner, split_tag, tag_runs

if TYPE_CHECKING:  # training.crf imports torch, which this numpy-only module avoids
    from training.crf import Lattice

EPS = 1e-12


@dataclass(slots=True)
class PoolItem:
    """One unlabelled post (or sentence) as the strategies see it."""

    id: str
    probs: np.ndarray  # (n_words, n_tags), rows sum to 1
    tags: Sequence[str]  # column names of probs: tag_names(labels)
    text: str = ""
    words: Sequence[tuple[int, int]] = ()  # character offsets, for readable reasons
    embedding: np.ndarray | None = None  # (d,) post vector, for diversity
    hidden: np.ndarray | None = None  # (n_words, d) encoder states, for BALD
    # log P(best tag sequence) where words are not independent (a CRF); None: the sum of
    # the words' best log-probabilities, which is that for independent words
    path_log_prob: float | None = None

    @property
    def cost(self) -> int:
        """What labelling it costs: its number of words."""
        return int(self.probs.shape[0])


@dataclass(slots=True)
class Pick:
    """A selected post: `score` is the strategy's uncertainty (higher = more useful)."""

    id: str
    index: int  # position in the pool given to `query`
    score: float
    cost: int
    reasons: list[str] = field(default_factory=list)


def item_from_prediction(prediction, id: str = "") -> PoolItem:
    """A `PoolItem` from a `training.tagger.Prediction` (duck-typed: probs, tags, words)."""
    probs = np.asarray(prediction.probs, dtype=np.float64)
    if probs.ndim != 2:
        probs = probs.reshape(0, len(prediction.tags))
    return PoolItem(
        id=str(id),
        probs=probs,
        tags=list(prediction.tags),
        text=getattr(prediction, "text", ""),
        words=list(getattr(prediction, "words", [])),
        hidden=getattr(prediction, "hidden", None),
        path_log_prob=getattr(prediction, "path_log_prob", None),
    )


def _max_probs(item: PoolItem) -> np.ndarray:
    return np.clip(item.probs.max(axis=1), EPS, 1.0)


def _best_path_log_prob(item: PoolItem) -> float:
    """log P(y*): the CRF's own value where the tagger gave it, else (independent words)
    the sum of each word's best log-probability."""
    if item.path_log_prob is not None:
        return float(item.path_log_prob)
    return float(np.log(_max_probs(item)).sum())


def _entropy(probs: np.ndarray) -> np.ndarray:
    p = np.clip(probs, EPS, 1.0)
    return -(p * np.log(p)).sum(axis=-1)


def _word_text(item: PoolItem, first: int, last: int) -> str:
    if item.text and len(item.words) > last:
        return item.text[item.words[first][0] : item.words[last][1]]
    return f"words {first}-{last}"


class QueryStrategy:
    """Scores posts one by one; `query` takes the highest scores within count and budget."""

    name = "base"

    def uncertainty(self, item: PoolItem) -> float:
        raise NotImplementedError

    def confidence(self, u: float) -> float:
        """Map an uncertainty onto (0, 1], higher = surer; used as Label Studio's score."""
        return math.exp(-u)

    def explain(self, item: PoolItem, score: float) -> list[str]:
        return [f"{self.name}={score:.4f}"]

    def scores(self, pool: Sequence[PoolItem], rng: np.random.Generator) -> np.ndarray:
        return np.array(
            [self.uncertainty(it) if it.cost else -np.inf for it in pool], dtype=np.float64
        )

    def query(
        self,
        pool: Sequence[PoolItem],
        n: int,
        budget_tokens: int | None = None,
        rng: np.random.Generator | int | None = None,
    ) -> list[Pick]:
        """The next batch: at most `n` posts and, with a budget, at most `budget_tokens`
        words in all. Posts too long for what is left of the budget are skipped for
        shorter ones. An empty pool gives an empty batch; a pool smaller than `n` gives
        all its posts that have words, ranked."""
        _check_request(n, budget_tokens)
        if not pool or n == 0:
            return []
        rng = np.random.default_rng(rng)
        scores = self.scores(pool, rng)
        order = self.rank(pool, scores, n, budget_tokens, rng)
        return self._fill(pool, scores, order, n, budget_tokens)

    def rank(self, pool, scores, n, budget_tokens, rng) -> list[int]:
        """Candidate order; ties keep pool order."""
        return [int(i) for i in np.argsort(-scores, kind="stable")]

    def _fill(self, pool, scores, order, n, budget_tokens) -> list[Pick]:
        picks: list[Pick] = []
        left = budget_tokens
        for i in order:
            item = pool[i]
            if not np.isfinite(scores[i]) or item.cost == 0:
                continue
            if left is not None:
                if item.cost > left:
                    continue
                left -= item.cost
            picks.append(
                Pick(item.id, i, float(scores[i]), item.cost, self.explain(item, float(scores[i])))
            )
            if len(picks) >= n or (left is not None and left <= 0):
                break
        return picks


def _check_request(n: int, budget_tokens: int | None) -> None:
    if n < 0:
        raise ValueError(f"batch size must be 0 or more, got {n}")
    if budget_tokens is not None and budget_tokens < 0:
        raise ValueError(f"token budget must be 0 or more, got {budget_tokens}")


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
        return float(1.0 - np.exp(_best_path_log_prob(item)))

    def confidence(self, u):
        return 1.0 - u


class MNLP(QueryStrategy):
    """Maximum normalised log-probability (Shen et al., 2017): -(1/n) log P(y*), the
    length-normalised least confidence, so long posts are not favoured for their length."""

    name = "mnlp"

    def uncertainty(self, item):
        return float(-_best_path_log_prob(item) / max(item.cost, 1))


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
        h = _entropy(item.probs)
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
    p_best = _max_probs(item)
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
            out.append(f"{kind} {_word_text(item, s.first, s.last)!r} doubt {s.doubt:.2f}")
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
        mutual = _entropy(p.mean(axis=0)) - _entropy(p).mean(axis=0)
        return float(mutual.mean())

    def scores(self, pool, rng):
        self._rng = rng
        return super().scores(pool, rng)


class DiverseBatch(QueryStrategy):
    """Diversity in a batch: cluster the top `factor * n` candidates of `base` with k-means
    on their post embeddings and take the most uncertain post of each cluster, so a batch
    is not near-duplicates (cluster-margin style, cf. Zhdanov, 2019, "Diverse mini-batch
    Active Learning"; BADGE, Ash et al., 2020, does the same on gradient embeddings)."""

    def __init__(self, base: QueryStrategy, factor: int = 5):
        self.base, self.factor = base, max(int(factor), 1)
        self.name = f"{base.name}+diverse"

    def uncertainty(self, item):
        return self.base.uncertainty(item)

    def confidence(self, u):
        return self.base.confidence(u)

    def explain(self, item, score):
        return self.base.explain(item, score)

    def scores(self, pool, rng):
        return self.base.scores(pool, rng)

    def rank(self, pool, scores, n, budget_tokens, rng) -> list[int]:
        order = [i for i in np.argsort(-scores, kind="stable") if np.isfinite(scores[i])]
        top = order[: n * self.factor]
        if len(top) <= n:
            return top
        missing = [pool[i].id for i in top if pool[i].embedding is None]
        if missing:
            raise ValueError(f"diverse selection needs post embeddings; missing for {missing[0]!r}")
        from sklearn.cluster import KMeans

        x = np.stack([np.asarray(pool[i].embedding, dtype=np.float64) for i in top])
        x /= np.linalg.norm(x, axis=1, keepdims=True) + EPS
        seed = int(rng.integers(2**31))
        clusters = KMeans(n_clusters=n, n_init=3, random_state=seed).fit_predict(x)
        chosen: dict[int, int] = {}
        for i, c in zip(top, clusters, strict=True):
            chosen.setdefault(int(c), i)  # `top` is ranked: the first seen is the best
        firsts = sorted(chosen.values(), key=lambda i: -scores[i])
        # the rest stay available as fallbacks when the budget skips a cluster's best
        chosen_set = set(firsts)
        return firsts + [i for i in order if i not in chosen_set]


class ClassBalanced(QueryStrategy):
    """Class balancing toward rare labels: `base`'s score times 1 + `strength` * the
    expected number of rare-label spans in the post, where a label's rarity is
    1 / (1 + its count among the labelled spans), scaled so the rarest is 1 (cf. Kim et
    al., 2006, MMR-based AL for NER)."""

    def __init__(self, base: QueryStrategy, label_counts: dict[str, int], strength: float = 1.0):
        self.base, self.strength = base, strength
        self.name = f"{base.name}+balanced"
        raw = {label: 1.0 / (1.0 + count) for label, count in label_counts.items()}
        top = max(raw.values(), default=1.0)
        self.rarity = {label: r / top for label, r in raw.items()}

    def weight(self, item: PoolItem) -> float:
        """1 + `strength` * the expected number of rare-label spans (capped at 3)."""
        expected = 0.0
        for column, tag in enumerate(item.tags):
            prefix, label = split_tag(tag)
            if prefix == "B" and label is not None:
                expected += self.rarity.get(label, 1.0) * float(item.probs[:, column].sum())
        return 1.0 + self.strength * min(expected, 3.0)

    def uncertainty(self, item):
        return self.base.uncertainty(item) * self.weight(item)

    def scores(self, pool, rng):
        # the base's own scores (random's draws, BALD's samples), not its uncertainty:
        # random's uncertainty is 0 for every post, which left the pool in its own order
        base = self.base.scores(pool, rng)
        return np.array(
            [s * self.weight(it) if it.cost else s for s, it in zip(base, pool, strict=True)]
        )

    def confidence(self, u):
        return self.base.confidence(u)


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


def check_strategy_name(name: str) -> None:
    """Raise ValueError for a name `get_strategy` cannot build, before any work is done."""
    base_name, _, wrapper = name.partition("+")
    if base_name not in strategy_names():
        raise ValueError(f"unknown strategy {name!r}; choose from {', '.join(strategy_names())}")
    if wrapper and wrapper not in MODIFIERS:
        raise ValueError(
            f"unknown strategy modifier {wrapper!r} in {name!r}: '+diverse' or '+balanced'"
        )


def get_strategy(name: str, **options) -> QueryStrategy:
    """A strategy by name; `name+diverse` wraps it with `DiverseBatch`, `name+balanced`
    with `ClassBalanced` (which needs `label_counts`). BALD needs `weight` and `bias` (the
    head) in `options`, and optionally `dropout`."""
    check_strategy_name(name)
    base_name, _, wrapper = name.partition("+")
    label_counts = options.pop("label_counts", None)
    if base_name == "bald":
        if "weight" not in options or "bias" not in options:
            raise ValueError("strategy 'bald' needs the classification head (weight, bias)")
        strategy: QueryStrategy = BALD(**options)
    else:
        strategy = STRATEGIES[base_name]()
    if wrapper == "diverse":
        return DiverseBatch(strategy)
    if wrapper == "balanced":
        if label_counts is None:
            raise ValueError(f"{name!r} needs the labelled spans' counts per label")
        return ClassBalanced(strategy, label_counts)
    return strategy


def build_strategy(name: str, head: Callable[[], dict], labelled: Iterable[str]) -> QueryStrategy:
    """The named strategy with what it needs: BALD the model's classification head (`head`
    is called for BALD only), +balanced the counts per label of `labelled` (the labels of
    the labelled spans; a label not seen yet counts as rarest)."""
    base_name, _, wrapper = name.partition("+")
    options = dict(head()) if base_name == "bald" else {}
    if wrapper == "balanced":
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
