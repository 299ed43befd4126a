"""Replaying labelling on gold data: does a query strategy beat labelling at random?

Each seed draws a small random seed set; every round the tagger is trained on what is
labelled so far, scored on the held-out set, and the strategy picks the next `step` units
(sentences or posts) from the rest of the pool. Random always runs alongside, from the same
seed set.

Two learners:
- fast: every pool and held-out unit is encoded once by the frozen backbone
  (`labeling.active.features`); each round trains only a small MLP head on those word vectors
  (seconds per round on CPU), decoded with IOB2-constrained Viterbi.
- full: each round fine-tunes the whole tagger (`training.finetune.train`) from the
  backbone and predicts the pool with `training.tagger.Tagger`: the real thing, minutes per
  round on CPU.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labeling.active.strategies import (
    PoolItem,
    StrategyName,
    build_strategy,
    item_from_prediction,
)
from training.decoding import decode
from training.text import Document, Span, spans_to_tags, tag_names, tag_runs, words

log = logging.getLogger(__name__)

UNITS = ("sentence", "post")
MODES = ("fast", "full")


@dataclass
class SimConfig:
    strategies: list[str] = field(default_factory=lambda: ["mnlp"])
    seeds: int = 3
    init: int = 100
    step: int = 100
    # label by cost instead: each round takes the best units that fit this many words
    # (`step` is then ignored), so every strategy buys the same tokens per round
    step_tokens: int | None = None
    rounds: int = 10
    unit: str = "sentence"
    mode: str = "fast"
    base: str | None = None  # encoder / tagger to start from (None: the backbone)
    head_hidden: int = 128
    head_epochs: int = 10  # passes over the labelled words, within [min_steps, max_steps]
    head_min_steps: int = 250
    head_max_steps: int = 4000
    # encoder layers whose word vectors are concatenated (0 = embeddings, -1 = last): a
    # middle layer keeps the lexical detail a sentence-embedding model's last layer blurs
    feature_layers: list[int] = field(default_factory=lambda: [3, -1])
    head_dropout: float = 0.2
    full_epochs: int = 4
    full_batch_size: int | None = None  # None: TrainConfig's; sentences are short windows
    pool_limit: int | None = None  # use only the first N pool units (quick comparisons)
    eval_limit: int | None = None
    cache_dir: str | None = None
    # extra pool sizes (units) where random is also measured, beyond the rounds: so the
    # units random needs to reach 95% of full-data F1 can be found without running every
    # strategy that far
    random_extra: list[int] = field(default_factory=list)
    full_reference: bool = True  # train on the whole pool for the full-data F1

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}, got {self.unit!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.seeds < 1 or self.init < 1 or self.step < 1 or self.rounds < 0:
            raise ValueError("seeds, init and step must be at least 1, rounds at least 0")
        if self.step_tokens is not None and self.step_tokens < 1:
            raise ValueError(f"step_tokens must be at least 1, got {self.step_tokens}")
        names = ["random", *[s for s in self.strategies if s != "random"]]
        for name in names:
            # unknown names fail here, before any work
            if StrategyName.parse(name).needs_head and self.mode != "fast":
                raise ValueError("BALD needs the fast mode's head (MC dropout on the head)")
        self.strategies = names


def sentence_units(docs: Sequence[Document]) -> list[Document]:
    """Each line of each document as its own unit (SkillSpan's sentences), spans kept."""
    units = []
    for doc in docs:
        offset = 0
        for n, line in enumerate(doc.text.split("\n")):
            end = offset + len(line)
            spans = [
                Span(s.start - offset, s.end - offset, s.label, s.text)
                for s in doc.spans
                if offset <= s.start and s.end <= end
            ]
            if words(line):
                units.append(Document(line, spans, id=f"{doc.id}#{n}"))
            offset = end + 1
    return units


def load_units(path: str | Path, unit: str, limit: int | None = None) -> list[Document]:
    from training.datasets import read_documents

    docs = read_documents(path)
    units = sentence_units(docs) if unit == "sentence" else [d for d in docs if words(d.text)]
    if not units:
        raise ValueError(f"{path}: no {unit}s with words")
    return units[:limit] if limit else units


class FastLearner:
    """A small MLP head on frozen per-word encoder vectors (see the module docstring)."""

    def __init__(
        self, pool: Sequence[Document], held_out: Sequence[Document], labels, config: SimConfig
    ):
        from labeling.active.features import encode_words

        self.tags = tag_names(labels)
        self.config = config
        texts = [d.text for d in [*pool, *held_out]]
        vectors = encode_words(
            texts, config.base, cache_dir=config.cache_dir, layers=config.feature_layers
        )
        self.pool_x, self.eval_x = vectors[: len(pool)], vectors[len(pool) :]
        index = {t: i for i, t in enumerate(self.tags)}
        self.pool_y = [np.array([index[t] for t in _gold_tags(d)]) for d in pool]
        self.eval_gold = [_gold_tags(d) for d in held_out]
        self.embeddings = np.stack([x.mean(axis=0) for x in self.pool_x])
        self.head: Any = None  # torch.nn.Sequential once fitted (torch imported lazily)

    def fit(self, indices: Sequence[int], seed: int) -> None:
        with _one_thread():
            self._fit(indices, seed)

    def _fit(self, indices: Sequence[int], seed: int) -> None:
        import torch

        torch.manual_seed(seed)
        x = torch.from_numpy(np.concatenate([self.pool_x[i] for i in indices]))
        y = torch.from_numpy(np.concatenate([self.pool_y[i] for i in indices]))
        c = self.config
        self.head = torch.nn.Sequential(
            torch.nn.Linear(x.shape[1], c.head_hidden),
            torch.nn.ReLU(),
            torch.nn.Dropout(c.head_dropout),
            torch.nn.Linear(c.head_hidden, len(self.tags)),
        )
        optimizer = torch.optim.AdamW(self.head.parameters(), lr=1e-3, weight_decay=1e-4)
        generator = torch.Generator().manual_seed(seed)
        batch = 256
        steps = c.head_epochs * int(np.ceil(len(y) / batch))
        steps = min(max(steps, c.head_min_steps), c.head_max_steps)
        self.head.train()
        for _ in range(steps):
            rows = torch.randint(len(y), (batch,), generator=generator)
            loss = torch.nn.functional.cross_entropy(self.head(x[rows]), y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        self.head.eval()

    def _forward(self, vectors: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per unit: tag probabilities and the head's last hidden layer (BALD's input)."""
        import torch

        with torch.inference_mode(), _one_thread():
            x = torch.from_numpy(np.concatenate(vectors))
            hidden = self.head[1](self.head[0](x))
            probs = torch.softmax(self.head[3](hidden), dim=-1).double().numpy()
        cuts = np.cumsum([len(v) for v in vectors])[:-1]
        return np.split(probs, cuts), np.split(hidden.numpy(), cuts)

    def pool_items(self, indices: Sequence[int], with_hidden: bool = False) -> list[PoolItem]:
        probs, hidden = self._forward([self.pool_x[i] for i in indices])
        return [
            PoolItem(
                str(i),
                p,
                self.tags,
                embedding=self.embeddings[i],
                hidden=h if with_hidden else None,
            )
            for i, p, h in zip(indices, probs, hidden, strict=True)
        ]

    def head_weights(self) -> dict:
        last = self.head[3]
        return {
            "weight": last.weight.detach().numpy(),
            "bias": last.bias.detach().numpy(),
            "dropout": self.config.head_dropout,
        }

    def evaluate(self) -> float:
        probs, _ = self._forward(self.eval_x)
        predicted = [decode(p, self.tags) for p in probs]
        return _entity_f1(self.eval_gold, predicted)


class FullLearner:
    """Fine-tunes the whole tagger every round (see the module docstring)."""

    def __init__(self, pool, held_out, labels, config: SimConfig):
        self.pool, self.held_out, self.labels, self.config = pool, held_out, list(labels), config
        self.work = tempfile.TemporaryDirectory(prefix="skillloop-sim-")
        self.tagger = None
        self.rounds = 0

    def fit(self, indices, seed):
        from training.finetune import train
        from training.tagger import Tagger
        from training.train_config import TrainConfig

        self.rounds += 1
        out = Path(self.work.name) / f"round-{self.rounds}"
        batch = {"batch_size": self.config.full_batch_size} if self.config.full_batch_size else {}
        config = TrainConfig(epochs=self.config.full_epochs, seed=seed, **batch)
        result = train(
            self.config.base,
            [self.pool[i] for i in indices],
            self.labels,
            out,
            config=config,
            progress=False,
        )
        self.tagger = Tagger.load(result.path, self.labels)

    def pool_items(self, indices, with_hidden=False):
        predictions = self.tagger.predict([self.pool[i].text for i in indices])
        items = [item_from_prediction(p, str(i)) for i, p in zip(indices, predictions, strict=True)]
        for item in items:  # a post embedding for diversity: where its doubt lies
            item.embedding = item.probs.mean(axis=0)
        return items

    def evaluate(self):
        from training.evaluate import evaluate

        return evaluate(self.tagger, self.held_out).f1


@contextmanager
def _one_thread():
    """Tiny head steps are overhead-bound: on a busy machine, one torch thread is several
    times faster than two (measured: 8x on the test data)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _gold_tags(doc: Document) -> list[str]:
    return spans_to_tags(doc.spans, words(doc.text))


def _entity_f1(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> float:
    """Strict IOB2 entity F1 (seqeval's strict mode; equal here since both sides are
    valid IOB2: gold from spans, predictions Viterbi-constrained), computed directly
    because it runs every round."""
    correct = n_gold = n_pred = 0
    for g, p in zip(gold, predicted, strict=True):
        gs, ps = _entities(g), _entities(p)
        correct += len(gs & ps)
        n_gold += len(gs)
        n_pred += len(ps)
    return 2 * correct / (n_gold + n_pred) if n_gold + n_pred else 0.0


def _entities(tags: Sequence[str]) -> set[tuple[int, int, str]]:
    """`(first word, end word, label)` of each entity, by the one decoder."""
    return {(first, last + 1, label) for first, last, label in tag_runs(tags)}


def simulate(pool_path, eval_path, config: SimConfig, progress=print) -> dict:
    """Run every strategy (and random) for every seed; returns the JSON-able result."""
    from training.datasets import labels_of

    started = time.perf_counter()
    pool = load_units(pool_path, config.unit, config.pool_limit)
    held_out = load_units(eval_path, config.unit, config.eval_limit)
    labels = labels_of([*pool, *held_out])
    if not labels:
        raise ValueError(f"{pool_path}: the gold data has no spans")
    if config.init >= len(pool):
        raise ValueError(f"init ({config.init}) must be smaller than the pool ({len(pool)})")
    learner_type = FastLearner if config.mode == "fast" else FullLearner
    learner = learner_type(pool, held_out, labels, config)
    cost = np.array([len(words(d.text)) for d in pool])
    span_labels = [[s.label for s in d.spans] for d in pool]
    prepared = time.perf_counter()

    curves: dict[str, list[dict]] = {name: [] for name in config.strategies}
    full_f1 = []
    for seed in range(config.seeds):
        if config.full_reference:
            learner.fit(range(len(pool)), seed)
            full_f1.append(learner.evaluate())
            progress(f"seed {seed}: full-data F1 {full_f1[-1]:.4f}")
        start = np.random.default_rng(seed).choice(len(pool), config.init, replace=False)
        for name in config.strategies:
            curve = _run_curve(learner, name, list(start), cost, seed, config, span_labels)
            if name == "random" and config.random_extra:
                _extend_random(learner, curve, cost, seed, config.random_extra)
            curve.pop("labelled", None)
            curves[name].append(curve)
            progress(f"seed {seed} {name}: F1 " + " ".join(f"{f:.3f}" for f in curve["f1"]))
    return {
        "config": asdict(config),
        "data": {
            "pool": str(pool_path),
            "eval": str(eval_path),
            "labels": labels,
            "pool_items": len(pool),
            "pool_tokens": int(cost.sum()),
            "eval_items": len(held_out),
        },
        "full_f1": full_f1,
        "curves": curves,
        "seconds": {"prepare": prepared - started, "total": time.perf_counter() - started},
    }


def _run_curve(
    learner, name: str, labelled: list[int], cost, seed: int, config, span_labels
) -> dict:
    curve: dict[str, Any] = {
        "seed": seed,
        "items": [],
        "tokens": [],
        "f1": [],
        "batch_mean_tokens": [],
        "seconds": [],
    }
    taken = np.zeros(len(cost), dtype=bool)
    taken[labelled] = True
    for round_ in range(config.rounds + 1):
        t0 = time.perf_counter()
        learner.fit(labelled, seed)
        curve["items"].append(len(labelled))
        curve["tokens"].append(int(cost[labelled].sum()))
        curve["f1"].append(learner.evaluate())
        rest = np.flatnonzero(~taken)
        if round_ == config.rounds or rest.size == 0:
            curve["seconds"].append(time.perf_counter() - t0)
            break
        labels = [label for i in labelled for label in span_labels[i]]
        strategy = build_strategy(name, lambda: learner.head_weights(), labels)
        items = learner.pool_items(rest, with_hidden=name.startswith("bald"))
        rng = np.random.default_rng([seed, round_])
        if config.step_tokens:
            picks = strategy.query(items, len(items), budget_tokens=config.step_tokens, rng=rng)
        else:
            picks = strategy.query(items, config.step, rng=rng)
        chosen = [int(rest[p.index]) for p in picks]
        curve["batch_mean_tokens"].append(float(cost[chosen].mean()) if chosen else 0.0)
        labelled += chosen
        taken[chosen] = True
        curve["seconds"].append(time.perf_counter() - t0)
    curve["labelled"] = labelled
    return curve


def _extend_random(learner, curve: dict, cost, seed: int, sizes: Sequence[int]) -> None:
    """Random's curve continued to larger labelled sets, for its 95%-of-full-data point."""
    labelled = set(curve.pop("labelled"))
    permuted = np.random.default_rng([seed, 99]).permutation(len(cost))
    order = [int(i) for i in permuted if i not in labelled]
    current = sorted(labelled)
    for size in sorted(sizes):
        extra = size - len(current)
        if extra <= 0 or not order:
            continue
        current += order[:extra]
        order = order[extra:]
        learner.fit(current, seed)
        curve["items"].append(len(current))
        curve["tokens"].append(int(cost[current].sum()))
        curve["f1"].append(learner.evaluate())
