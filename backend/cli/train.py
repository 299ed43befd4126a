"""`skillloop train`: fine-tune a tagger on labelled documents (SkillSpan .json, .conll,
.jsonl, read by training.datasets.read_documents)."""

from __future__ import annotations

import argparse
from pathlib import Path

from backend.cli.options import (
    add_label_options,
    check_labels,
    parse_label_map,
)


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="fine-tune a tagger on labelled documents")
    p.add_argument("--data", required=True, type=Path, help="training data (.json/.conll/.jsonl)")
    p.add_argument("--dev", type=Path, help="dev data for early stopping")
    p.add_argument("--out", required=True, type=Path, help="folder for the new checkpoint")
    p.add_argument("--base", default=None, help="checkpoint folder or hub name (default: backbone)")
    add_label_options(p)
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float, dest="learning_rate")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--max-tokens", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--patience", type=int)
    p.add_argument("--threads", type=int, dest="num_threads")
    p.add_argument(
        "--crf",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a CRF over the word tags, trained with the encoder (default on)",
    )
    p.add_argument(
        "--dev-every-epoch",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="score --dev after every epoch and keep the best (default); --no-dev-every-epoch "
        "scores it once, after the last epoch, and keeps that one (faster on slow CPUs)",
    )
    p.add_argument(
        "--layers",
        nargs="+",
        metavar="LAYER",
        help="label layers whose spans may overlap, one head each (training.layers): "
        "labels joined by '+' per layer, e.g. --layers Skill Knowledge",
    )
    p.add_argument(
        "--encoder-layers",
        type=int,
        metavar="K",
        help="a smaller student: keep only the base's lowest K encoder layers (training."
        "student; MiniLM's lower 3 predict about 1.6x faster); default all",
    )
    p.add_argument(
        "--teachers",
        type=int,
        metavar="N",
        help="distil: first train N teachers from --base (seeds seed+1..), then the served "
        "model on their averaged per-word tag probabilities (training.distill)",
    )
    p.add_argument(
        "--teacher",
        action="append",
        dest="teacher_checkpoints",
        metavar="PATH",
        help="an existing checkpoint folder to distil from (repeatable; holds the labels)",
    )
    p.add_argument(
        "--teacher-base",
        action="append",
        dest="teacher_bases",
        metavar="NAME",
        help="train one more teacher from this backbone or checkpoint (repeatable)",
    )
    p.add_argument(
        "--distil-weight",
        type=float,
        help="the soft loss's share of the loss, within [0, 1] (default 0.5)",
    )
    p.add_argument(
        "--calibration-share",
        type=float,
        help="without --dev: the share of training posts held out to fit the span-score "
        "temperature on (default: training.calibration.CALIBRATION_SHARE, a tenth; 0: serve "
        "unscaled scores)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=train_command)


def train_command(args) -> int:
    from training.calibration import CALIBRATION_SHARE, calibrate_checkpoint, plan_calibration
    from training.datasets import labels_of, read_documents
    from training.distill import check_distillation, train
    from training.text import check_layers
    from training.train_config import TrainConfig
    from training.windows import WindowConfig

    train_docs = read_documents(args.data, args.columns)
    dev_docs = read_documents(args.dev, args.columns) if args.dev else None
    layers = [layer.split("+") for layer in args.layers or []]
    # a layered file's nested spans are not in labels_of's flattened view: the layers name all
    labels = args.labels or [x for layer in layers for x in layer] or labels_of(train_docs)
    if not labels:
        raise ValueError(f"{args.data} holds no labelled spans: nothing to learn")
    check_labels(train_docs, labels, str(args.data))
    if dev_docs is not None:
        check_labels(dev_docs, labels, str(args.dev))
    options = (
        "epochs",
        "learning_rate",
        "batch_size",
        "seed",
        "patience",
        "dev_every_epoch",
        "num_threads",
        "crf",
        "encoder_layers",
        "teachers",
        "teacher_checkpoints",
        "teacher_bases",
        "distil_weight",
    )
    share = CALIBRATION_SHARE if args.calibration_share is None else args.calibration_share
    if not 0 <= share < 1:
        raise ValueError(f"--calibration-share must be in [0, 1), got {share}")
    given = {k: getattr(args, k) for k in options if getattr(args, k) is not None}
    if args.max_tokens is not None:  # the window's, with the default stride
        given["window"] = WindowConfig(max_tokens=args.max_tokens)
    config = TrainConfig(**given)
    if layers:
        config.layers = check_layers(layers, labels)
    check_distillation(config)
    plan = plan_calibration(train_docs, dev_docs, share, config.seed)
    label_map = parse_label_map(args.label_map)
    result = train(
        args.base,
        plan.train,
        labels,
        args.out,
        dev_docs=dev_docs,
        config=config,
        label_map=label_map,
        progress=not args.no_progress,
    )
    dev = "" if result.best_dev_f1 is None else f", dev entity F1 {result.best_dev_f1:.3f}"
    print(
        f"saved {result.path} (labels {labels}; {result.epochs_run} epochs, best epoch "
        f"{result.best_epoch}{dev}; {result.seconds:.0f} s)"
    )
    for k, teacher in enumerate(result.teachers, start=1):
        f1 = teacher.get("dev_f1")
        score = "" if f1 is None else f", dev entity F1 {f1:.3f}"
        print(f"teacher {k}: {teacher['path']}{score}")
    if plan.held:  # every model it writes serves calibrated span scores (docs/calibration.md)
        fit = calibrate_checkpoint(result.path, labels, plan.held, label_map or None)
        temperature = fit.get("temperatures") or [fit["temperature"]]  # one per label layer
        print(
            f"span scores calibrated on {plan.source}: temperature "
            f"{', '.join(f'{t:.2f}' for t in temperature)}, "
            f"ECE {fit['ece_before']:.3f} -> {fit['ece_after']:.3f}"
        )
    else:
        print("span scores not calibrated (no dev data and too few posts to hold out)")
    return 0
