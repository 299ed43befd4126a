"""Distillation on SkillSpan: train K teachers (seeds seed+1..seed+K, and one per
--teacher-base) and the student on their averaged per-word marginals (`training.distill`),
all on train.json, and print each one's dev F1 side by side.

The F1 is the served-span headline of `training.evaluate` (strict IOB2 entity F1 on the
spans a user gets), per label and overall, every model loaded as it serves (fp32 here so
the figures do not depend on the CPU's precision). A teacher is the same recipe as a
plain `skillloop train` with another seed, so the teachers' column is also what the
student must beat. Each SkillSpan training takes 12-20 min on two cores: K teachers and
the student take (K + 1) times that.

    flock /work/heavy.lock nice -n 5 .venv/bin/python -m benchmarks.distil_skillspan --teachers 3
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

from benchmarks.common import LABELS, ROOT, SKILLSPAN, run_benchmark, skillspan


def scores(path: Path, dev_docs) -> dict:
    """Served-span strict entity F1 per label and overall of the checkpoint at `path`."""
    from training.evaluate import OVERALL, evaluate
    from training.tagger import Tagger

    report = evaluate(Tagger.load(path, LABELS, precision="fp32"), dev_docs)
    return {label: round(report.entity[label].f1, 4) for label in [*LABELS, OVERALL]}


def main() -> int:
    from training.cpu import cpu_info
    from training.distill import train
    from training.evaluate import OVERALL
    from training.train_config import TrainConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SKILLSPAN)
    parser.add_argument("--out", type=Path, default=ROOT / "state" / "models" / "distil-bench")
    parser.add_argument("--base", default=None, help="start checkpoint (default: backbone)")
    parser.add_argument("--teachers", type=int, default=3, help="teachers from --base (seeds)")
    parser.add_argument("--teacher-base", action="append", default=[], dest="teacher_bases")
    parser.add_argument("--distil-weight", type=float, default=TrainConfig().distil_weight)
    parser.add_argument("--train-limit", type=int, default=None, help="first N train postings")
    parser.add_argument("--dev-limit", type=int, default=None, help="first N dev postings")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=TrainConfig().seed)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    cpu = cpu_info()
    print(cpu.line())
    train_docs, dev_docs = skillspan(args.data, "train", "dev")
    train_docs, dev_docs = train_docs[: args.train_limit], dev_docs[: args.dev_limit]
    print(f"train {len(train_docs)} postings, dev {len(dev_docs)} postings")
    options: dict = {
        "seed": args.seed,
        "num_threads": args.threads,
        "teachers": args.teachers,
        "teacher_bases": args.teacher_bases,
        "distil_weight": args.distil_weight,
    }
    if args.epochs:
        options["epochs"] = args.epochs
    config = TrainConfig(**options)
    print(f"config: {config}")
    load_before, started = os.getloadavg()[0], time.perf_counter()
    result = train(
        args.base,
        train_docs,
        LABELS,
        args.out / "student",
        dev_docs=dev_docs,
        config=config,
        progress=not args.no_progress,
    )
    seconds = time.perf_counter() - started
    print(f"{len(result.teachers)} teachers and the student: {seconds:.0f} s, "
          f"load {load_before:.1f} -> {os.getloadavg()[0]:.1f}")  # fmt: skip

    rows = {f"teacher {k} (seed {t.get('seed')})": Path(t["path"]) for k, t in
            enumerate(result.teachers, start=1)}  # fmt: skip
    rows["student"] = result.path
    figures = {name: scores(path, dev_docs) for name, path in rows.items()}
    teachers = [f for name, f in figures.items() if name != "student"]
    figures["teachers' mean"] = {
        key: round(sum(t[key] for t in teachers) / len(teachers), 4) for key in figures["student"]
    }
    print("\ndev strict entity F1 on the served spans (fp32, viterbi):")
    print(f"{'model':<26}" + "".join(f"{k:>11}" for k in [*LABELS, OVERALL]))
    for name, f1 in figures.items():
        print(f"{name:<26}" + "".join(f"{f1[k]:>11.3f}" for k in [*LABELS, OVERALL]))
    if args.json:
        out = {"cpu": cpu.as_dict(), "config": config.to_json(), "seconds": round(seconds, 1)}
        args.json.write_text(json.dumps({**out, "dev_f1": figures}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    run_benchmark(main)
