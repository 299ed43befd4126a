"""A cross-encoder re-ranker (training/link_cross.py) inside the cross-set protocol of
benchmarks/linking_crossval_trained.py: trained on ESCO alone (its alternative labels as
queries, their entry's preferred label the positive, the label cache's nearest wrong
entries' preferred labels the hard negatives; no validation pair), then its score added
with a weight c to the first stage's top 20, c and every other weight chosen on one set
and reported on the other. The score added is the raw logit (t 0, as session 16
measured) or the served one (t 1), the logit placed linearly in 0-1 by the range the model
gives its own training pairs (training.link_cross.squash).

Usage:
    nice -n 10 python -m benchmarks.linking_crossval_cross [--cross state/cross-esco]
        [--minutes 10] [--groups 4000] [--steps N] [--seed 13] [--c 0 0.01 ...]
        [--json out.json]

A folder at --cross that already holds a trained cross-encoder is read, not trained again.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import time
from pathlib import Path

import numpy as np

from benchmarks import linking_crossval_trained as trained
from benchmarks.common import ESCO_SETS as SETS
from benchmarks.common import (
    add_linking_folder,
    finish_run,
    named_files,
    plain_esco_linker,
    run_benchmark,
)
from benchmarks.linking_crossval import RERANK
from training.cpu import cpu_info
from training.link_cross import CrossConfig, CrossEncoder, squash, train_cross_encoder
from training.link_head import cross_groups, taxonomy_hard_negatives
from training.link_rerank import LexicalIndex
from training.linker import Linker
from training.linker_eval import read_linking_csv

CROSS = (0.0, 0.01, 0.03, 0.1, 0.2, 0.3, 0.5, 1.0)  # the cross-encoder's weight c
# t: 0 adds the raw, unbounded logit (session 16's figures); 1 the served score, the logit
# placed linearly in 0-1 by the range the model gives its own training pairs (squash)
SCALINGS = (0.0, 1.0)
# the first stages whose top 20 are cross-encoded (each pool's entries cost a forward pass)
POOLS = {"w": (0.0, 0.1, 0.2, 0.3, 0.4), "a": (0.0, 1.0), "p": (0.3, 0.5)}
AXES = trained.GRID | POOLS | {"h": (0.0,), "c": CROSS, "t": SCALINGS}
NO_ADAPTER = ("c", "w", "p", "g", "l", "x")
SCALED = {k: AXES[k] for k in NO_ADAPTER} | {"t": (1.0,)}
DEFAULT_RANKING = {"w": (0.3,), "p": (0.5,), "g": (0.2,), "l": (0.1,), "c": CROSS, "t": (1.0,)}
FAMILIES: dict = {
    "adapter + w, p, g, l, x (no cross)": ("a", "w", "p", "g", "l", "x"),
    "cross-encoder only (c; p sets its pool)": ("c", "p"),
    "cross + p + x": ("c", "p", "x"),
    "cross + adapter + w, p, g, l, x": ("c", "a", "w", "p", "g", "l", "x"),
    "cross + w, p, g, l, x (no adapter)": NO_ADAPTER,
    "the same, scaled 0-1 as served (t1)": SCALED,
    "the same, scaled, exact rule on (x1)": SCALED | {"x": (1.0,)},
    "the same, scaled, exact rule off (x0)": SCALED | {"x": (0.0,)},
    # the default ranking as it is (training/linker_settings.py), c chosen
    "default ranking + c, scaled (x1)": DEFAULT_RANKING | {"x": (1.0,)},
    "default ranking + c, scaled, exact rule off (x0)": DEFAULT_RANKING | {"x": (0.0,)},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_linking_folder(parser)
    parser.add_argument("--adapter", type=Path, default=Path("state/adapter-esco-s100.npy"))
    parser.add_argument(
        "--cross",
        type=Path,
        action="append",
        help="a cross-encoder folder (default state/cross-esco); several: every setting is "
        "chosen and reported on their mean (no training chosen)",
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--groups", type=int, default=4000, help="ESCO queries to draw from")
    parser.add_argument("--steps", type=int, default=100_000, help="at most this many steps")
    parser.add_argument("--seed", type=int, default=13, help="the training's seed")
    parser.add_argument(
        "--c", type=float, nargs="+", default=list(CROSS), help="the cross-encoder's weights"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    files = named_files([args.data], SETS)
    info = cpu_info()
    print(info.line(), flush=True)
    start = time.time()
    taxonomy, linker = plain_esco_linker(args.cache)
    sets = {n: read_linking_csv(n, file, taxonomy) for n, file in files.items()}
    adapter = trained.esco_adapter(linker, args.adapter, 100)
    folders = args.cross or [Path("state/cross-esco")]
    models = [
        esco_cross_encoder(linker, f, args.minutes, args.groups, args.steps, args.seed)
        for f in folders
    ]
    lexical = LexicalIndex(linker.index.texts, linker.index.offsets)
    head = np.zeros(len(trained.HEAD_FEATURES), dtype=np.float32)  # h stays 0 here
    features: dict = {}
    for name, gold in sets.items():
        started = time.time()
        first = CrossScores(linker, gold.pairs, lexical, adapter, head, models[0][0])
        each = [first] + [first.with_cross(cross, linker, gold.pairs) for cross, _ in models[1:]]
        features[name] = each[0] if len(each) == 1 else MeanScores(each)
        print(f"{name}: scores in {time.time() - started:.0f} s", flush=True)
    per_model = [[f] if isinstance(f, CrossScores) else f.members for f in features.values()]
    logits = np.concatenate([m.logits[m.logits != 0] for ms in per_model for m in ms])
    spread = {f"p{q}": round(float(np.percentile(logits, q)), 2) for q in (5, 50, 95)}
    print(f"cross-encoder logits over the pools' pairs: {spread}")
    training = [t for _, t in models]
    results: dict = {"cpu": info.as_dict(), "training": training, "logits": spread}
    axes = AXES | {"c": tuple(args.c)}
    families = {  # --c narrows the families that choose c
        title: only | {"c": axes["c"]} if isinstance(only, dict) and len(only["c"]) > 1 else only
        for title, only in FAMILIES.items()
    }
    results["crossval"] = trained.crossval_table(features, families, axes)
    if len(models) > 1:
        print_per_training(results["crossval"], features)
    return finish_run(results, start, args.json)


def print_per_training(table: dict, features: dict) -> None:
    """Each training's own figures for the settings chosen on the mean."""
    print("\neach training's accuracy@1 for the setting chosen on the mean (TECH | HOUSE):")
    for title, row in table.items():
        if title == "best_on_itself":
            continue
        for target, cell in row.items():
            members = features[target].members
            cell["per_training"] = [m.figures(cell["setting"]) for m in members]
        shown = [
            " ".join(f"{acc:.3f}" for acc, _ in row[target]["per_training"])
            for target in ("TECH", "HOUSE")
        ]
        print(f"{title:52s} {shown[0]} | {shown[1]}")


