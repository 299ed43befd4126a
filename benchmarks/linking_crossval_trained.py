"""Trained parts inside the cross-set protocol of benchmarks/linking_crossval.py: every
setting chosen on one validation set and reported on the other, and every trained part
trained without the set it is scored on.

Usage:
    nice -n 10 python -m benchmarks.linking_crossval_trained [--adapter state/adapter.npy]
        [--adapter-steps 100] [--adapter-preferred-weight 0.5] [--head state/head.npy]
        [--head-queries 20000] [--save-linker FOLDER] [--json out.json]

On top of linking_crossval's scores (w: the sentence in the query, p: the preferred
label's share, g: the sentence's cosine with the entry's best label, l: lexical) it adds:

- a: the trained adapter (training/linker_adapter.py, ESCO's alternative labels as queries,
  no validation pair), the query `q + a qW` (a 0 = off);
- x: the service's exact-label rule (an entry with a label written like the span, case
  and spacing aside, gains x; the service ranks it first), not in linking_crossval;
- h: a re-ranking head (training/link_head.py) over the first stage's top 20, trained on
  ESCO alone: alternative labels as queries, their entry the positive, the label cache's
  nearest wrong entries the hard negatives; its score (in best-label cosine units) replaces
  the first stage's plus l, g and x still added;
- "head from the other set": the same head with the sentence's score as one more feature,
  trained on the choosing set's pairs (the set it is scored on never trains it).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.common import ESCO_SETS as SETS
from benchmarks.common import (
    add_linking_folder,
    finish_run,
    named_files,
    plain_esco_linker,
    run_benchmark,
)
from benchmarks.linking_crossval import RERANK, cross_row, key, pick_key, short
from training.cpu import cpu_info
from training.link_head import HeadConfig, head_scores, taxonomy_hard_negatives, train_head
from training.link_rerank import LexicalIndex
from training.linker import Linker, LinkerSettings, apply_adapter, written
from training.linker_adapter import AdapterConfig, train_adapter
from training.linker_eval import K, evaluate, read_linking_csv

GRID = {
    "w": (0.0, 0.1, 0.2, 0.3, 0.4, 0.5),
    "a": (0.0, 0.5, 1.0),
    "p": (0.0, 0.3, 0.5, 0.7),
    "g": (0.0, 0.1, 0.2, 0.3, 0.4),
    "l": (0.0, 0.1, 0.2, 0.3),
    "x": (0.0, 1.0),
    "h": (0.0, 1.0),
}
# the head's features per (query, candidate), in this order (0 is its unit)
HEAD_FEATURES = ("best", "preferred", "lexical", "lexical_preferred", "exact", "log_labels")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_linking_folder(parser)
    parser.add_argument("--adapter", type=Path, default=Path("state/adapter-esco-s100.npy"))
    parser.add_argument("--adapter-steps", type=int, default=100, help="if --adapter is missing")
    parser.add_argument("--adapter-seed", type=int, default=AdapterConfig().seed)
    parser.add_argument(
        "--adapter-preferred-weight",
        type=float,
        default=AdapterConfig().preferred_weight,
        help="the entry scoring the adapter trains with, if --adapter is missing",
    )
    parser.add_argument("--head-queries", type=int, default=20000)
    parser.add_argument(
        "--head", type=Path, default=Path("state/head-esco.npy"), help="trained once, then read"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--save-linker",
        type=Path,
        help=f"write a linker folder with the adapter and {SAVED!r}'s setting, if both "
        "directions chose the same one",
    )
    args = parser.parse_args()
    files = named_files([args.data], SETS)
    info = cpu_info()
    print(info.line(), flush=True)
    start = time.time()
    taxonomy, linker = plain_esco_linker(args.cache)
    sets = {n: read_linking_csv(n, file, taxonomy) for n, file in files.items()}
    adapter = esco_adapter(
        linker, args.adapter, args.adapter_steps, args.adapter_preferred_weight, args.adapter_seed
    )
    lexical = LexicalIndex(linker.index.texts, linker.index.offsets)
    if args.head.is_file():
        weights, head_info = np.load(args.head), {"read_from": str(args.head)}
        print(f"head from {args.head}")
    else:
        weights, head_info = esco_head(linker, lexical, args.head_queries)
        args.head.parent.mkdir(parents=True, exist_ok=True)
        np.save(args.head, weights)
    features = {n: Scores(linker, s.pairs, lexical, adapter, weights) for n, s in sets.items()}
    print(f"features ready in {time.time() - start:.0f} s", flush=True)
    results: dict = {"cpu": info.as_dict(), "head": head_info}
    results["crossval"] = crossval_table(features)
    results["head_from_other_set"] = other_set_head(features)
    if args.save_linker:
        results["saved_linker"] = save_linker(
            args.save_linker, linker, adapter, results["crossval"][SAVED], sets
        )
    return finish_run(results, start, args.json)


def esco_adapter(
    linker: Linker, path: Path, steps: int, preferred: float = 0.5, seed: int = 13
) -> np.ndarray:
    """The adapter at `path`, else one trained on ESCO's alternative labels (no validation
    pair) and saved there."""
    if path.is_file():
        print(f"adapter from {path}")
        return np.load(path)
    config = AdapterConfig(steps=steps, preferred_weight=preferred, max_seconds=30 * 60, seed=seed)
    result = train_adapter(linker.index, config, progress=True)
    print(
        f"adapter: {result.steps} steps in {result.seconds} s, loss {result.first_loss} -> "
        f"{result.last_loss}"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, result.adapter)
    return result.adapter


def esco_head(linker: Linker, lexical: LexicalIndex, queries: int) -> tuple[np.ndarray, dict]:
    """The head trained on ESCO's alternative labels against their hard negatives."""
    started = time.time()
    index = linker.index
    negatives = taxonomy_hard_negatives(index, queries, RERANK)
    entry_of_row = index.entry_of_row
    n_labels = np.diff(np.append(index.offsets, len(index.vectors)))
    lex, lex_pref, exact = [], [], []
    for at in range(0, len(negatives.rows), 256):
        rows = negatives.rows[at : at + 256]
        top = negatives.top[at : at + 256]
        texts = [index.texts[r] for r in rows]
        sims = (lexical.vectorizer.transform(texts) @ lexical.labels.T).toarray()
        sims[np.arange(len(rows)), rows] = 0.0  # its own row is not evidence
        grid = np.arange(len(rows))[:, None]
        lex.append(np.maximum.reduceat(sims, index.offsets, axis=1)[grid, top])
        lex_pref.append(sims[:, index.offsets][grid, top])
        for row, text, cands in zip(rows, texts, top, strict=True):
            same = linker.exact_entries(text)
            flags = [e in same and (e != entry_of_row[row] or own_twin(linker, row)) for e in cands]
            exact.append(flags)
    feats = np.stack(
        [
            negatives.best,
            negatives.preferred,
            np.concatenate(lex),
            np.concatenate(lex_pref),
            np.array(exact, dtype=np.float32),
            np.log(n_labels[negatives.top]),
        ],
        axis=2,
    )
    result = train_head(feats, negatives.gold, HeadConfig())
    at1 = float(np.mean(negatives.gold[np.arange(len(feats)), (feats @ result.weights).argmax(1)]))
    info = {
        "queries": result.queries,
        "missed_top20": negatives.missed,
        "weights": dict(zip(HEAD_FEATURES, map(float, result.weights), strict=True)),
        "loss": [result.first_loss, result.last_loss],
        "esco_accuracy@1": {"first_stage": float(negatives.gold[:, 0].mean()), "head": at1},
        "seconds": round(time.time() - started, 1),
    }
    print(f"head on ESCO: {json.dumps(info)}", flush=True)
    return result.weights, info


