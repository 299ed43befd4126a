"""Train the offline backbone on SkillSpan train.json and evaluate on dev.json.

Prints the nesting policy's cost, training time, and per-label dev figures: seqeval strict
and default mode on raw argmax tags (comparable with transformers' run_ner), strict on
constrained (viterbi) decoding, and exact character-span F1 against the flattened gold and
against all gold spans (nested ones included).

Run it under the heavy-job lock (see docs/training.md):
    flock /tmp/skillloop-heavy.lock .venv/bin/python benchmarks/train_skillspan.py
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import fields
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = ROOT.parent / "shared" / "data" / "skillspan"
LABELS = ["Skill", "Knowledge"]


def main() -> int:
    from training.datasets import all_spans, dropped_by_label, read_documents
    from training.decoding import decode
    from training.evaluate import evaluate_predictions, span_scores
    from training.finetune import TrainConfig, train, word_probs
    from training.text import tag_names, tags_to_spans, words

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=ROOT / "state" / "models" / "skillspan-minilm")
    parser.add_argument("--base", default=None, help="start checkpoint (default: backbone)")
    parser.add_argument("--train-limit", type=int, default=None, help="first N train postings")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--no-progress", action="store_true")
    for f in fields(TrainConfig):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    overrides = {f.name: getattr(args, f.name) for f in fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in overrides.items() if v is not None})

    train_docs = read_documents(args.data / "train.json")[: args.train_limit]
    dev_docs = read_documents(args.data / "dev.json")
    print(f"train {len(train_docs)} postings, dev {len(dev_docs)} postings")
    for name, docs in (("train", train_docs), ("dev", dev_docs)):
        for label, c in dropped_by_label(docs).items():
            share = c["dropped"] / c["gold"] if c["gold"] else 0.0
            print(f"nesting policy on {name}: {label} {c['dropped']} of {c['gold']} "
                  f"gold spans dropped ({share:.1%})")  # fmt: skip
    print(f"config: {config}")

    result = train(
        args.base, train_docs, LABELS, args.out, dev_docs=dev_docs, config=config,
        progress=not args.no_progress,
    )  # fmt: skip
    print(f"training: {result.seconds:.0f} s total ({result.timings}), "
          f"{result.epochs_run} epochs run, best epoch {result.best_epoch}, "
          f"{result.n_windows} windows; torch threads {config.num_threads}")  # fmt: skip
    print("loss per epoch:", [round(x, 4) for x in result.losses])
    print("dev strict F1 per epoch:", [round(x, 4) for x in result.dev_f1])

    from training import checkpoint

    loaded = checkpoint.load(args.out, LABELS)
    tags = tag_names(LABELS)
    started = time.perf_counter()
    probs = word_probs(
        loaded.model, loaded.tokenizer, [d.text for d in dev_docs], len(tags), config
    )
    predict_seconds = time.perf_counter() - started
    figures: dict = {"config": vars(config), "train": vars(result) | {"path": str(args.out)}}
    for method in ("argmax", "viterbi"):
        tag_lists = [decode(p, tags, method) for p in probs]
        spans = [
            tags_to_spans(t, words(d.text), d.text)
            for t, d in zip(tag_lists, dev_docs, strict=True)
        ]
        report = evaluate_predictions(dev_docs, spans, LABELS, predicted_tag_lists=tag_lists)
        full = span_scores([all_spans(d) for d in dev_docs], spans, LABELS)
        print(f"\n== dev, {method} decoding ==")
        print(report.table())
        print("char-span F1 against all gold spans (nested included): "
              + ", ".join(f"{k} {v.f1:.3f}" for k, v in full.items()))  # fmt: skip
        figures[method] = report.to_dict() | {
            "char_span_all_gold": {k: v.to_dict() for k, v in full.items()}
        }
    print(f"\ndev prediction: {len(dev_docs)} postings in {predict_seconds:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
