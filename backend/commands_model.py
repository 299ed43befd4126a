"""`skillloop train`, `skillloop predict` and `skillloop evaluate`: the tagger from the
command line. Data files are read by `training.datasets.read_documents` (SkillSpan .json,
.conll, .jsonl)."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager
from pathlib import Path

from backend.settings import DEFAULT_MAX_TEXT_CHARS, max_text_chars_from_env

PREDICT_CHUNK = 32  # texts per predict call: the progress bar moves, memory stays bounded


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="fine-tune a tagger on labelled documents")
    p.add_argument("--data", required=True, type=Path, help="training data (.json/.conll/.jsonl)")
    p.add_argument("--dev", type=Path, help="dev data for early stopping")
    p.add_argument("--out", required=True, type=Path, help="folder for the new checkpoint")
    p.add_argument("--base", default=None, help="checkpoint folder or hub name (default: backbone)")
    _label_options(p)
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
        "--calibration-share",
        type=float,
        help="without --dev: the share of training posts held out to fit the span-score "
        "temperature on (default: training.calibration.CALIBRATION_SHARE, a tenth; 0: serve "
        "unscaled scores)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=train_command)

    p = subparsers.add_parser("predict", help="tag texts: JSONL {text, id?} in, spans out")
    p.add_argument("--model", required=True, help="checkpoint folder")
    p.add_argument("--input", default="-", help="JSONL file with a 'text' per line (- = stdin)")
    p.add_argument("--output", default="-", help="output file (- = stdout)")
    p.add_argument(
        "--format",
        choices=["jsonl", "label-studio"],
        default="jsonl",
        help="jsonl: {id?, text, spans} per line; label-studio: a task import JSON list "
        "with predictions",
    )
    p.add_argument(
        "--labeling-config",
        help="label-studio format: the project's labeling config XML, whose names the "
        "regions use (default: one built for the model's labels, text in data.text)",
    )
    p.add_argument(
        "--workers",
        type=int,
        help="N spawned worker processes, one torch thread each, input order kept "
        "(default: this process)",
    )
    _label_options(p)
    p.add_argument("--fp32", action="store_true", help="full fp32 precision (no int8/bf16)")
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "int8", "onnx", "onnx-int8"],
        default="auto",
        help="auto: the fastest measured for this CPU class (docs/tagger.md)",
    )
    p.add_argument("--max-tokens", type=int, help="window length (default: the tagger's)")
    p.add_argument("--link", action="store_true", help="link each span to a taxonomy entry")
    from backend.commands_link import add_link_options

    add_link_options(p)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=predict_command)

    p = subparsers.add_parser("evaluate", help="score a model on labelled documents")
    p.add_argument("--model", required=True, help="checkpoint folder")
    p.add_argument("--data", required=True, type=Path, help="gold data (.json/.conll/.jsonl)")
    p.add_argument("--json", type=Path, help="also write the figures as JSON here")
    _label_options(p)
    p.add_argument("--fp32", action="store_true", help="full fp32 precision (no int8/bf16)")
    p.add_argument("--max-tokens", type=int, help="window length (default: the tagger's)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=evaluate_command)


def _label_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--labels", nargs="+", help="project labels (default: from the data/model)")
    p.add_argument(
        "--label-map",
        nargs="+",
        default=[],
        metavar="TAG=LABEL",
        help="model tag type -> project label, e.g. BUS=Business",
    )
    p.add_argument("--columns", nargs="+", help="labels of bare B/I/O CoNLL tag columns")


def parse_label_map(items: list[str]) -> dict[str, str]:
    mapping = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"--label-map takes TAG=LABEL pairs, got {item!r}")
        mapping[key] = value
    return mapping


def model_labels(folder: str, label_map: dict[str, str]) -> list[str]:
    """A checkpoint's labels: from skillloop.json, else its tag types through `label_map`."""
    from training.checkpoint import read_metadata, resolve_source
    from training.text import split_tag

    path = Path(resolve_source(folder))
    meta = read_metadata(path)
    if meta.get("labels"):
        return list(meta["labels"])
    config = json.loads((path / "config.json").read_text())
    types = [split_tag(t)[1] for t in config.get("id2label", {}).values() if t != "O"]
    labels = [label_map.get(t, t) for t in dict.fromkeys(t for t in types if t)]
    if not labels:
        raise ValueError(f"{folder} has no tagging head: pass --labels")
    return labels


