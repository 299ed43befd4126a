"""`skillloop link`'s rows for tests/test_ray_corpus.py: all three kinds, in JSONL and
Parquet, and what to compare of a linked row."""

from __future__ import annotations

import json
import re
from pathlib import Path


def link_input(folder: Path, rows: list[dict]) -> tuple[Path, list[dict]]:
    """`skillloop link`'s three kinds of rows: phrases, texts with spans (JSONL, and Parquet
    with a list-of-structs column in row groups of 4), texts to tag; a bad span on line 4."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def spanned(i: int, row: dict) -> dict:
        words = [m.span() for m in re.finditer(r"\S+", row["text"])]
        spans = [{"start": a, "end": b, "label": "Technology"} for a, b in words[i % 3 :: 4]]
        return {"id": f"s{i}", "text": row["text"], "spans": spans}

    phrases = [{"id": f"w{i}", "span": w} for i, w in enumerate(["k8s", "sql", "python"])]
    good = [*phrases, *(spanned(i, r) for i, r in enumerate(rows[:5])), *rows[5:10]]
    lines = [json.dumps(r) for r in good]
    lines.insert(3, json.dumps({"id": "bad", "text": "abc", "spans": [{"start": 2, "end": 9}]}))
    inputs = folder / "link-in"
    inputs.mkdir(exist_ok=True)
    (inputs / "a.jsonl").write_text("\n".join(lines) + "\n")
    table = [spanned(i, r) for i, r in enumerate(rows[10:20], 10)]
    pq.write_table(pa.Table.from_pylist(table), inputs / "b.parquet", row_group_size=4)
    return inputs, [*good, *table]


def link_keys(row: dict) -> tuple:
    if "span" in row:
        return (row["id"], row["taxonomy_id"], row["link_score"])
    if "text_link" in row:
        return (row["id"], row["text_link"]["taxonomy_id"], row["text_link"]["link_score"])
    return (row["id"], *((s["start"], s["end"], s["taxonomy_id"]) for s in row["spans"]))
