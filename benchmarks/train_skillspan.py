"""Train the offline backbone on SkillSpan train.json and evaluate on dev.json.

Prints the nesting policy's cost, training time, and per-label dev figures: seqeval strict
and default mode on raw argmax tags (comparable with transformers' run_ner), strict on
constrained (viterbi) decoding, and exact character-span F1 against the flattened gold and
against all gold spans (nested ones included).

Run it under the heavy-job lock (see docs/training.md):
    flock /work/heavy.lock nice -n 5 .venv/bin/python -m benchmarks.train_skillspan
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from benchmarks.common import LABELS, ROOT, SKILLSPAN, run_benchmark, skillspan


def main() -> int:
    from training.cpu import cpu_info
    from training.datasets import all_spans, dropped_by_label
    from training.evaluate import evaluate, span_scores
    from training.finetune import train
    from training.train_config import TrainConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SKILLSPAN)
    parser.add_argument("--out", type=Path, default=ROOT / "state" / "models" / "skillspan-minilm")
    parser.add_argument("--base", default=None, help="start checkpoint (default: backbone)")
    parser.add_argument("--train-limit", type=int, default=None, help="first N train postings")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--no-progress", action="store_true")
    defaults = TrainConfig().to_json()  # the window as --max-tokens and --stride
    for name, default in defaults.items():
        flag = f"--{name.replace('_', '-')}"
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            parser.add_argument(flag, type=type(default), default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    overrides = {name: getattr(args, name) for name in defaults}
    config = TrainConfig.from_json({k: v for k, v in overrides.items() if v is not None})

    cpu = cpu_info()
    print(cpu.line())
    train_docs, dev_docs = skillspan(args.data, "train", "dev")
    train_docs = train_docs[: args.train_limit]
    print(f"train {len(train_docs)} postings, dev {len(dev_docs)} postings")
    for name, docs in (("train", train_docs), ("dev", dev_docs)):
        for label, c in dropped_by_label(docs).items():
            share = c["dropped"] / c["gold"] if c["gold"] else 0.0
            print(
                f"nesting policy on {name}: {label} {c['dropped']} of {c['gold']} "
                f"gold spans dropped ({share:.1%})"
            )
    print(f"config: {config}")

    load_before, cpu_started = os.getloadavg(), time.process_time()
    result = train(
        args.base,
        train_docs,
        LABELS,
        args.out,
        dev_docs=dev_docs,
        config=config,
        progress=not args.no_progress,
    )
    print(
        f"training: {result.seconds:.0f} s total ({result.timings}), "
        f"{result.epochs_run} epochs run, best epoch {result.best_epoch}, "
        f"{result.n_windows} windows; torch threads {config.num_threads}"
    )
    cpu_seconds = time.process_time() - cpu_started
    load_after = os.getloadavg()
    print(
        f"training CPU time {cpu_seconds:.0f} s over {config.num_threads} threads; "
        f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f} "
        "(1-minute; above the thread count means other jobs shared the cores)"
    )
    print("loss per epoch:", [round(x, 4) for x in result.losses])
    print("dev strict F1 per epoch:", [round(x, 4) for x in result.dev_f1])

    from training.tagger import Tagger

    figures: dict = {"cpu": cpu.as_dict(), "config": vars(config)}
    figures["train"] = vars(result) | {
        "path": str(args.out),
        "cpu_seconds": round(cpu_seconds, 1),
        "load_before": load_before,
        "load_after": load_after,
    }
    # fp32 with the training windows, then the tagger's serving defaults (int8, its windows)
    setups: dict[str, dict[str, Any]] = {
        "fp32": {"quantize": False, "window": config.window},
        "serving": {},
    }
    for setup, options in setups.items():
        tagger = Tagger.load(args.out, LABELS, **options)
        for method in ("argmax", "viterbi"):
            if setup == "serving" and method == "argmax":
                continue
            started = time.perf_counter()
            report = evaluate(tagger, dev_docs, decoding=method)
            seconds = time.perf_counter() - started
            full = span_scores([all_spans(d) for d in dev_docs], report.spans, LABELS)
            print(f"\n== dev, {tagger!r}, {method} decoding ({seconds:.1f} s) ==")
            print(report.table())
            print(
                "char-span F1 against all gold spans (nested included): "
                + ", ".join(f"{k} {v.f1:.3f}" for k, v in full.items())
            )
            figures[f"{setup}-{method}"] = report.to_dict() | {
                "char_span_all_gold": {k: v.to_dict() for k, v in full.items()},
                "predict_seconds": round(seconds, 2),
            }
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    run_benchmark(main)
