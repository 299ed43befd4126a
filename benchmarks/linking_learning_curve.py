"""What annotators' confirmed links buy the linker: a simulated learning curve, annotators
confirming and correcting links round by round on one ESCO validation set, the linker
scored on the other after each round (TECH -> HOUSE and HOUSE -> TECH).

Usage:
    nice -n 10 python benchmarks/linking_learning_curve.py [--seeds 5] [--json out.json]

Simulated annotators: the pairs of set A (validation sets and gold as in
benchmarks/linking_esco.py) in a random order (one per seed), a round at a time; for each
span they see the linker's top entry and confirm it when it is gold, else correct it to a
gold entry. What the linker learns, without training: every confirmed or corrected link
becomes a label of its entry (the span's own embedding, a row added to the label index, as
annotators' new entries are), so a later span like it scores that entry by it. The linker
is the plain backbone with the preferred-label weight chosen on A (no link seen). After
each round, accuracy@1 on B: all its pairs, and those whose span text was not among A's
confirmed spans (what a recurring phrase does not explain).
"""

from __future__ import annotations

import argparse
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
from training.linker_eval import read_linking_csv

ROUNDS = (0, 10, 25, 50, 75, 100)  # confirmed links after each round (then all of A)
PREFERRED = (0.0, 0.3, 0.5, 0.7)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_linking_folder(parser)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    files = named_files([args.data], SETS)  # both sets, or one line naming what is missing
    info = cpu_info()
    print(info.line())
    start = time.time()
    taxonomy, linker = plain_esco_linker(args.cache)
    # with an empty --cache this is ESCO's first use: every label embedded (docs/linking.md)
    print(f"labels ({linker.settings.label_precision}) ready in {time.time() - start:.0f} s")
    index = linker.index
    ids = np.array([e.id for e in taxonomy.entries])
    position = {entry_id: i for i, entry_id in enumerate(ids)}
    sets = {}
    for name, file in files.items():
        pairs = read_linking_csv(name, file, taxonomy).pairs
        vectors = linker.encoder.encode([p.span for p in pairs])
        sims = vectors @ index.vectors.T
        best = np.maximum.reduceat(sims, index.offsets, axis=1)
        sets[name] = (pairs, vectors, best, sims[:, index.offsets])

    results: dict = {"cpu": info.as_dict(), "rounds": ROUNDS, "seeds": args.seeds, "curves": {}}
    for source, target in (("TECH", "HOUSE"), ("HOUSE", "TECH")):
        a_pairs, a_vectors, a_best, a_pref = sets[source]
        b_pairs, b_vectors, b_best, b_pref = sets[target]
        gold_a = [p.gold for p in a_pairs]
        p = max(PREFERRED, key=lambda w: (accuracy((1 - w) * a_best + w * a_pref, gold_a, ids), -w))
        sizes = [n for n in ROUNDS if n < len(a_pairs)] + [len(a_pairs)]
        curve = {n: [] for n in sizes}
        unseen_curve = {n: [] for n in sizes}
        for seed in range(args.seeds):
            order = np.random.default_rng(seed).permutation(len(a_pairs))
            memory_rows: list[int] = []  # A's pairs confirmed so far
            memory_entries: list[int] = []
            for n in sizes:
                for i in order[len(memory_rows) : n]:
                    scores = with_memory(
                        a_best[i : i + 1],
                        a_vectors[i : i + 1],
                        a_vectors,
                        memory_rows,
                        memory_entries,
                    )
                    top = ids[int(np.argmax((1 - p) * scores[0] + p * a_pref[i]))]
                    chosen = top if top in a_pairs[i].gold else sorted(a_pairs[i].gold)[0]
                    memory_rows.append(int(i))
                    memory_entries.append(position[chosen])
                scores = with_memory(b_best, b_vectors, a_vectors, memory_rows, memory_entries)
                final = (1 - p) * scores + p * b_pref
                seen = {a_pairs[i].span.casefold() for i in memory_rows}
                unseen = [k for k, pair in enumerate(b_pairs) if pair.span.casefold() not in seen]
                curve[n].append(accuracy(final, [q.gold for q in b_pairs], ids))
                unseen_curve[n].append(
                    accuracy(final[unseen], [b_pairs[k].gold for k in unseen], ids)
                )
        name = f"{source} -> {target}"
        results["curves"][name] = {
            "preferred_weight": p,
            "accuracy@1": {n: float(np.mean(v)) for n, v in curve.items()},
            "accuracy@1_unseen_spans": {n: float(np.mean(v)) for n, v in unseen_curve.items()},
            "spread": {n: [float(min(v)), float(max(v))] for n, v in curve.items()},
        }
        print(
            f"\nannotators on {source} ({len(a_pairs)} pairs), scored on {target} "
            f"({len(b_pairs)} pairs); preferred_weight {p} chosen on {source}"
        )
        print(
            f"{'confirmed links':>16s} {'accuracy@1':>11s} {'(min-max)':>13s} {'unseen spans':>13s}"
        )
        for n in sizes:
            v = curve[n]
            print(
                f"{n:16d} {np.mean(v):11.3f} {min(v):6.3f}-{max(v):.3f} "
                f"{np.mean(unseen_curve[n]):13.3f}"
            )
    return finish_run(results, start, args.json)


def with_memory(best, queries, memory, rows: list[int], entries: list[int]) -> np.ndarray:
    """Entry scores (best label cosine) with confirmed spans as extra labels."""
    if not rows:
        return best
    out = best.copy()
    sims = queries @ memory[rows].T  # (queries, confirmed)
    for column, entry in enumerate(entries):
        np.maximum(out[:, entry], sims[:, column], out=out[:, entry])
    return out


def accuracy(scores: np.ndarray, golds: list[set], ids: np.ndarray) -> float:
    if not golds:
        return float("nan")
    top = ids[np.argmax(scores, axis=1)]
    return float(np.mean([t in g for t, g in zip(top, golds, strict=True)]))


if __name__ == "__main__":
    run_benchmark(main)