def scale(cross: CrossEncoder) -> tuple[float, float]:
    assert cross.scale is not None  # esco_cross_encoder fits it
    return cross.scale


def esco_cross_encoder(
    linker: Linker, folder: Path, minutes: float, groups: int, steps: int, seed: int
) -> tuple[CrossEncoder, dict]:
    """The cross-encoder at `folder`, or one trained there; its logit range fitted on its
    ESCO groups where the folder lacks it (a folder trained before the range was kept)."""
    negatives = taxonomy_hard_negatives(linker.index, groups, RERANK, seed=29)
    made = cross_groups(negatives, linker.index, linker.taxonomy)
    if (folder / "cross_head.pt").is_file():
        print(f"cross-encoder from {folder}")
        cross = CrossEncoder(folder)
        if cross.scale is None:
            cross.fit_scale(made, seed=seed)
            cross.save(folder)
        print(f"its logit range on its training pairs: {cross.scale}")
        return cross, {"read_from": str(folder), "logit_range": cross.scale}
    cross = CrossEncoder(None)
    config = CrossConfig(steps=steps, max_seconds=minutes * 60, seed=seed)
    result = train_cross_encoder(cross, made, config)
    cross.fit_scale(made, seed=seed)
    cross.save(folder)
    training = {"groups": len(made), "missed_top20": negatives.missed} | {
        k: getattr(result, k) for k in ("steps", "seconds", "first_loss", "last_loss")
    }
    print(f"cross-encoder trained: {json.dumps(training)}", flush=True)
    return cross, training


class CrossScores(trained.Scores):
    """linking_crossval_trained's scores and the cross-encoder's, added with weight c."""

    def __init__(self, linker, pairs, lexical, adapter, head, cross: CrossEncoder):
        super().__init__(linker, pairs, lexical, adapter, head)
        self.logits = cross_scores(cross, linker, pairs, self)
        self.cross = {0.0: self.logits, 1.0: squash(self.logits, scale(cross))}

    def with_cross(self, cross: CrossEncoder, linker: Linker, pairs) -> CrossScores:
        """The same first-stage and re-ranking scores with another cross-encoder's."""
        other = copy.copy(self)
        other.logits = cross_scores(cross, linker, pairs, self)
        other.cross = {0.0: other.logits, 1.0: squash(other.logits, scale(cross))}
        return other

    def rank(self, s: dict, head=None) -> np.ndarray:
        top, first, _, _ = self.pool(s["w"], s["a"], s["p"])
        rows = np.arange(len(top))[:, None]
        score = first + s["g"] * self.context[rows, top] + s["l"] * self.lexical[rows, top]
        cross = self.cross[s["t"]][rows, top]
        score = score + s["x"] * self.exact[rows, top] + s["c"] * cross
        return top[rows, np.argsort(-score, axis=1)[:, : trained.K]]


class MeanScores:
    """Several cross-encoders' scores on one set: a setting's figures are their mean."""

    def __init__(self, members: list[CrossScores]):
        self.members = members

    def figures(self, s: dict) -> tuple[float, float]:
        each = np.array([m.figures(s) for m in self.members])
        return float(each[:, 0].mean()), float(each[:, 1].mean())


def cross_scores(cross: CrossEncoder, linker: Linker, pairs, scores: trained.Scores) -> np.ndarray:
    """(pairs x entries) cross-encoder scores, filled for every entry of every pool."""
    needed: set[tuple[int, int]] = set()
    for w, a, p in itertools.product(*POOLS.values()):
        top = scores.pool(w, a, p)[0]
        needed |= {(n, int(e)) for n, row in enumerate(top) for e in row}
    keys = sorted(needed)
    entries = linker.taxonomy.entries
    found = cross.score(
        [pairs[n].span for n, _ in keys], [entries[e].preferred_label for _, e in keys]
    )
    out = np.zeros((len(pairs), len(entries)), dtype=np.float32)
    for (n, e), s in zip(keys, found, strict=True):
        out[n, e] = s
    return out


if __name__ == "__main__":
    run_benchmark(main)
