"""`skillloop evaluate`: score a model on labelled documents."""

from __future__ import annotations

import json
from pathlib import Path

from backend.cli.options import (
    add_label_options,
    check_labels,
    load_tagger,
)


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="score a model on labelled documents")
    p.add_argument("--model", required=True, help="checkpoint folder")
    p.add_argument("--data", required=True, type=Path, help="gold data (.json/.conll/.jsonl)")
    p.add_argument("--json", type=Path, help="also write the figures as JSON here")
    add_label_options(p)
    p.add_argument("--fp32", action="store_true", help="full fp32 precision (no int8/bf16)")
    p.add_argument("--max-tokens", type=int, help="window length (default: the tagger's)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=evaluate_command)


def evaluate_command(args) -> int:
    from training.datasets import read_documents
    from training.evaluate import evaluate

    docs = read_documents(args.data, args.columns)
    tagger = load_tagger(args)
    check_labels(docs, tagger.labels, str(args.data))
    report = evaluate(tagger, docs, progress=not args.no_progress)
    print(f"{tagger!r} on {args.data} ({len(docs)} documents)")
    if tagger.layered is not None:
        print(f"label layers {tagger.layered.layers}: each scored against its full gold")
    print(report.table())
    if args.json:
        args.json.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
