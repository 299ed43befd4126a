"""Label layers against the flat tagger on SkillSpan: train both on train.json, score both
on dev.json per layer against the full gold (nested spans included).

The flat tagger learns the flattened gold (a Knowledge span inside a Skill span is
dropped, about 5% of Knowledge spans) and its predictions are split by label; the layered
tagger (`training.layers`: one head and CRF per layer) learns and predicts both layers.
Same recipe for both (the TrainConfig defaults, or the flags given), same seed.

Flags change the recipe of both: `--epochs`, `--lr`, `--no-dev-every-epoch` (dev scored
only after the last epoch); `--score-only` scores the models already in `--out`. Also
printed: how many dev spans nested in another layer's each model predicts exactly.

Prints the CPU (the figures are F1, not speed; timings are of a shared machine unless the
load average says otherwise):
    flock /work/heavy.lock nice -n 5 .venv/bin/python -m benchmarks.layers_skillspan
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from benchmarks.common import ROOT

DATA = ROOT.parent / "shared" / "data" / "skillspan"
LABELS = ["Skill", "Knowledge"]
LAYERS = [["Skill"], ["Knowledge"]]


def predict_all(tagger, dev_docs) -> list:
    from training.evaluate import EVAL_CHUNK

    predictions = []
    for i in range(0, len(dev_docs), EVAL_CHUNK):
        predictions += tagger.predict([d.text for d in dev_docs[i : i + EVAL_CHUNK]])
    return predictions


def nested_recovered(dev_docs, predictions) -> dict:
    """Per label: gold spans the nesting policy drops (nested in another layer's span)
    and how many of them the model predicts exactly (same characters, same label)."""
    out: dict = {}
    for doc, prediction in zip(dev_docs, predictions, strict=True):
        predicted = {(s.start, s.end, s.label) for s in prediction.spans}
        for d in doc.meta.get("dropped", []):
            counts = out.setdefault(d["label"], {"nested": 0, "recovered": 0})
            counts["nested"] += 1
            counts["recovered"] += (d["start"], d["end"], d["label"]) in predicted
    return out


def per_layer_scores(dev_docs, predictions) -> dict:
    """Strict entity and exact char-span F1 per layer against its full gold."""
    from training.evaluate import OVERALL, evaluate_predictions
    from training.layers import layer_documents

    out = {}
    for layer in LAYERS:
        report = evaluate_predictions(
            layer_documents(dev_docs, layer),
            [[s for s in p.spans if s.label in layer] for p in predictions],
            labels=layer,
        )
        out["+".join(layer)] = {
            "strict_f1": round(report.entity[OVERALL].f1, 4),
            "char_f1": round(report.char[OVERALL].f1, 4),
            "support": report.entity[OVERALL].support,
            "predicted": report.entity[OVERALL].predicted,
        }
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=ROOT / "state" / "models" / "layers-bench")
    parser.add_argument("--train-limit", type=int, default=None, help="first N train postings")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None, help="learning rate (TrainConfig's)")
    parser.add_argument(
        "--no-dev-every-epoch",
        action="store_true",
        help="score dev only after the last epoch (no early stopping)",
    )
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--score-only",
        action="store_true",
        help="train nothing: score the flat and layered models already in --out",
    )
    parser.add_argument(
        "--taggers",
        nargs="+",
        choices=("flat", "layered"),
        default=["flat", "layered"],
        help="which of the two to train; the other is scored from --out (a run that stopped "
        "after the flat model resumes with --taggers layered)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def train_config(args: argparse.Namespace, layers: list[list[str]]):
    """The TrainConfig both taggers train with: the defaults, changed only by the flags."""
    from training.train_config import TrainConfig

    options: dict = {"seed": args.seed, "num_threads": args.threads, "layers": layers}
    if args.epochs:
        options["epochs"] = args.epochs
    if args.lr:
        options["learning_rate"] = args.lr
    if args.no_dev_every_epoch:
        options["dev_every_epoch"] = False
    return TrainConfig(**options)


def main() -> int:
    from training.cpu import cpu_info
    from training.datasets import dropped_by_label, read_documents
    from training.finetune import train
    from training.tagger import Tagger

    args = build_parser().parse_args()
    logging.basicConfig(level=logging.WARNING)

    print(cpu_info().line())
    train_docs = read_documents(args.data / "train.json")[: args.train_limit]
    dev_docs = read_documents(args.data / "dev.json")
    print(f"train {len(train_docs)} postings, dev {len(dev_docs)} postings")
    for label, c in dropped_by_label(dev_docs).items():
        print(f"dev {label}: {c['gold']} gold spans, {c['dropped']} nested in another layer's")
    figures: dict = {"cpu": cpu_info().as_dict()}
    for name, layers in (("flat", []), ("layered", LAYERS)):
        if (args.score_only or name not in args.taggers) and not (args.out / name).is_dir():
            raise SystemExit(f"no {name} model in {args.out} to score: train it (--taggers)")
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        figures[name] = {}
        if not args.score_only and name in args.taggers:
            result = train(
                None,
                train_docs,
                LABELS,
                args.out / name,
                dev_docs=dev_docs,
                config=train_config(args, layers),
                progress=not args.no_progress,
            )
            seconds = time.perf_counter() - started
            figures[name] = {
                "seconds": round(seconds, 1),
                "epochs_run": result.epochs_run,
                "best_epoch": result.best_epoch,
                "load_before": load_before,
                "load_after": os.getloadavg()[0],
            }
            print(
                f"{name}: {seconds:.0f} s, {result.epochs_run} epochs "
                f"(best {result.best_epoch}), load {load_before:.1f} -> {os.getloadavg()[0]:.1f}"
            )
        tagger = Tagger.load(args.out / name, LABELS, quantize=False)
        predictions = predict_all(tagger, dev_docs)
        figures[name]["scores"] = per_layer_scores(dev_docs, predictions)
        figures[name]["nested_recovered"] = nested_recovered(dev_docs, predictions)
    print("\ndev, each layer against its full gold (fp32, viterbi):")
    heads = ("layer", "flat strict", "layered strict", "flat char", "layered char")
    print(f"{heads[0]:<10} {heads[1]:>12} {heads[2]:>15} {heads[3]:>10} {heads[4]:>13}")
    for layer in figures["flat"]["scores"]:
        flat, layered = figures["flat"]["scores"][layer], figures["layered"]["scores"][layer]
        print(
            f"{layer:<10} {flat['strict_f1']:>12.3f} {layered['strict_f1']:>15.3f} "
            f"{flat['char_f1']:>10.3f} {layered['char_f1']:>13.3f}"
        )
    for name in ("flat", "layered"):
        for label, c in figures[name]["nested_recovered"].items():
            print(
                f"{name}: {c['recovered']} of {c['nested']} nested {label} spans predicted "
                f"exactly ({c['recovered'] / c['nested']:.1%})"
            )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
