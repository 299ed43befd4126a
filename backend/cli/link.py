"""`skillloop link`: spans to taxonomy entries, out of the loop, and the options that
`skillloop predict --link` shares.

Input JSONL, one object per line, any of:
    {"span": "K8s"}                                  a bare skill phrase
    {"text": "...", "spans": [{"start", "end", ...}]}  spans of a text (linked in context)
    {"text": "..."}                                  tagged first with --model, else the
                                                     whole text is linked as one phrase
Output: the same rows, each span with taxonomy_id, taxonomy_label, link_score (null for
"no match") and link_candidates (the top k with scores).
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from backend.cli.options import add_link_options, model_labels, open_linker, open_stream
from training.datasets import jsonl_objects

if TYPE_CHECKING:
    pass


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("link", help="link spans to a skills taxonomy (JSONL in and out)")
    p.add_argument("--input", default="-", help="JSONL: span, or text [+ spans] (- = stdin)")
    p.add_argument("--output", default="-", help="JSONL output (- = stdout)")
    p.add_argument("--model", help="a tagger checkpoint to find spans in rows with text only")
    add_link_options(p)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=link_command)


def read_link_rows(handle, name: str) -> list[dict]:
    rows = []
    for number, row in jsonl_objects(handle, name):
        if isinstance(row.get("span"), str):
            rows.append(row)
            continue
        text = row.get("text")
        if not isinstance(text, str):
            raise ValueError(f'{name}:{number}: each line needs a "span" or a "text" string')
        spans = row.get("spans")
        if spans is not None:
            if not isinstance(spans, list):
                raise ValueError(f'{name}:{number}: "spans" must be a list')
            for span in spans:
                if not _valid_span(span, len(text)):
                    raise ValueError(
                        f"{name}:{number}: each span needs integer start < end within the text"
                    )
        rows.append(row)
    return rows


def _valid_span(span, length: int) -> bool:
    if not isinstance(span, dict):
        return False
    start, end = span.get("start"), span.get("end")
    return isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= length


def link_command(args: argparse.Namespace) -> int:
    from training.linker import link_fields, link_spans
    from training.text import Document, Span

    with open_stream(args.input, "r") as handle:
        rows = read_link_rows(handle, args.input)
    untagged = [r for r in rows if "span" not in r and r.get("spans") is None]
    if untagged and args.model:
        tag_rows(args, untagged)
    linker, top_k = open_linker(args)
    docs = []
    for row in rows:
        if "span" in row:
            text = row["span"]
            docs.append(Document(text, [Span(0, len(text), "", text)]))
        elif row.get("spans") is None:  # no tagger: the whole text is the phrase
            docs.append(Document(row["text"], [Span(0, len(row["text"]), "", row["text"])]))
        else:
            docs.append(
                Document(row["text"], [Span(s["start"], s["end"], "") for s in row["spans"]])
            )
    links = link_spans(linker, docs, top_k)
    with open_stream(args.output, "w") as out:
        for row, doc_links in zip(rows, links, strict=True):
            if "span" in row:
                row |= link_fields(doc_links[0])
            elif row.get("spans") is None:
                row["text_link"] = link_fields(doc_links[0])
            else:
                for span, link in zip(row["spans"], doc_links, strict=True):
                    span.setdefault("text", row["text"][span["start"] : span["end"]])
                    span |= link_fields(link)
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return 0


def tag_rows(args: argparse.Namespace, rows: list[dict]) -> None:
    """Spans for rows with text only, from the tagger --model names (labels as it knows)."""
    from training.datasets import span_dict
    from training.tagger import Tagger

    tagger = Tagger.load(args.model, model_labels(args.model, {}), {})
    for row, prediction in zip(rows, tagger.predict([r["text"] for r in rows]), strict=True):
        row["spans"] = [span_dict(s) for s in prediction.spans]
