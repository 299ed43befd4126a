"""Distillation on SkillSpan: train K teachers (seeds seed+1..seed+K, and one per
--teacher-base) and the student on their averaged per-word marginals (`training.distill`),
all on train.json, and print each one's dev F1 side by side.

The F1 is the served-span headline of `training.evaluate` (strict IOB2 entity F1 on the
spans a user gets), per label and overall, every model loaded as it serves (fp32 here so
the figures do not depend on the CPU's precision). A teacher is the same recipe as a
plain `skillloop train` with another seed, so the teachers' column is also what the
student must beat. Each SkillSpan training takes 12-20 min on two quiet cores with 12
epochs: K teachers and the student take (K + 1) times that. `--teacher PATH` takes a
trained checkpoint as a teacher (no training), `--single PATH` scores a plain model in
the same table (the single model the student must match).

    flock /work/heavy.lock nice -n 5 .venv/bin/python -m benchmarks.distil_skillspan --teachers 3
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

from benchmarks.common import LABELS, ROOT, SKILLSPAN, DataError, run_benchmark, skillspan


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
    parser.add_argument("--teacher-base", action="append", default=[], dest="teacher_bases")
    parser.add_argument(
        "--teacher", type=Path, action="append", default=[], dest="teacher_checkpoints",
        help="a trained checkpoint taken as a teacher as it is (repeatable)",
    )  # fmt: skip
    parser.add_argument("--train-limit", type=int, default=None, help="first N train postings")
    parser.add_argument("--dev-limit", type=int, default=None, help="first N dev postings")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--single", type=Path, action="append", default=[],
        help="a plain checkpoint (e.g. benchmarks.train_skillspan's) scored in the same table",
    )  # fmt: skip
    parser.add_argument(
        "--json", type=Path, default=ROOT / "state" / "distil_skillspan.json",
        help="where the figures are written (default: state/, ignored by git)",
    )  # fmt: skip
    parser.add_argument("--no-progress", action="store_true")
    # every other training option as in benchmarks.train_skillspan (--epochs,
    # --learning-rate, --no-dev-every-epoch, --distil-weight, ...); --teachers defaults to 3
    defaults = TrainConfig().to_json()
    for name, default in defaults.items():
        if name in ("teacher_bases", "teacher_checkpoints", "num_threads", "layers"):
            continue
        flag = f"--{name.replace('_', '-')}"
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            parser.add_argument(flag, type=type(default), default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    cpu = cpu_info()
    print(cpu.line())
    train_docs, dev_docs = skillspan(args.data, "train", "dev")
    train_docs, dev_docs = train_docs[: args.train_limit], dev_docs[: args.dev_limit]
    print(f"train {len(train_docs)} postings, dev {len(dev_docs)} postings")
    options = {
        name: getattr(args, name) for name in defaults if getattr(args, name, None) is not None
    }
    options |= {"num_threads": args.threads, "teacher_bases": args.teacher_bases}
    options["teacher_checkpoints"] = [str(path) for path in args.teacher_checkpoints]
    options.setdefault("teachers", 3)
    try:
        config = TrainConfig.from_json(options)
    except ValueError as err:
        raise DataError(str(err)) from None
    for path in [*args.single, *args.teacher_checkpoints]:  # before the long training
        if not (path / "config.json").is_file():
            raise DataError(f"{path} is not a checkpoint folder")
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
    seconds, load_after = time.perf_counter() - started, os.getloadavg()[0]
    print(f"{len(result.teachers)} teachers and the student: {seconds:.0f} s, "
          f"load {load_before:.1f} -> {load_after:.1f}")  # fmt: skip

    rows = {f"teacher {k} ({'seed ' + str(t['seed']) if 'seed' in t else Path(t['path']).name})":
            Path(t["path"]) for k, t in enumerate(result.teachers, start=1)}  # fmt: skip
    rows["student"] = result.path
    rows |= {f"single ({path.name})": path for path in args.single}
    figures = {name: scores(path, dev_docs) for name, path in rows.items()}
    teachers = [f for name, f in figures.items() if name.startswith("teacher")]
    figures["teachers' mean"] = {
        key: round(sum(t[key] for t in teachers) / len(teachers), 4) for key in figures["student"]
    }
    print("\ndev strict entity F1 on the served spans (fp32, viterbi):")
    print(f"{'model':<26}" + "".join(f"{k:>11}" for k in [*LABELS, OVERALL]))
    for name, f1 in figures.items():
        print(f"{name:<26}" + "".join(f"{f1[k]:>11.3f}" for k in [*LABELS, OVERALL]))
    if args.json:
        out = {"cpu": cpu.as_dict(), "config": config.to_json(), "seconds": round(seconds, 1)}
        out |= {"load": [load_before, load_after], "teachers": result.teachers}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**out, "dev_f1": figures}, indent=2) + "\n")
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    run_benchmark(main)
