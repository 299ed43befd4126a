"""`skillloop predict`: tag texts, JSONL in, spans (or Label Studio tasks) out."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from backend.cli.corpus_options import add_block_rows_option, corpus_job
from backend.cli.options import (
    add_label_options,
    add_link_options,
    open_linker,
    open_stream,
    tagger_spec,
)
from backend.service.config import DEFAULT_MAX_TEXT_CHARS, max_text_chars_from_env

PREDICT_CHUNK = 32  # texts per predict call: the progress bar moves, memory stays bounded


def register(subparsers) -> None:
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
    p.add_argument(
        "--ray-address",
        metavar="local|auto|HOST:PORT|ray://HOST:PORT",
        help="tag a corpus on Ray (docs/ray.md): --input a JSONL or Parquet file, a glob or "
        "a folder; --output a folder of Parquet (posts/, spans/), resumable; --workers N "
        "actors (default: the cluster's CPUs); with ray:// the job runs on the cluster, "
        "the paths are the cluster nodes'",
    )
    add_block_rows_option(p)
    add_label_options(p)
    p.add_argument("--fp32", action="store_true", help="full fp32 precision (no int8/bf16)")
    p.add_argument(
        "--precision",
        choices=[
            "auto",
            "fp32",
            "bf16",
            "int8",
            "onnx",
            "onnx-int8",
            "onnx-fused",
            "onnx-fused-int8",
        ],
        default="auto",
        help="auto: the fastest measured for this CPU class (docs/tagger.md)",
    )
    p.add_argument("--max-tokens", type=int, help="window length (default: the tagger's)")
    p.add_argument("--link", action="store_true", help="link each span to a taxonomy entry")
    add_link_options(p)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=predict_command)


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

    from tqdm.auto import tqdm

    from backend.bulk_predict import StudioWriter, jsonl_row, predict_chunks, studio_config
    from training.text import Document

    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    if args.ray_address:
        return _predict_on_ray(args)
    if same_file(args.input, args.output):
        raise ValueError(f"--output {args.output} is the --input file: it would be overwritten")
    limit = max_text_chars_from_env()  # the service's limit, the same variable
    with open_stream(args.input, "r") as handle:
        rows = read_texts(handle, args.input, limit)
    cut = sum("text_cut_at" in row for row in rows)
    if cut:
        print(f"{cut} texts read up to their first {limit} characters", file=sys.stderr)
    spec = tagger_spec(args)
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
        open_stream(args.output, "w") as out,
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


def _predict_on_ray(args) -> int:
    from dataclasses import replace

    from backend.bulk_predict import studio_config
    from backend.corpus.predict import run_predict

    job = corpus_job(args)
    spec = tagger_spec(args)
    linker, top_k = _linker_if_asked(args)
    studio = args.format == "label-studio"
    config = studio_config(args.labeling_config, spec.labels) if studio else None
    job = replace(job, max_chars=max_text_chars_from_env(), studio_config=config)
    run_predict(spec, job, linker, top_k)
    return 0


def _linker_if_asked(args):
    if not args.link:
        if args.taxonomy or args.linker or args.project:
            raise ValueError("--taxonomy, --linker and --project take effect with --link")
        return None, 0
    return open_linker(args)


def _links(linker, predictions, top_k: int) -> list[list[dict]]:
    """Per prediction, per span: the link fields (empty dicts when not linking)."""
    if linker is None:
        return [[{} for _ in p.spans] for p in predictions]
    from training.linker import link_fields, link_spans

    return [[link_fields(x) for x in doc] for doc in link_spans(linker, predictions, top_k)]
