"""The linker's default ranking scored as the service runs it, and its no-match threshold
tuned on one ESCO validation set and applied to the other.

Usage:
    nice -n 10 python -m benchmarks.linking_defaults [--json out.json]
        [--w 0.3] [--p 0.5] [--g 0.2] [--l 0.1]

The plain backbone over ESCO (labels from the int8 cache, spans in fp32), with the
defaults of training/linker_settings.py unless a weight is given, links every validation
pair through `Linker.link` (the span with its sentence: both stages, the exact-label rule
included) as training.linker_eval scores a linker version: accuracy@1, R-Precision@5, the
threshold tuned on each set (the best decision accuracy, grid 0.20-0.99), and each set's
decision accuracy under the threshold tuned on the other (a pair handled right: linked to
a gold entry at or above it, or a LABEL NOT PRESENT pair left unlinked below it). Sets,
gold and protocol as benchmarks/linking_esco.py.
"""

from __future__ import annotations

import argparse
import json
import time
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
from training.link_rerank import LexicalIndex
from training.linker_eval import best_threshold, decision_accuracy, link_gold, read_linking_csv

WEIGHTS = {"w": "context_weight", "p": "preferred_weight", "g": "sentence_weight"}
WEIGHTS["l"] = "lexical_weight"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_linking_folder(parser)
    parser.add_argument("--json", type=Path)
    for short, name in WEIGHTS.items():
        parser.add_argument(f"--{short}", type=float, help=f"{name} (default: the linker's)")
    args = parser.parse_args()
    files = named_files([args.data], ESCO_SETS)
    info = cpu_info()
    print(info.line())
    start = time.time()
    taxonomy, linker = plain_esco_linker(args.cache)
    for short, name in WEIGHTS.items():
        if getattr(args, short) is not None:
            setattr(linker.settings, name, getattr(args, short))
    setting = {name: getattr(linker.settings, name) for name in WEIGHTS.values()}
    print(f"labels ({linker.settings.label_precision}) ready in {time.time() - start:.0f} s")
    print("settings:", json.dumps(setting | {"rerank_top": linker.settings.rerank_top}))
    built = time.time()  # Linker.load built it already: once more, to time it
    LexicalIndex(linker.index.texts, linker.index.offsets)
    trigrams_s = round(time.time() - built, 1)
    print(f"trigram index of {len(linker.index.texts):,} labels built in {trigrams_s} s")

    figures, scored = {}, {}
    for name, file in files.items():
        gold = read_linking_csv(name, file, taxonomy)
        figures[name], scored[name] = link_gold(linker, gold)
        figures[name]["threshold"] = best_threshold(scored[name])
        figures[name]["always_link"] = decision_accuracy(scored[name], -1.0)
        print(
            f"{name}: accuracy@1 {figures[name]['accuracy@1']:.3f}, R-Precision@5 "
            f"{figures[name]['r_precision@5']:.3f} ({len(gold.pairs)} pairs, "
            f"{len(gold.no_match)} no-match); threshold tuned on it "
            f"{figures[name]['threshold']:.2f}"
        )
    names = list(files)
    median = float(np.median([figures[n]["threshold"] for n in names]))
    for name in names:
        other = [n for n in names if n != name]
        for source in other:
            crossed = decision_accuracy(scored[name], figures[source]["threshold"])
            figures[name][f"decision_with_{source}_threshold"] = crossed
            print(
                f"{name} decision accuracy with {source}'s threshold "
                f"{figures[source]['threshold']:.2f}: {crossed:.3f} "
                f"(always linking: {figures[name]['always_link']:.3f})"
            )
        figures[name]["decision_with_median"] = decision_accuracy(scored[name], median)
        own = decision_accuracy(scored[name], linker.threshold)
        figures[name]["decision_with_linker_threshold"] = own
    print(
        f"median of the tuned thresholds {median:.2f}: decision accuracy "
        + ", ".join(f"{n} {figures[n]['decision_with_median']:.3f}" for n in names)
    )
    print(
        f"the linker's threshold {linker.threshold:.2f}: decision accuracy "
        + ", ".join(f"{n} {figures[n]['decision_with_linker_threshold']:.3f}" for n in names)
    )
    results = {"cpu": info.as_dict(), "settings": setting, "figures": figures}
    results |= {"threshold": linker.threshold, "trigram_index_s": trigrams_s}
    results |= {"median_threshold": median}
    return finish_run(results, start, args.json)


if __name__ == "__main__":
    run_benchmark(main)
