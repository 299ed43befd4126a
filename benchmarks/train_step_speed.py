"""Time SkillSpan training steps under the trainer's speed options, without training to
the end: the cost of one epoch under each option, measured on the same batches.

Each variant runs `--steps` optimizer steps (after `--warmup` untimed ones) of the real
trainer (`training.finetune`: `prepare`, `Optimizer`, `batch_loss`) on the first batches
of epoch 1 (seeded), and the variants take turns (`--rounds`), so load from other jobs
falls on all of them alike. Prints wall and CPU seconds per step and per epoch (steps per
epoch times the per-step time), and the CPU.

    flock /work/heavy.lock nice -n 5 .venv/bin/python -m benchmarks.train_step_speed
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

from benchmarks.common import LABELS, SKILLSPAN, run_benchmark, skillspan

# name -> TrainConfig overrides
VARIANTS: dict[str, dict] = {
    "base": {},
    "freeze-emb": {"freeze_embeddings": True},
    "freeze-emb-l3": {"freeze_embeddings": True, "freeze_layers": 3, "freeze_epochs": 1},
    "batch8": {"batch_size": 8},
    "win126": {"max_tokens": 126},
}


def main() -> int:
    from training.cpu import cpu_info
    from training.finetune import Optimizer, batch_loss, prepare
    from training.freezing import freeze_for_epoch
    from training.train_config import TrainConfig
    from training.train_examples import batches

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SKILLSPAN)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    cpu = cpu_info()
    print(cpu.line(), flush=True)
    [docs] = skillspan(args.data, "train")
    base = TrainConfig(num_threads=args.threads, crf=True)
    runs = {}
    for name in args.variants:
        config = TrainConfig.from_json({**base.to_json(), **VARIANTS[name]})
        key = config.window.max_tokens
        if key not in runs:
            runs[key] = prepare(None, docs, LABELS, config, None)
        run = runs[key]
        print(f"{name}: {len(run.examples)} windows", flush=True)
    timed: dict[str, list[tuple[float, float]]] = {name: [] for name in args.variants}
    steps_per_epoch: dict[str, int] = {}
    for _ in range(args.rounds):
        for name in args.variants:
            config = TrainConfig.from_json({**base.to_json(), **VARIANTS[name]})
            run = runs[config.window.max_tokens]
            order = batches(run.examples, config.batch_size, random.Random(config.seed))
            steps_per_epoch[name] = len(order)
            optimizer = Optimizer(run, config, len(order), None)
            freeze_for_epoch(run.model, config, 1)
            run.model.train()
            for i, batch_ids in enumerate(order[: args.warmup + args.steps]):
                wall, cpu_s = time.perf_counter(), time.process_time()
                loss = batch_loss(run, [run.examples[k] for k in batch_ids])
                optimizer.step(loss)
                if i >= args.warmup:
                    timed[name].append((time.perf_counter() - wall, time.process_time() - cpu_s))
            freeze_for_epoch(run.model, base, 1)
    figures: dict = {"cpu": cpu.as_dict(), "load": os.getloadavg(), "variants": {}}
    print(f"\nload average at the end: {os.getloadavg()}")
    print("| variant | steps/epoch | wall s/step | CPU s/step | wall s/epoch | CPU s/epoch |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, samples in timed.items():
        wall = sorted(w for w, _ in samples)[len(samples) // 2]
        cpu_s = sorted(c for _, c in samples)[len(samples) // 2]
        n = steps_per_epoch[name]
        print(f"| {name} | {n} | {wall:.3f} | {cpu_s:.3f} | {wall * n:.0f} | {cpu_s * n:.0f} |")
        figures["variants"][name] = {
            "steps_per_epoch": n,
            "median_wall_s_per_step": round(wall, 4),
            "median_cpu_s_per_step": round(cpu_s, 4),
            "samples": samples,
        }
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    run_benchmark(main)
