"""ESCO's hierarchy as a third re-ranking score, chosen on one validation set and reported
on the other.

Usage:
    nice -n 10 python -m benchmarks.linking_hierarchy [--json out.json]

The default linker (training/linker_settings.py, as `benchmarks.linking_defaults` scores
it: both stages, the exact-label rule) ranks each validation pair's top 20 entries; each
entry then gains t x its hierarchy score, the best cosine of one text with the titles of
the ESCO skill groups the entry sits under (`Taxonomy.groups`, from its `hierarchy` paths:
"S/S1/S1.11/S1.11.1" -> the titles of S1, S1.11 and S1.11.1 that ESCO has). Two texts are
tried, each its own run of the protocol: the span's sentence (what the post is about, e.g.
software, against "architectural design" under construction) and the span itself. t is
chosen by accuracy@1 on one set (ties to the smaller t) and reported on the other.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from benchmarks.common import (
    ESCO_SETS,
    add_linking_folder,
    finish_run,
    named_files,
    plain_esco_linker,
    run_benchmark,
)
from training.cpu import cpu_info
from training.linker import MAX_CONTEXT_TOKENS
from training.linker_eval import read_linking_csv

GRID = [0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3]
TOP = 20  # the linker's second stage re-scores its first stage's top 20


def group_rows(taxonomy) -> tuple[list[str], dict[str, list[int]]]:
    """The group titles and, for each entry id, the rows of the groups it sits under."""
    codes = list(taxonomy.groups)
    row = {code: n for n, code in enumerate(codes)}
    under = {
        entry.id: sorted(
            {row[part] for path in entry.hierarchy for part in path.split("/")[1:] if part in row}
        )
        for entry in taxonomy.entries
    }
    return [taxonomy.groups[code] for code in codes], under


def top_rows(linker, gold, by_text: Callable[[int, list[str]], dict]) -> list[tuple]:
    """Each pair's top entries as the default linker ranks them: their scores, which are
    gold, and `by_text(pair number, entry ids)`: a score per entry for each text."""
    links = linker.link([p.span for p in gold.pairs], [p.sentence for p in gold.pairs], TOP)
    rows = []
    for n, (pair, link) in enumerate(zip(gold.pairs, links, strict=True)):
        ids = [c.id for c in link.candidates]
        score = np.array([c.score for c in link.candidates])
        rows.append((score, np.array([i in pair.gold for i in ids]), by_text(n, ids)))
    return rows


def features(linker, gold, titles: np.ndarray, under: dict) -> list[tuple]:
    """Each pair's top entries (`top_rows`) with the two hierarchy scores."""
    spans, sentences = [p.span for p in gold.pairs], [p.sentence for p in gold.pairs]
    texts = {
        "sentence": linker.encoder.encode(
            [s or x for s, x in zip(sentences, spans, strict=True)], max_tokens=MAX_CONTEXT_TOKENS
        ),
        "span": linker.encoder.encode(spans),
    }
    return top_rows(
        linker,
        gold,
        lambda n, ids: {
            name: np.array([(titles[under[i]] @ vec[n]).max() if under[i] else 0.0 for i in ids])
            for name, vec in texts.items()
        },
    )


def linking_args(doc: str) -> tuple[argparse.Namespace, dict[str, Path]]:
    """The command line of a re-ranking benchmark (--data, --cache, --json) and its sets."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    add_linking_folder(parser)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    return args, named_files([args.data], ESCO_SETS)


def accuracy(rows: list[tuple], text: str, t: float) -> float:
    return float(np.mean([right[np.argmax(s + t * by[text])] for s, right, by in rows]))


def cross_set(rows: dict[str, list[tuple]], texts: Sequence[str], what: str) -> dict:
    """Each text's score weighted by t: the accuracy@1 curve over GRID on each set, and t
    chosen on one set (the first best: the smaller t) reported on the other."""
    results: dict = {"grid": GRID, "curves": {}, "chosen": {}}
    for text in texts:
        for name, set_rows in rows.items():
            curve = [round(accuracy(set_rows, text, t), 4) for t in GRID]
            results["curves"][f"{text} on {name}"] = curve
            print(f"{text} x {what}, {name}: " + ", ".join(
                f"t {t}: {a:.3f}" for t, a in zip(GRID, curve, strict=True)))  # fmt: skip
        for chooser, other in (("HOUSE", "TECH"), ("TECH", "HOUSE")):
            curve = results["curves"][f"{text} on {chooser}"]
            t = GRID[int(np.argmax(curve))]
            reported = accuracy(rows[other], text, t)
            results["chosen"][f"{text}: on {chooser} for {other}"] = {"t": t, other: reported}
            print(f"  {text}: t {t} chosen on {chooser} -> {other} accuracy@1 {reported:.3f} "
                  f"(t 0: {accuracy(rows[other], text, 0.0):.3f})")  # fmt: skip
    return results


def main() -> int:
    args, files = linking_args(__doc__)
    print(cpu_info().line())
    start = time.time()
    taxonomy, linker = plain_esco_linker(args.cache)
    names, under = group_rows(taxonomy)
    titles = linker.encoder.encode(names)
    print(f"{len(names)} group titles; {sum(1 for g in under.values() if g)} entries under one")
    rows = {
        name: features(linker, read_linking_csv(name, file, taxonomy), titles, under)
        for name, file in files.items()
    }
    results = cross_set(rows, ("sentence", "span"), "group titles")
    return finish_run(results, start, args.json)


if __name__ == "__main__":
    run_benchmark(main)
