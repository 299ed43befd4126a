"""The output folder of a corpus job: per block, Parquet of posts and spans, the Label
Studio tasks and the rejects, each written to a temporary name and renamed, then a `done/`
marker last; a restarted job skips the blocks whose marker is there.

    OUT/posts/KEY.parquet    post_id, text_hash, model_version, task_score, spans, ...
    OUT/spans/KEY.parquet    post_id, start, end, label, text, confidence, taxonomy_*, ...
    OUT/tasks/KEY.jsonl      Label Studio import tasks (with --format label-studio)
    OUT/linked/KEY.jsonl     `skillloop link`'s output rows (link --ray-address)
    OUT/rejects/KEY.jsonl    malformed rows: file, row, problem
    OUT/done/KEY.json        the block's counts; written last
    OUT/label-studio.json, OUT/linked.jsonl, OUT/rejects.jsonl, OUT/summary.json
                             assembled at the end

`duckdb -c "select label, count(*) from 'OUT/spans/*.parquet' group by 1"` reads it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from backend.corpus.sources import Block, Row

POSTS = pa.schema(
    [
        ("post_id", pa.string()),
        ("text_hash", pa.string()),  # sha1 of training.text.post_key(text)
        ("model_version", pa.string()),
        ("task_score", pa.float64()),  # Label Studio's task score (MNLP): lower = more useful
        ("spans", pa.int32()),
        ("text_cut_at", pa.int64()),  # null unless the text was read up to the limit
        ("source_file", pa.string()),
        ("source_row", pa.int64()),
    ]
)
SPANS = pa.schema(
    [
        ("post_id", pa.string()),
        ("start", pa.int64()),  # code-point offsets into the post's text
        ("end", pa.int64()),
        ("label", pa.string()),
        ("text", pa.string()),
        ("confidence", pa.float64()),
        ("taxonomy_id", pa.string()),  # null unless linked (--link) and above threshold
        ("taxonomy_label", pa.string()),
        ("link_score", pa.float64()),
    ]
)
PARTS = ("posts", "spans", "tasks", "linked", "rejects", "done")


def text_hash(text: str) -> str:
    from training.text import post_key

    return hashlib.sha1(post_key(text).encode("utf-8")).hexdigest()


def done_keys(out: Path) -> set[str]:
    folder = out / "done"
    return {p.stem for p in folder.glob("*.json")} if folder.is_dir() else set()


def remove_stale(out: Path, keys: set[str]) -> int:
    """Remove block outputs of blocks no longer planned (an input file changed or left the
    set): the folder describes one input set. Returns how many blocks were removed."""
    stale: set[str] = set()
    for part in PARTS:
        for path in (out / part).glob("*") if (out / part).is_dir() else []:
            key = path.name.split(".", 1)[0]
            if key and key not in keys:
                stale.add(key)
                path.unlink()
    return len(stale)


class BlockWriter:
    """One block's outputs, written as rows arrive (memory stays one chunk). Its JSON lines
    (`write`'s `lines`) are Label Studio tasks with `studio`, link's rows with `linked`."""

    def __init__(self, out: Path, block: Block, studio: bool, linked: bool = False):
        self.out, self.block = out, block
        self.lines_part = "tasks" if studio else "linked"
        for part in PARTS:
            (out / part).mkdir(parents=True, exist_ok=True)
        self.posts = pq.ParquetWriter(self._tmp("posts", "parquet"), POSTS)
        self.spans = pq.ParquetWriter(self._tmp("spans", "parquet"), SPANS)
        # open across the block's chunks, closed (and renamed) in close()
        tasks = self._tmp(self.lines_part, "jsonl")
        self.tasks = open(tasks, "w", encoding="utf-8") if studio or linked else None  # noqa: SIM115
        self.rejects = open(self._tmp("rejects", "jsonl"), "w", encoding="utf-8")  # noqa: SIM115
        self.counts = {"rows": 0, "posts": 0, "spans": 0, "rejects": 0, "linked": 0}

    def _tmp(self, part: str, suffix: str) -> Path:
        return self.out / part / f"{self.block.key}.{suffix}.tmp"

    def reject(self, row: Row) -> None:
        record = {"file": row.file, "row": row.number, "problem": row.problem}
        self.rejects.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.counts["rows"] += 1
        self.counts["rejects"] += 1

    def write(self, posts: Sequence[dict], spans: Sequence[dict], lines: Iterable[dict]) -> None:
        self.posts.write_table(pa.Table.from_pylist(list(posts), schema=POSTS))
        self.spans.write_table(pa.Table.from_pylist(list(spans), schema=SPANS))
        if self.tasks is not None:
            for line in lines:
                self.tasks.write(json.dumps(line, ensure_ascii=False, default=str) + "\n")
        self.counts["rows"] += len(posts)
        self.counts["posts"] += len(posts)
        self.counts["spans"] += len(spans)
        self.counts["linked"] += sum(s["taxonomy_id"] is not None for s in spans)

    def close(self) -> dict:
        """Rename every part into place, then write the done marker; returns the counts."""
        self.posts.close()
        self.spans.close()
        self.rejects.close()
        parts = [("posts", "parquet"), ("spans", "parquet"), ("rejects", "jsonl")]
        if self.tasks is not None:
            self.tasks.close()
            parts.append((self.lines_part, "jsonl"))
        for part, suffix in parts:
            tmp = self._tmp(part, suffix)
            tmp.replace(tmp.with_suffix(""))
        summary = {"key": self.block.key, "file": self.block.file, **self.counts}
        marker = self.out / "done" / f"{self.block.key}.json"
        tmp = marker.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(summary) + "\n", encoding="utf-8")
        tmp.replace(marker)
        return summary


def assemble(out: Path, keys: Sequence[str], studio: bool, linked: bool = False) -> dict:
    """The job's summary over all planned blocks (those done before a restart included),
    `rejects.jsonl` and, with `studio`, `label-studio.json` (with `linked`, `linked.jsonl`),
    in input order."""
    totals = {"blocks": 0, "rows": 0, "posts": 0, "spans": 0, "rejects": 0, "linked": 0}
    with open(out / "rejects.jsonl", "w", encoding="utf-8") as rejects:
        for key in keys:
            marker = json.loads((out / "done" / f"{key}.json").read_text(encoding="utf-8"))
            totals["blocks"] += 1
            for name in ("rows", "posts", "spans", "rejects", "linked"):
                totals[name] += int(marker.get(name, 0))
            rejects.write((out / "rejects" / f"{key}.jsonl").read_text(encoding="utf-8"))
    if studio:
        with open(out / "label-studio.json", "w", encoding="utf-8") as handle:
            handle.write("[")
            first = True
            for key in keys:
                with open(out / "tasks" / f"{key}.jsonl", encoding="utf-8") as tasks:
                    for line in tasks:
                        handle.write(("\n" if first else ",\n") + line.rstrip("\n"))
                        first = False
            handle.write("\n]\n" if not first else "]\n")
    if linked:
        with open(out / "linked.jsonl", "w", encoding="utf-8") as handle:
            for key in keys:
                handle.write((out / "linked" / f"{key}.jsonl").read_text(encoding="utf-8"))
    (out / "summary.json").write_text(json.dumps(totals, indent=2) + "\n", encoding="utf-8")
    return totals
