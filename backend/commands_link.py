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
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from backend.commands_model import _open
from training.datasets import jsonl_objects

if TYPE_CHECKING:
    from labeling.curation.export import ExportResult
    from labeling.project import Project
    from training.linker import Linker

STATE_ENV = "SKILLLOOP_STATE_DIR"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("link", help="link spans to a skills taxonomy (JSONL in and out)")
    p.add_argument("--input", default="-", help="JSONL: span, or text [+ spans] (- = stdin)")
    p.add_argument("--output", default="-", help="JSONL output (- = stdout)")
    p.add_argument("--model", help="a tagger checkpoint to find spans in rows with text only")
    add_link_options(p)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=link_command)


def add_link_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--project", help="take the taxonomy, linker and state folder from a project")
    p.add_argument("--taxonomy", help='"esco" or a CSV (id, preferred_label, alt_labels, ...)')
    p.add_argument("--linker", help="a linker folder (default: the plain MiniLM backbone)")
    p.add_argument("--top-k", type=int, help="candidates per span (default 5)")
    p.add_argument("--threshold", type=float, help="no match below this (default: the linker's)")


def open_linker(args: argparse.Namespace) -> tuple[Linker, int]:
    """The linker the options name: --project's [linking] section, overridden by flags."""
    if args.project:
        from labeling.project import load_project

        return project_linker(
            load_project(args.project),
            None,
            taxonomy=args.taxonomy,
            linker=args.linker,
            top_k=args.top_k,
            threshold=args.threshold,
            progress=not getattr(args, "no_progress", False),
        )
    if not args.taxonomy:
        raise ValueError("name a taxonomy: --taxonomy esco, --taxonomy FILE.csv or --project NAME")
    cache = Path(os.environ.get(STATE_ENV) or "state") / "linking"
    return _linker(
        args.taxonomy,
        None,
        args.linker,
        cache,
        args.top_k,
        args.threshold,
        not getattr(args, "no_progress", False),
    )


def project_linker(
    project: Project,
    state_base: str | Path | None,
    taxonomy: str | None = None,
    linker: str | None = None,
    top_k: int | None = None,
    threshold: float | None = None,
    progress: bool = True,
) -> tuple[Linker, int]:
    """(linker, top_k) from a project's `[linking]` section; label embeddings cached in its
    state folder. The linker: `linker`, else the serving version in the project's linker
    registry (`skillloop link-train`), else `[linking] linker` (the base linker versions
    are trained on), else the plain backbone."""
    from labeling.state import ProjectState

    settings = project.linking
    spec = taxonomy or settings.taxonomy
    if not spec:
        raise ValueError(
            f'project {project.name} names no taxonomy: add [linking] taxonomy = "esco"'
        )
    if not linker:  # the serving version of `skillloop link-train`, if any
        from backend.commands_link_train import linker_registry

        serving = linker_registry(project, state_base).serving()
        if serving is not None:
            linker = str(serving.path)
    if not linker and settings.linker not in ("", "backbone"):
        linker = str(project.folder / settings.linker)
    cache = ProjectState.of(project, state_base).linking_cache
    found, k = _linker(
        spec, project.folder, linker, cache, top_k or settings.top_k, threshold, progress
    )
    from labeling.link_pairs import project_taxonomy_additions

    added = found.add_entries(project_taxonomy_additions(project, state_base))
    if added:
        print(f"{added} entries annotators added, linkable too", file=sys.stderr)
    return found, k


def _linker(
    spec: str,
    base: Path | None,
    folder: str | None,
    cache: Path,
    top_k: int | None,
    threshold: float | None,
    progress: bool,
) -> tuple[Linker, int]:
    from training.linker import Linker
    from training.taxonomy import load_taxonomy

    if top_k is not None and top_k < 1:
        raise ValueError("--top-k must be at least 1")
    taxonomy = load_taxonomy(spec, base)
    print(taxonomy.summary(), file=sys.stderr)
    if taxonomy.attribution:
        print(taxonomy.attribution, file=sys.stderr)
    linker = Linker.load(taxonomy, folder, cache_dir=cache, progress=progress)
    if threshold is not None:
        linker.settings.threshold = threshold
    return linker, top_k or 5


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

    with _open(args.input, "r") as handle:
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
    with _open(args.output, "w") as out:
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
    from backend.commands_model import model_labels
    from training.datasets import span_dict
    from training.tagger import Tagger

    tagger = Tagger.load(args.model, model_labels(args.model, {}), {})
    for row, prediction in zip(rows, tagger.predict([r["text"] for r in rows]), strict=True):
        row["spans"] = [span_dict(s) for s in prediction.spans]


# ---------------------------------------------------------------- exports with links

LINKS_FILE = "links.jsonl"


def link_export(result: ExportResult, linker: Linker, top_k: int) -> list[Path]:
    """Link every span of an export (labeling.curation.export.ExportResult): `links.jsonl`
    (one row per span, any format), the fields added to each span of JSONL splits, and a
    section in the card counting spans per taxonomy entry, with the taxonomy's attribution."""
    from collections import Counter

    from training.linker import link_fields, link_spans
    from training.text import Document, annotated_link_fields

    out = Path(result.out_dir)
    rows, by_post = [], {}
    for split, posts in result.splits.items():
        docs = [Document(p.text, list(p.spans), id=p.id) for p in posts]
        for post, links in zip(posts, link_spans(linker, docs, top_k), strict=True):
            for span, link in zip(post.spans, links, strict=True):
                fields = link_fields(link)
                fields |= annotated_link_fields(span) or {}  # an annotator's decision wins
                by_post[(post.id, span.start, span.end, span.label)] = fields
                text = span.text or post.text[span.start : span.end]
                rows.append(
                    {"id": post.id, "split": split, "start": span.start, "end": span.end}
                    | {"label": span.label, "text": text}
                    | fields
                )
    links_path = out / LINKS_FILE
    with open(links_path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    for split in result.splits:
        path = out / f"{split}.jsonl"
        if path.is_file():
            _add_link_fields(path, by_post)
    counts = Counter((r["taxonomy_id"], r["taxonomy_label"]) for r in rows if r["taxonomy_id"])
    unmatched = sum(r["taxonomy_id"] is None for r in rows)
    card = out / "README.md"
    lines = [
        "",
        "## Taxonomy links",
        "",
        f"Each span linked to {linker.taxonomy.name} by the skillloop linker "
        f"(threshold {linker.threshold:g}): `taxonomy_id`, `taxonomy_label`, `link_score` and "
        f"the top {top_k} `link_candidates` in `{LINKS_FILE}`"
        + (" and in each JSONL span." if any(out.glob("*.jsonl")) else "."),
        f"{len(rows)} spans, {len(rows) - unmatched} linked to {len(counts)} entries, "
        f"{unmatched} with no match.",
    ]
    if linker.taxonomy.attribution:
        lines += ["", f"Taxonomy: {linker.taxonomy.attribution}."]
    lines += ["", "| entry | label | spans |", "|---|---|---:|"]
    lines += [f"| {i} | {label} | {n} |" for (i, label), n in counts.most_common(30)]
    with open(card, "a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return [links_path]


def _add_link_fields(path: Path, by_post: dict) -> None:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    for row in rows:
        for span in row.get("spans", []):
            key = (row.get("id"), span["start"], span["end"], span["label"])
            fields = by_post.get(key)
            if fields:
                span |= {k: v for k, v in fields.items() if k != "link_candidates"}
    partial = path.with_suffix(".jsonl.partial")
    partial.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    partial.replace(path)
