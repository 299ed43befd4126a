"""Label layers against the flat tagger on SkillSpan: train both on train.json, score both
on dev.json per layer against the full gold (nested spans included).

The flat tagger learns the flattened gold (a Knowledge span inside a Skill span is
dropped, about 5% of Knowledge spans) and its predictions are split by label; the layered
tagger (`training.layers`: one head and CRF per layer) learns and predicts both layers.
Same recipe for both (the TrainConfig defaults, or the flags given), same seed.

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


def per_layer_scores(tagger, dev_docs) -> dict:
    """Strict entity and exact char-span F1 per layer against its full gold."""
    from training.evaluate import EVAL_CHUNK, OVERALL, evaluate_predictions
    from training.layers import layer_documents

    predictions = []
    for i in range(0, len(dev_docs), EVAL_CHUNK):
        predictions += tagger.predict([d.text for d in dev_docs[i : i + EVAL_CHUNK]])
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


def main() -> int:
    from training.cpu import cpu_info
    from training.datasets import dropped_by_label, read_documents
    from training.finetune import train
    from training.tagger import Tagger
    from training.train_config import TrainConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=ROOT / "state" / "models" / "layers-bench")
    parser.add_argument("--train-limit", type=int, default=None, help="first N train postings")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    print(cpu_info().line())
    train_docs = read_documents(args.data / "train.json")[: args.train_limit]
    dev_docs = read_documents(args.data / "dev.json")
    print(f"train {len(train_docs)} postings, dev {len(dev_docs)} postings")
    for label, c in dropped_by_label(dev_docs).items():
        print(f"dev {label}: {c['gold']} gold spans, {c['dropped']} nested in another layer's")
    figures: dict = {"cpu": cpu_info().as_dict()}
    for name, layers in (("flat", []), ("layered", LAYERS)):
        options = {"seed": args.seed, "num_threads": args.threads, "layers": layers}
        if args.epochs:
            options["epochs"] = args.epochs
        config = TrainConfig(**options)
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        result = train(
            None,
            train_docs,
            LABELS,
            args.out / name,
            dev_docs=dev_docs,
            config=config,
            progress=not args.no_progress,
        )
        seconds = time.perf_counter() - started
        tagger = Tagger.load(args.out / name, LABELS, quantize=False)
        scores = per_layer_scores(tagger, dev_docs)
        figures[name] = {
            "scores": scores,
            "seconds": round(seconds, 1),
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
            "load_before": load_before,
            "load_after": os.getloadavg()[0],
        }
        print(
            f"{name}: {seconds:.0f} s, {result.epochs_run} epochs (best {result.best_epoch}), "
            f"load {load_before:.1f} -> {os.getloadavg()[0]:.1f}"
        )
    print("\ndev, each layer against its full gold (fp32, viterbi):")
    heads = ("layer", "flat strict", "layered strict", "flat char", "layered char")
    print(f"{heads[0]:<10} {heads[1]:>12} {heads[2]:>15} {heads[3]:>10} {heads[4]:>13}")
    for layer in figures["flat"]["scores"]:
        flat, layered = figures["flat"]["scores"][layer], figures["layered"]["scores"][layer]
        print(
            f"{layer:<10} {flat['strict_f1']:>12.3f} {layered['strict_f1']:>15.3f} "
            f"{flat['char_f1']:>10.3f} {layered['char_f1']:>13.3f}"
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