def own_twin(linker: Linker, row: int) -> bool:
    """Whether row's entry has another label written like row's label."""
    index = linker.index
    entry = int(index.entry_of_row[row])
    end = index.offsets[entry + 1] if entry + 1 < len(index.offsets) else len(index.vectors)
    form = written(index.texts[row])
    return any(
        written(index.texts[r]) == form for r in range(index.offsets[entry], end) if r != row
    )


class Scores:
    """Every score of every (pair, entry) for each (w, a), and the head's features."""

    def __init__(self, linker: Linker, pairs, lexical: LexicalIndex, adapter, weights: np.ndarray):
        index = linker.index
        span_texts = [p.span for p in pairs]
        spans = linker.encoder.encode(span_texts)
        sentences = linker.encoder.encode([p.sentence for p in pairs], max_tokens=128)
        self.gold = [p.gold for p in pairs]
        self.ids = np.array([e.id for e in linker.taxonomy.entries])
        self.weights = weights
        self.best, self.pref = {}, {}
        for w, a in itertools.product(GRID["w"], GRID["a"]):
            queries = (1 - w) * spans + w * sentences
            queries /= np.linalg.norm(queries, axis=1, keepdims=True)
            queries = apply_adapter(queries, a * adapter) if a else queries
            sims = queries @ index.vectors.T
            self.best[w, a] = np.maximum.reduceat(sims, index.offsets, axis=1)
            self.pref[w, a] = sims[:, index.offsets]
        self.context = np.maximum.reduceat(sentences @ index.vectors.T, index.offsets, axis=1)
        raw = (lexical.vectorizer.transform(span_texts) @ lexical.labels.T).toarray()
        self.lexical = np.maximum.reduceat(raw, index.offsets, axis=1).astype(np.float32)
        self.lexical_pref = raw[:, index.offsets].astype(np.float32)
        self.exact = np.zeros_like(self.lexical)
        for n, text in enumerate(span_texts):
            self.exact[n, list(linker.exact_entries(text))] = 1.0
        n_labels = np.diff(np.append(index.offsets, len(index.vectors)))
        self.log_labels = np.log(n_labels).astype(np.float32)
        self._pool: dict = {}

    def pool(self, w: float, a: float, p: float) -> tuple:
        """The first stage's top RERANK entries, their scores and the head's features."""
        if (w, a, p) not in self._pool:
            first = (1 - p) * self.best[w, a] + p * self.pref[w, a]
            top = np.argpartition(-first, RERANK, axis=1)[:, :RERANK]
            rows = np.arange(len(top))[:, None]
            feats = np.stack(
                [
                    self.best[w, a][rows, top],
                    self.pref[w, a][rows, top],
                    self.lexical[rows, top],
                    self.lexical_pref[rows, top],
                    self.exact[rows, top],
                    self.log_labels[top],
                ],
                axis=2,
            )
            self._pool[w, a, p] = (top, first[rows, top], feats, head_scores(feats, self.weights))
        return self._pool[w, a, p]

    def rank(self, s: dict, head: np.ndarray | None = None) -> np.ndarray:
        top, first, feats, esco_head = self.pool(s["w"], s["a"], s["p"])
        rows = np.arange(len(top))[:, None]
        if head is not None:  # a head trained elsewhere, with the sentence as a feature
            score = np.concatenate([feats, self.context[rows, top][..., None]], 2) @ head
        elif s["h"]:
            score = esco_head + s["g"] * self.context[rows, top]
        else:
            score = first + s["g"] * self.context[rows, top] + s["l"] * self.lexical[rows, top]
        score = score + s["x"] * self.exact[rows, top]
        return top[rows, np.argsort(-score, axis=1)[:, :K]]

    def figures(self, s: dict, head: np.ndarray | None = None) -> tuple[float, float]:
        ranked = self.ids[self.rank(s, head)]
        pairs = list(zip(ranked, self.gold, strict=True))
        acc = np.mean([r[0] in g for r, g in pairs])
        rp = np.mean([sum(i in g for i in r) / min(K, len(g)) for r, g in pairs])
        return float(acc), float(rp)


