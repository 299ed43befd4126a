"""int8 against fp32 label embeddings for the plain linker: are they the same labels, and
is the accuracy@1 difference on the ESCO validation sets more than noise?

Usage:
    nice -n 10 python benchmarks/label_precision.py [--cache state/linking-cache]
        [--queries 5000] [--json out.json]

Needs both label caches of the plain backbone over ESCO (the fp32 one and the `-int8` one;
any linker run that embeds them writes them, e.g. benchmarks/esco_embedding.py --full fp32
int8). Prints: (1) the two caches' shapes, norms and the cosine between a label's two
embeddings; (2) accuracy@1 on the validation sets (benchmarks/linking_esco.py's gold) with
the same fp32 span embeddings against each cache, the pairs that flip either way and an
exact two-sided sign test on them; (3) a larger check: ESCO alternative labels (a seeded
sample) as queries, embedded in fp32, each ranked against all labels but its own row
(accuracy@1 = its own entry on top), against each cache.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import ESCO_SETS as SETS
from benchmarks.common import add_linking_folder, finish_run, named_files, run_benchmark
from training.cpu import cpu_info
from training.linker import written
from training.linker_eval import read_linking_csv
from training.sentence_encoder import SentenceEncoder
from training.taxonomy import load_esco


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_linking_folder(parser)
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    files = named_files([args.data], SETS)  # both sets, or one line naming what is missing
    info = cpu_info()
    print(info.line())
    start = time.time()
    taxonomy = load_esco()
    encoder = SentenceEncoder(None)
    name = f"labels-{encoder.key()}-{taxonomy.fingerprint()}"
    paths = {"fp32": args.cache / f"{name}.npy", "int8": args.cache / f"{name}-int8.npy"}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        print(f"label cache not found: {', '.join(missing)} (see the usage)", file=sys.stderr)
        return 2
    vectors = {k: np.load(p) for k, p in paths.items()}
    texts, offsets = [], []
    for entry in taxonomy.entries:
        offsets.append(len(texts))
        texts.extend(entry.labels)
    offsets_a = np.asarray(offsets)
    written_as: dict[str, set[int]] = {}
    for e, entry in enumerate(taxonomy.entries):
        for label in entry.labels:
            written_as.setdefault(written(label), set()).add(e)
    results: dict = {"cpu": info.as_dict()}

    agree = np.sum(vectors["fp32"] * vectors["int8"], axis=1)
    norms = {
        k: [float(np.linalg.norm(v, axis=1).min()), float(np.linalg.norm(v, axis=1).max())]
        for k, v in vectors.items()
    }
    same = {
        "shapes": {k: list(v.shape) for k, v in vectors.items()},
        "norm_range": norms,
        "cosine_fp32_int8": {
            "mean": float(agree.mean()),
            "p1": float(np.percentile(agree, 1)),
            "min": float(agree.min()),
        },
    }
    print("1. the caches:", json.dumps(same))
    results["caches"] = same

    print("\n2. validation sets, the same fp32 span embeddings against each cache")
    sign: dict = {}
    for set_name, file in files.items():
        pairs = read_linking_csv(set_name, file, taxonomy).pairs
        spans = encoder.encode([p.span for p in pairs])
        right = {}
        top = {}
        for k, v in [*vectors.items(), ("int8+exact", vectors["int8"])]:
            scores = np.maximum.reduceat(spans @ v.T, offsets_a, axis=1)
            if k.endswith("+exact"):  # Linker.rank's rule: a label written like the span
                for i, pair in enumerate(pairs):
                    exact = sorted(written_as.get(written(pair.span), ()))
                    scores[i] += 1e-6 * scores[i]
                    scores[i, exact] = np.maximum(scores[i, exact], 1.0 + 1e-6 * scores[i, exact])
            best = np.argmax(scores, axis=1)
            top[k] = best
            right[k] = np.array(
                [taxonomy.entries[e].id in p.gold for e, p in zip(best, pairs, strict=True)]
            )
        gains = np.flatnonzero(right["int8"] & ~right["fp32"])
        losses = np.flatnonzero(~right["int8"] & right["fp32"])
        p_value = sign_test(len(gains), len(losses))
        row = {
            "pairs": len(pairs),
            "fp32": float(right["fp32"].mean()),
            "int8": float(right["int8"].mean()),
            "int8+exact": float(right["int8+exact"].mean()),
            "int8_right_fp32_wrong": len(gains),
            "fp32_right_int8_wrong": len(losses),
            "sign_test_p": p_value,
            "flips": [
                {
                    "span": pairs[i].span,
                    "fp32": taxonomy.entries[top["fp32"][i]].preferred_label,
                    "int8": taxonomy.entries[top["int8"][i]].preferred_label,
                    "right": "int8" if i in gains else "fp32",
                }
                for i in [*gains, *losses]
            ],
        }
        sign[set_name] = row
        print(
            f"{set_name}: accuracy@1 fp32 {row['fp32']:.3f}, int8 {row['int8']:.3f} (with "
            f"the exact-label rule {row['int8+exact']:.3f}) on "
            f"{len(pairs)} pairs; pairs only int8 gets right {len(gains)}, only fp32 "
            f"{len(losses)}; sign test p = {p_value:.2f}"
        )
        for flip in row["flips"]:
            print(
                f"   {flip['right']:4s} right: {flip['span']!r}: fp32 -> {flip['fp32']!r}, "
                f"int8 -> {flip['int8']!r}"
            )
    results["validation"] = sign

    rng = np.random.default_rng(13)
    entry_of = np.repeat(np.arange(len(offsets_a)), np.diff(np.append(offsets_a, len(texts))))
    alternative = np.setdiff1d(np.arange(len(texts)), offsets_a)  # rows of alternative labels
    rows = rng.choice(alternative, size=min(args.queries, len(alternative)), replace=False)
    queries = vectors["fp32"][rows]
    self_check: dict = {}
    for k, v in vectors.items():
        hits = []
        for at in range(0, len(rows), 500):
            chunk = rows[at : at + 500]
            sims = queries[at : at + 500] @ v.T
            sims[np.arange(len(chunk)), chunk] = -np.inf  # not its own row
            best = np.argmax(np.maximum.reduceat(sims, offsets_a, axis=1), axis=1)
            hits.append(best == entry_of[chunk])
        self_check[k] = float(np.concatenate(hits).mean())
    print(
        f"\n3. {len(rows):,} ESCO alternative labels as queries (fp32), own row left out: "
        f"accuracy@1 fp32 labels {self_check['fp32']:.4f}, int8 labels {self_check['int8']:.4f}"
    )
    results["alternative_labels_as_queries"] = {"queries": len(rows), **self_check}
    return finish_run(results, start, args.json)


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided sign test (McNemar's exact test) on the discordant pairs."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


if __name__ == "__main__":
    run_benchmark(main)