def check_labels(docs, labels: list[str], name: str) -> None:
    from training.datasets import labels_of

    unknown = sorted(set(labels_of(docs)) - set(labels))
    if unknown:
        raise ValueError(f"{name} has labels {unknown} that are not in {labels}")


def train_command(args) -> int:
    from training.calibration import CALIBRATION_SHARE, calibrate_checkpoint, plan_calibration
    from training.datasets import labels_of, read_documents
    from training.finetune import TrainConfig, train

    train_docs = read_documents(args.data, args.columns)
    dev_docs = read_documents(args.dev, args.columns) if args.dev else None
    labels = args.labels or labels_of(train_docs)
    if not labels:
        raise ValueError(f"{args.data} holds no labelled spans: nothing to learn")
    check_labels(train_docs, labels, str(args.data))
    if dev_docs is not None:
        check_labels(dev_docs, labels, str(args.dev))
    options = (
        "epochs",
        "learning_rate",
        "batch_size",
        "max_tokens",
        "seed",
        "patience",
        "num_threads",
        "crf",
    )
    share = CALIBRATION_SHARE if args.calibration_share is None else args.calibration_share
    if not 0 <= share < 1:
        raise ValueError(f"--calibration-share must be in [0, 1), got {share}")
    config = TrainConfig(**{k: getattr(args, k) for k in options if getattr(args, k) is not None})
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
    if plan.held:  # every model it writes serves calibrated span scores (docs/calibration.md)
        fit = calibrate_checkpoint(result.path, labels, plan.held, label_map or None)
        print(
            f"span scores calibrated on {plan.source}: temperature {fit['temperature']:.2f}, "
            f"ECE {fit['ece_before']:.3f} -> {fit['ece_after']:.3f}"
        )
    else:
        print("span scores not calibrated (no dev data and too few posts to hold out)")
    return 0


def _tagger_spec(args):
    from backend.bulk_predict import TaggerSpec

    label_map = parse_label_map(args.label_map)
    known = model_labels(args.model, label_map)
    labels = args.labels or known
    unknown = [label for label in labels if label not in known]
    if unknown:
        raise ValueError(
            f"the model {args.model} does not predict {unknown}; it knows {known} "
            "(map its tag types with --label-map TAG=LABEL)"
        )
    options = {} if args.max_tokens is None else {"max_tokens": args.max_tokens}
    options["precision"] = "fp32" if args.fp32 else getattr(args, "precision", "auto")
    return TaggerSpec(args.model, labels, label_map, options)


def _load_tagger(args):
    return _tagger_spec(args).load()


@contextmanager
def _open(name: str, mode: str):
    if name == "-":
        yield sys.stdin if mode == "r" else sys.stdout
        return
    if mode == "r" and not Path(name).is_file():
        raise FileNotFoundError(f"input file not found: {name}")
    with open(name, mode, encoding="utf-8") as handle:
        yield handle


def read_texts(handle, name: str, max_chars: int = DEFAULT_MAX_TEXT_CHARS) -> list[dict]:
    """The input's rows; a text longer than `max_chars` (the service's limit,
    SKILLLOOP_MAX_TEXT_CHARS) is read up to it and its row says `text_cut_at`, as /predict
    does: one 30 MB line must not take minutes and gigabytes."""
    from labeling.studio.tasks import lone_surrogates
    from training.datasets import jsonl_objects

    rows = []
    for number, row in jsonl_objects(handle, name):
        if not isinstance(row.get("text"), str):
            raise ValueError(f'{name}:{number}: each line needs a "text" string')
        if lone_surrogates(row["text"]):
            raise ValueError(f"{name}:{number}: the text holds a lone UTF-16 surrogate")
        if len(row["text"]) > max_chars:
            row = {**row, "text": row["text"][:max_chars], "text_cut_at": max_chars}
        rows.append(row)
    return rows


