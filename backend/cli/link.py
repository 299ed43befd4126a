"""`skillloop link`: spans to taxonomy entries, out of the loop, and the options that
`skillloop predict --link` shares.

Input JSONL, one object per line, any of:
    {"span": "K8s"}                                  a bare skill phrase
    {"text": "...", "spans": [{"start", "end", ...}]}  spans of a text (linked in context)
    {"text": "..."}                                  tagged first with --model, else the
                                                     whole text is linked as one phrase
Output: the same rows, each span with taxonomy_id, taxonomy_label, link_score (null for
"no match") and link_candidates (the top k with scores).

With --ray-address the same rows come from JSONL and Parquet files (a glob or a folder)
and go to an output folder on Ray (backend/corpus/link.py, docs/ray.md).
"""

from __future__ import annotations

import argparse
import json

from backend.cli.corpus_options import add_block_rows_option, corpus_job
from backend.cli.options import add_link_options, model_labels, open_linker, open_stream
from training.datasets import jsonl_objects


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("link", help="link spans to a skills taxonomy (JSONL in and out)")
    p.add_argument("--input", default="-", help="JSONL: span, or text [+ spans] (- = stdin)")
    p.add_argument("--output", default="-", help="JSONL output (- = stdout)")
    p.add_argument("--model", help="a tagger checkpoint to find spans in rows with text only")
    add_link_options(p)
    p.add_argument(
        "--ray-address",
        metavar="local|auto|HOST:PORT|ray://HOST:PORT",
        help="link a corpus on Ray (docs/ray.md): --input JSONL or Parquet files, a glob or a "
        "folder; --output a folder (linked.jsonl, posts/ and spans/ Parquet), resumable; "
        "with ray:// the job runs on the cluster, the paths are the cluster nodes'",
    )
    p.add_argument("--workers", type=int, help="with --ray-address: Ray actors (default: CPUs)")
    add_block_rows_option(p)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=link_command)


def read_link_rows(handle, name: str) -> list[dict]:
    from backend.corpus.link import link_row_problem

    rows = []
    for number, row in jsonl_objects(handle, name):
        problem = link_row_problem(row)
        if problem:
            raise ValueError(f"{name}:{number}: {problem}")
        rows.append(row)
    return rows


def link_command(args: argparse.Namespace) -> int:
    from backend.corpus.link import apply_links, link_document, needs_tagging
    from training.linker import link_spans

    if args.ray_address:
        return _link_on_ray(args)
    if args.workers is not None:
        raise ValueError("--workers takes effect with --ray-address (link runs in this process)")
    with open_stream(args.input, "r") as handle:
        rows = read_link_rows(handle, args.input)
    untagged = [r for r in rows if needs_tagging(r)]
    if untagged and args.model:
        tag_rows(args, untagged)
    linker, top_k = open_linker(args)
    links = link_spans(linker, [link_document(row) for row in rows], top_k)
    with open_stream(args.output, "w") as out:
        for row, doc_links in zip(rows, links, strict=True):
            apply_links(row, doc_links)
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return 0


def model_spec(folder: str):
    """The tagger `--model` names, loaded as `skillloop link` always has (its own labels,
    the default precision)."""
    from training.tagger_spec import TaggerSpec

    return TaggerSpec(folder, model_labels(folder, {}), {})


def _link_on_ray(args: argparse.Namespace) -> int:
    from backend.corpus.link import run_link

    job = corpus_job(args)
    spec = model_spec(args.model) if args.model else None
    linker, top_k = open_linker(args)
    run_link(job, linker, top_k, spec)
    return 0


def tag_rows(args: argparse.Namespace, rows: list[dict]) -> None:
    """Spans for rows with text only, from the tagger --model names (labels as it knows)."""
    from training.datasets import span_dict

    tagger = model_spec(args.model).load()
    for row, prediction in zip(rows, tagger.predict([r["text"] for r in rows]), strict=True):
        row["spans"] = [span_dict(s) for s in prediction.spans]