def settings(grid: dict = GRID):
    for values in itertools.product(*grid.values()):
        s = dict(zip(grid, values, strict=True))
        if s["h"] and s["l"]:  # the head has its own lexical scores
            continue
        yield s


SAVED = "adapter + p"  # the family --save-linker writes
FAMILIES = {
    "plain (span alone, best label)": (),
    "linking_crossval's all (w, p, g, l)": ("w", "p", "g", "l"),
    "+ exact-label rule (x)": ("w", "p", "g", "l", "x"),
    "adapter only (a)": ("a",),
    "adapter + p": ("a", "p"),
    "adapter + p + w": ("a", "p", "w"),
    "adapter + p + g": ("a", "p", "g"),
    "adapter + p + l": ("a", "p", "l"),
    "adapter + p + x": ("a", "p", "x"),
    "adapter + w, p, g, l": ("a", "w", "p", "g", "l"),
    "adapter + w, p, g, l, x": ("a", "w", "p", "g", "l", "x"),
    "ESCO head only (h; p sets its pool)": ("h", "p"),
    "ESCO head + w, g, x": ("h", "p", "w", "g", "x"),
    "ESCO head + adapter + w, g, x": ("h", "p", "a", "w", "g", "x"),
    "everything (w, a, p, g, l, x, h)": tuple(GRID),
}