def same_file(a: str, b: str) -> bool:
    return a != "-" and b != "-" and Path(b).exists() and Path(a).resolve() == Path(b).resolve()


def predict_command(args) -> int:
    import time

    from tqdm.auto import tqdm

    from backend.bulk_predict import StudioWriter, jsonl_row, predict_chunks, studio_config
    from training.text import Document

    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    if same_file(args.input, args.output):
        raise ValueError(f"--output {args.output} is the --input file: it would be overwritten")
    limit = max_text_chars_from_env()  # the service's limit, the same variable
    with _open(args.input, "r") as handle:
        rows = read_texts(handle, args.input, limit)
    cut = sum("text_cut_at" in row for row in rows)
    if cut:
        print(f"{cut} texts read up to their first {limit} characters", file=sys.stderr)
    spec = _tagger_spec(args)
    linker, top_k = _linker_if_asked(args)
    if linker is not None and args.format != "jsonl":
        raise ValueError("--link writes its fields into JSONL spans: use --format jsonl")
    studio_format = args.format == "label-studio"
    config = studio_config(args.labeling_config, spec.labels) if studio_format else None
    chunks = [rows[i : i + PREDICT_CHUNK] for i in range(0, len(rows), PREDICT_CHUNK)]
    texts = [[r["text"] for r in chunk] for chunk in chunks]
    started = time.perf_counter()
    loaded_at: list[float] = []

    def on_load(message: str) -> None:
        loaded_at.append(time.perf_counter())
        print(f"predicting with {message}", file=sys.stderr, flush=True)

    version = precision = "?"
    with (
        _open(args.output, "w") as out,
        tqdm(
            total=len(rows),
            disable=args.no_progress,
            desc="predicting",
            unit="text",
            file=sys.stderr,
        ) as bar,
    ):
        studio = StudioWriter(out, config, spec.labels) if studio_format else None
        batches = predict_chunks(spec, texts, args.workers, on_load)
        for chunk, batch in zip(chunks, batches, strict=True):
            version, precision = batch.version, batch.precision
            docs = [Document(r["text"], t.spans) for r, t in zip(chunk, batch.results, strict=True)]
            links = _links(linker, docs, top_k)
            for row, tagged, span_links in zip(chunk, batch.results, links, strict=True):
                if studio is None:
                    out.write(jsonl_row(row, tagged, span_links) + "\n")
                else:
                    studio.write(row, tagged, batch.version)
            bar.update(len(chunk))
        if studio is not None:
            studio.close()
    seconds = time.perf_counter() - started
    since_load = time.perf_counter() - (loaded_at[0] if loaded_at else started)
    print(
        f"predicted {len(rows)} texts in {seconds:.1f} s ({since_load:.1f} s after loading): "
        f"model_version {version}, precision {precision}",
        file=sys.stderr,
    )
    return 0


def _linker_if_asked(args):
    if not args.link:
        if args.taxonomy or args.linker or args.project:
            raise ValueError("--taxonomy, --linker and --project take effect with --link")
        return None, 0
    from backend.commands_link import open_linker

    return open_linker(args)


def _links(linker, predictions, top_k: int) -> list[list[dict]]:
    """Per prediction, per span: the link fields (empty dicts when not linking)."""
    if linker is None:
        return [[{} for _ in p.spans] for p in predictions]
    from training.linker import link_fields, link_spans

    return [[link_fields(x) for x in doc] for doc in link_spans(linker, predictions, top_k)]


def evaluate_command(args) -> int:
    from training.datasets import read_documents
    from training.evaluate import evaluate

    docs = read_documents(args.data, args.columns)
    tagger = _load_tagger(args)
    check_labels(docs, tagger.labels, str(args.data))
    report = evaluate(tagger, docs, progress=not args.no_progress)
    print(f"{tagger!r} on {args.data} ({len(docs)} documents)")
    print(report.table())
    if args.json:
        args.json.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
