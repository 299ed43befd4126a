"""Train a linker round on ESCO (an adapter over the cached MiniLM label embeddings, see
training/linker_adapter.py), score it on the ESCO linking validation sets, gate it and
register it, timing each part.

Usage:
    nice -n 5 python -m benchmarks.linking_finetune [--registry state/linkers/esco] \
        [--steps 100] [--minutes 15] [--pairs-from TECH|HOUSE] [--json out.json]

Training pairs: ESCO's alternative labels (each against its own entry, its own row
masked). --pairs-from SET adds that validation set's span -> entry pairs to training and
then scores on the OTHER set only (evaluation pairs never train). The label embeddings
come from the cache that benchmarks/linking_esco.py builds (state/linking-cache).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from benchmarks.common import ESCO_LINKING, ESCO_SETS, run_benchmark
from training.cpu import cpu_info
from training.linker_adapter import AdapterConfig
from training.linker_eval import read_linking_csv
from training.linker_round import train_linker_round
from training.registry import LinkerRegistry
from training.taxonomy import load_esco

DEFAULTS = AdapterConfig()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ESCO_LINKING)
    parser.add_argument("--cache", type=Path, default=Path("state/linking-cache"))
    parser.add_argument("--registry", type=Path, default=Path("state/linkers/esco"))
    parser.add_argument("--steps", type=int, default=DEFAULTS.steps)
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    parser.add_argument("--lr", type=float, default=DEFAULTS.learning_rate)
    parser.add_argument("--preferred-weight", type=float, default=DEFAULTS.preferred_weight)
    parser.add_argument("--pairs-from", choices=sorted(ESCO_SETS), help="train on this set's pairs")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    if not all((args.data / f).is_file() for f in ESCO_SETS.values()):
        print(f"ESCO linking data not found in {args.data} (see its README)", file=sys.stderr)
        return 2
    info = cpu_info()
    print(info.line(), flush=True)
    started = time.time()
    taxonomy = load_esco()
    print(taxonomy.summary(), flush=True)
    sets = {name: read_linking_csv(name, args.data / f, taxonomy) for name, f in ESCO_SETS.items()}
    extra: list[tuple[str, str]] = []
    if args.pairs_from:
        train_set = sets.pop(args.pairs_from)
        extra = [(p.span, entry_id) for p in train_set.pairs for entry_id in sorted(p.gold)]
        print(
            f"training on {len(extra)} {args.pairs_from} span -> entry pairs; scoring on "
            f"{', '.join(sets)} only",
            flush=True,
        )
    config = AdapterConfig(
        steps=args.steps,
        max_seconds=args.minutes * 60,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        preferred_weight=args.preferred_weight,
        seed=args.seed,
    )
    registry = LinkerRegistry(args.registry)
    outcome = train_linker_round(
        taxonomy, registry, list(sets.values()), args.cache, extra, config, "benchmark"
    )
    total = time.time() - started
    print(f"\n{'linker':28s} " + " ".join(f"{n + ' acc@1':>11s} {'RP@5':>6s}" for n in sets))
    for name, figures in ((outcome.baseline_version, outcome.baseline), ("new", outcome.figures)):
        cells = " ".join(
            f"{figures[n]['accuracy@1']:11.3f} {figures[n]['r_precision@5']:6.3f}" for n in sets
        )
        print(f"{name:28s} {cells}")
    print(f"\n{outcome.version.version} {outcome.version.status}: {outcome.reason}")
    print(f"timings: {json.dumps(outcome.timings)}; whole run {total:.0f} s")
    print(info.line())
    if args.json:
        result = {
            "cpu": info.as_dict(),
            "config": vars(args) | {"data": str(args.data), "cache": str(args.cache)},
            "version": outcome.version.to_dict(),
            "figures": outcome.figures,
            "baseline": outcome.baseline,
            "baseline_version": outcome.baseline_version,
            "timings": outcome.timings,
            "seconds": round(total, 1),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
        print("wrote", args.json)
    return 0


if __name__ == "__main__":
    run_benchmark(main)
