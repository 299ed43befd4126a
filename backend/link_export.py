"""An export's spans linked to a taxonomy: `skillloop export --link`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from labeling.curation.export import ExportResult
    from training.linker import Linker

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
