"""The demo's first round: time and held-out F1 of each option for a first model.

The first round trains on the project's gold posts (the held-out share frozen by
backend.loop.rounds, the same posts a real round holds out) and scores on the held-out ones.
Each variant changes only the [training] / [model] settings named in VARIANTS; `dict`
is no model at all: the training posts' gold phrases matched as a dictionary.

    nice -n 10 .venv/bin/python -m benchmarks.first_round \
        --project projects/linkedin-skills --out /tmp/first_round.json

Prints the CPU it ran on (model name, torch capability, bf16, threads) and one line per
variant; the JSON holds the same with per-label F1. Appends after each variant, so a
partial run keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from pathlib import Path

from benchmarks.common import run_benchmark

# name -> TrainConfig overrides ("freeze_layers" is applied here, see frozen_lower_layers)
VARIANTS: dict[str, dict] = {
    "e15-t256": {"epochs": 15, "max_tokens": 256, "stride": 64},  # the project's old default
    "e8-t256": {"epochs": 8, "max_tokens": 256, "stride": 64},
    "e5-t256": {"epochs": 5, "max_tokens": 256, "stride": 64},
    "e8-t128": {"epochs": 8, "max_tokens": 128, "stride": 32},
    "e5-t128": {"epochs": 5, "max_tokens": 128, "stride": 32},
    "e5-t256-lr2e-4-b4": {
        "epochs": 5,
        "max_tokens": 256,
        "stride": 64,
        "learning_rate": 2e-4,
        "batch_size": 4,
    },
    "e5-t128-lr2e-4-b4": {
        "epochs": 5,
        "max_tokens": 128,
        "stride": 32,
        "learning_rate": 2e-4,
        "batch_size": 4,
    },
    "e5-t128-lr2e-4-b4-freeze3": {
        "epochs": 5,
        "max_tokens": 128,
        "stride": 32,
        "learning_rate": 2e-4,
        "batch_size": 4,
        "freeze_layers": 3,
    },
    "e3-t128-lr3e-4-b4": {
        "epochs": 3,
        "max_tokens": 128,
        "stride": 32,
        "learning_rate": 3e-4,
        "batch_size": 4,
    },
    "e8-t256-freeze3": {"epochs": 8, "max_tokens": 256, "stride": 64, "freeze_layers": 3},
}


def frozen_lower_layers(n_layers: int):
    """Patch training.finetune's checkpoint loader so the embeddings and the first
    `n_layers` encoder layers get no gradients (a benchmark-only knob)."""
    import training.finetune as finetune

    original = finetune.checkpoint.load

    def load(*args, **kwargs):
        loaded = original(*args, **kwargs)
        encoder = loaded.model.base_model
        for param in encoder.embeddings.parameters():
            param.requires_grad = False
        for layer in encoder.encoder.layer[:n_layers]:
            for param in layer.parameters():
                param.requires_grad = False
        return loaded

    finetune.checkpoint.load = load
    return lambda: setattr(finetune.checkpoint, "load", original)


def dictionary_spans(phrases: dict[str, str], text: str):
    """Whole-word, case-sensitive matches of the phrases (first letter may be upper)."""
    from training.text import Span, resolve_overlaps, words

    offsets = words(text)
    starts, ends = {w[0] for w in offsets}, {w[1] for w in offsets}
    found = []
    for phrase, label in phrases.items():
        for variant in {phrase, phrase[:1].upper() + phrase[1:]}:
            for match in re.finditer(re.escape(variant), text):
                if match.start() in starts and match.end() in ends:
                    found.append(Span(match.start(), match.end(), label))
    kept, _ = resolve_overlaps(found)
    return kept


def run_dictionary(train_docs, heldout, labels) -> dict:
    from collections import Counter

    from training.evaluate import evaluate_predictions

    started = time.perf_counter()
    votes: dict[str, Counter] = {}
    for doc in train_docs:
        for span in doc.spans:
            votes.setdefault(doc.text[span.start : span.end], Counter())[span.label] += 1
    phrases = {text: counts.most_common(1)[0][0] for text, counts in votes.items()}
    predicted = [dictionary_spans(phrases, doc.text) for doc in heldout]
    report = evaluate_predictions(heldout, predicted, labels)
    return {"train_s": 0.0, "eval_s": round(time.perf_counter() - started, 2), **scores(report)}


def scores(report) -> dict:
    entity = report.to_dict()["entity_strict"]
    return {
        "heldout_f1": round(report.f1, 4),
        "per_label_f1": {k: v.get("f1") for k, v in entity.items()},
    }


def run_model(project, train_docs, heldout, overrides: dict, threads: int) -> dict:
    import torch

    from training.evaluate import evaluate
    from training.finetune import train
    from training.tagger import Tagger

    overrides = dict(overrides)
    freeze = overrides.pop("freeze_layers", 0)
    undo = frozen_lower_layers(freeze) if freeze else None
    torch.set_num_threads(threads)
    config = project.train_config(num_threads=threads, **overrides)
    labels = project.label_values
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "model"
            started, cpu_started = time.perf_counter(), time.process_time()
            result = train(
                project.model_base(),
                train_docs,
                labels,
                out,
                config=config,
                label_map=project.model.label_map or None,
            )
            train_s = time.perf_counter() - started
            train_cpu_s = time.process_time() - cpu_started
            started = time.perf_counter()
            tagger = Tagger.load(str(out), labels, window=config.window)
            report = evaluate(tagger, heldout)
            eval_s = time.perf_counter() - started
    finally:
        if undo:
            undo()
    return {
        "train_s": round(train_s, 1),
        "train_cpu_s": round(train_cpu_s, 1),  # CPU seconds over all threads
        "eval_s": round(eval_s, 1),
        "windows": result.n_windows,
        "epochs": result.epochs_run,
        **scores(report),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--project", default="projects/linkedin-skills")
    parser.add_argument("--variants", nargs="*", default=["dict", *VARIANTS])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    import torch

    from backend.loop.heldout import split_heldout
    from labeling.project import load_project
    from training.cpu import cpu_info

    project = load_project(args.project)
    train_docs, heldout = split_heldout(project.gold(), project.retrain.heldout_share)
    torch.set_num_threads(args.threads)
    info = cpu_info()
    print(info.line(), flush=True)
    cpu = info.as_dict()
    print(f"{len(train_docs)} training posts, {len(heldout)} held out", flush=True)
    output = {"cpu": cpu, "train_posts": len(train_docs), "heldout_posts": len(heldout)}
    output["variants"] = {}
    if args.out.is_file():  # a later run adds its variants to what earlier runs measured
        output["variants"] = json.loads(args.out.read_text()).get("variants", {})
    for name in args.variants:
        load_before = [round(x, 2) for x in os.getloadavg()]
        if name == "dict":
            row = run_dictionary(train_docs, heldout, project.label_values)
        else:
            row = run_model(project, train_docs, heldout, VARIANTS[name], args.threads)
        row["load_average_before"] = load_before
        row["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        row["settings"] = VARIANTS.get(name, {"dictionary": "training posts' gold phrases"})
        output["variants"][name] = row
        total = row["train_s"] + row["eval_s"]
        print(
            f"{name:22s} round {total:7.1f} s (train {row['train_s']} s, eval {row['eval_s']} s)"
            f"  held-out F1 {row['heldout_f1']:.3f}  load {load_before[0]}->"
            f"{row['load_average_after'][0]}",
            flush=True,
        )
        args.out.write_text(json.dumps(output, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    run_benchmark(main)