def crossval_table(features: dict, families: dict = FAMILIES, axes: dict = GRID) -> dict:
    grid = list(settings(axes))
    members = {}
    for title, only in families.items():
        # a family varies the axes it names (a dict: over the values it gives), the rest 0
        allowed = only if isinstance(only, dict) else {k: axes[k] for k in only}
        family = [s for s in grid if all(s[k] in allowed.get(k, (0,)) for k in axes)]
        if "h" in only and "l" not in only:
            family = [s for s in family if s["h"]] or family
        members[title] = family
    scored = {key(s): s for family in members.values() for s in family}  # each once
    scores = {n: {k: f.figures(s) for k, s in scored.items()} for n, f in features.items()}
    out: dict = {}
    print(
        f"\n{'chosen on the other set':38s} {'TECH acc@1':>10s} {'RP@5':>6s} "
        f"{'HOUSE acc@1':>11s} {'RP@5':>6s}  chosen on HOUSE | on TECH"
    )
    for title, family in members.items():
        row = cross_row(family, scores)
        out[title] = row
        print_row(title, row)
    best = {n: max(scores[n].values()) for n in scores}
    print("best on each set itself (tuned on the data it is scored on):", best)
    out["best_on_itself"] = best
    return out


def save_linker(folder: Path, linker: Linker, adapter, row: dict, sets: dict) -> dict:
    """The family's setting as a linker folder (adapter.npy, linker.json), if both
    directions chose it; its threshold is the median of those tuned on each set, and each
    set is scored by the folder as the service ranks (the exact-label rule included)."""
    chosen = {key(row[t]["setting"]) for t in ("TECH", "HOUSE")}
    if len(chosen) != 1:
        print(f"--save-linker: the two directions chose different settings {chosen}")
        return {"saved": False, "chosen": sorted(chosen)}
    s = row["TECH"]["setting"]
    scale = np.float32(s["a"])
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "adapter.npy", (scale * adapter).astype(np.float32))
    settings = LinkerSettings(
        context_weight=s["w"],
        preferred_weight=s["p"],
        sentence_weight=s.get("g", 0.0),  # the re-ranking weights the grid chose, not the
        lexical_weight=s.get("l", 0.0),  # plain linker's defaults
        adapter="adapter.npy" if s["a"] else "",
        label_precision=linker.settings.label_precision,
    )
    served = Linker.from_index(linker.taxonomy, linker.encoder, settings, linker.index)
    served.adapter = np.load(folder / "adapter.npy") if s["a"] else None
    figures = {name: evaluate(served, gold) for name, gold in sets.items()}
    settings.threshold = float(np.median([f["threshold"] for f in figures.values()]))
    settings.details = {
        "chosen_by": "benchmarks.linking_crossval_trained: on each validation set, the same",
        "setting": s,
        "adapter": "ESCO alternative labels only, 100 steps (training/linker_adapter.py)",
        "validation": figures,
        "crossval": {t: {k: row[t][k] for k in ("accuracy@1", "r_precision@5")} for t in row},
    }
    settings.save(folder)
    print(f"wrote {folder}: {json.dumps(settings.details['validation'])}")
    return {"saved": True, "folder": str(folder), "setting": s, "validation": figures}


def print_row(title: str, row: dict) -> None:
    t, h = row["TECH"], row["HOUSE"]
    print(
        f"{title:38s} {t['accuracy@1']:10.3f} {t['r_precision@5']:6.3f} "
        f"{h['accuracy@1']:11.3f} {h['r_precision@5']:6.3f}  {short(t['setting'])} | "
        f"{short(h['setting'])}",
        flush=True,
    )


def other_set_head(features: dict) -> dict:
    """A head with the sentence's score as a feature, trained on the choosing set's pairs
    for each pool (w, a, p), the pool chosen by its fit there, scored on the other set."""
    import torch

    torch.set_num_threads(1)  # 144 small trainings: two threads on shared cores only wait
    out = {}
    for target, source in (("TECH", "HOUSE"), ("HOUSE", "TECH")):
        src, best = features[source], None
        for w, a, p in itertools.product(GRID["w"], GRID["a"], GRID["p"]):
            top, _, feats, _ = src.pool(w, a, p)
            rows = np.arange(len(top))[:, None]
            x = np.concatenate([feats, src.context[rows, top][..., None]], 2)
            gold = np.array(
                [[i in g for i in r] for r, g in zip(src.ids[top], src.gold, strict=True)]
            )
            head = train_head(x, gold, HeadConfig()).weights
            s = {"w": w, "a": a, "p": p, "x": 0.0, "h": 0.0}
            fit = src.figures(s, head)
            if best is None or pick_key(fit, s) > pick_key(best[0], s):
                best = (fit, s, head)
        fit, s, head = best
        acc, rp = features[target].figures(s, head)
        out[target] = {
            "chosen_on": source,
            "setting": s,
            "weights": head.tolist(),
            "accuracy@1": acc,
            "r_precision@5": rp,
            "on_its_own_set": fit,
        }
    print_row("head trained on the other set's pairs", out)
    return out


if __name__ == "__main__":
    run_benchmark(main)
