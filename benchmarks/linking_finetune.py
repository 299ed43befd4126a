"""Fine-tune the linker's encoder on ESCO (alternative label -> preferred label, in-batch
negatives) within a time budget, and save a linker folder; score it with
`benchmarks/linking_esco.py --linker FOLDER`.

Usage:
    nice -n 10 python benchmarks/linking_finetune.py --out state/linkers/esco-ft \
        [--minutes 15] [--batch-size 64] [--lr 3e-5]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.linking_esco import cpu_info  # noqa: E402
from training.linker_train import LinkerTrainConfig, train_linker  # noqa: E402
from training.taxonomy import load_esco  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    info = cpu_info()
    print("cpu:", json.dumps(info), flush=True)
    taxonomy = load_esco()
    print(taxonomy.summary(), flush=True)
    config = LinkerTrainConfig(
        batch_size=args.batch_size,
        learning_rate=args.lr,
        max_seconds=args.minutes * 60,
        seed=args.seed,
    )
    result = train_linker(taxonomy, args.out, None, config, progress=True)
    print(
        f"saved {result.path}: {result.steps} steps, {result.pairs_seen} pairs, "
        f"{result.seconds:.0f} s, last loss {result.last_loss:.3f}; cpu {info}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
