"""The corpus as blocks: JSONL and Parquet files (named, a glob or a folder) planned into
blocks that are read one at a time, never the whole corpus in memory.

A JSONL block is a byte range of about `block_rows` lines, found by one streaming pass over
the file (offsets only); a Parquet block is one row group. A block's key names its file (by
path, size and modification time) and its position, so a restarted job recognises the
blocks it already completed (`backend.corpus.outputs`). A malformed row (not JSON, not an
object, no "text" string, a lone surrogate) is yielded as a reject naming its file and row,
never raised: one bad line must not stop a million-row job.
"""

from __future__ import annotations

import glob
import hashlib
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

JSONL_SUFFIXES = (".jsonl", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
DEFAULT_BLOCK_ROWS = 2000
PARQUET_BATCH_ROWS = 256  # rows decoded at a time from a row group


@dataclass(frozen=True, slots=True)
class Block:
    """A piece of one input file: JSONL bytes [start, stop), or Parquet row group `start`."""

    file: str
    kind: str  # "jsonl" or "parquet"
    index: int  # the block's position in its file
    start: int
    stop: int
    first_row: int  # 1-based row (JSONL: line) number of the block's first row
    key: str  # unique and stable while the file is unchanged; a file-name-safe string


@dataclass(frozen=True, slots=True)
class Row:
    """One input row: `data` the row's fields (None for a reject), `problem` why not."""

    file: str
    number: int
    data: dict | None
    problem: str = ""


def expand_inputs(specs: Sequence[str]) -> list[Path]:
    """The input files `specs` name: files, globs (`posts/*.parquet`, `**` included) and
    folders (their JSONL and Parquet files, recursively), sorted, each once."""
    files: dict[Path, None] = {}
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = [p for p in sorted(path.rglob("*")) if _readable_kind(p)]
        elif glob.has_magic(spec):
            found = [Path(p) for p in sorted(glob.glob(spec, recursive=True)) if Path(p).is_file()]
        elif path.is_file():
            found = [path]
        else:
            raise FileNotFoundError(f"input not found: {spec}")
        if not found:
            raise ValueError(f"no JSONL or Parquet files in {spec}")
        for p in found:
            if not _readable_kind(p):
                raise ValueError(f"{p}: not a JSONL (.jsonl, .ndjson) or Parquet (.parquet) file")
            files.setdefault(p.resolve(), None)
    return list(files)


def _readable_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if path.is_file() and suffix in JSONL_SUFFIXES:
        return "jsonl"
    if path.is_file() and suffix in PARQUET_SUFFIXES:
        return "parquet"
    return ""


def plan_blocks(files: Sequence[Path], block_rows: int = DEFAULT_BLOCK_ROWS) -> Iterator[Block]:
    if block_rows < 1:
        raise ValueError(f"--block-rows must be at least 1, got {block_rows}")
    for path in files:
        kind = _readable_kind(path)
        stem = f"{re.sub(r'[^A-Za-z0-9_-]+', '_', path.stem)[:40]}-{_fingerprint(path)}"
        spans = _jsonl_ranges(path, block_rows) if kind == "jsonl" else _row_groups(path)
        for index, (start, stop, first_row) in enumerate(spans):
            yield Block(str(path), kind, index, start, stop, first_row, f"{stem}-{index:05d}")


def _fingerprint(path: Path) -> str:
    stat = path.stat()
    text = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _jsonl_ranges(path: Path, block_rows: int) -> Iterator[tuple[int, int, int]]:
    """(start, stop, first line) of each run of `block_rows` lines, one pass, offsets only."""
    start, first, lines, offset = 0, 1, 0, 0
    with open(path, "rb") as handle:
        for line in handle:
            offset += len(line)
            lines += 1
            if lines == block_rows:
                yield start, offset, first
                start, first, lines = offset, first + block_rows, 0
    if lines:
        yield start, offset, first


def _row_groups(path: Path) -> Iterator[tuple[int, int, int]]:
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    if "text" not in meta.schema.names:
        raise ValueError(f"{path}: no 'text' column (columns: {', '.join(meta.schema.names)})")
    first = 1
    for group in range(meta.num_row_groups):
        rows = meta.row_group(group).num_rows
        yield group, group + 1, first
        first += rows


def read_block(
    block: Block, max_chars: int | None, check: Callable[[dict], str] | None = None
) -> Iterator[Row]:
    """The block's rows in order; texts longer than `max_chars` are read up to it (the row
    says `text_cut_at`, as `skillloop predict` and /predict do; None: never cut). `check`
    names a row's problem ("" when fine; default: it needs a "text" string)."""
    raw = _jsonl_rows(block) if block.kind == "jsonl" else _parquet_rows(block)
    for number, data, problem in raw:
        if data is not None and not problem:
            problem = (check or _text_problem)(data)
        if problem:
            yield Row(block.file, number, None, problem)
            continue
        assert data is not None
        if max_chars is not None and len(data["text"]) > max_chars:
            data = {**data, "text": data["text"][:max_chars], "text_cut_at": max_chars}
        yield Row(block.file, number, data)


def _jsonl_rows(block: Block) -> Iterator[tuple[int, dict | None, str]]:
    with open(block.file, "rb") as handle:
        handle.seek(block.start)
        number, offset = block.first_row - 1, block.start
        while offset < block.stop:
            line = handle.readline()
            if not line:
                break
            offset += len(line)
            number += 1
            if not line.strip():
                continue
            try:
                data = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError:
                yield number, None, "not UTF-8"
                continue
            except json.JSONDecodeError as err:
                yield number, None, f"not valid JSON ({err.msg})"
                continue
            if not isinstance(data, dict):
                yield number, None, "not a JSON object"
                continue
            yield number, data, ""


def _parquet_rows(block: Block) -> Iterator[tuple[int, dict | None, str]]:
    import pyarrow.parquet as pq

    number = block.first_row - 1
    batches = pq.ParquetFile(block.file).iter_batches(
        batch_size=PARQUET_BATCH_ROWS, row_groups=[block.start]
    )
    for batch in batches:
        for data in batch.to_pylist():
            number += 1
            yield number, data, ""


def _text_problem(data: dict) -> str:
    text = data.get("text")
    if not isinstance(text, str):
        return 'no "text" string'
    return surrogate_problem(text)


def surrogate_problem(text: str) -> str:
    from labeling.studio.tasks import lone_surrogates

    if lone_surrogates(text):
        return "the text holds a lone UTF-16 surrogate"
    return ""


def post_id(row: Row) -> str:
    """The row's own "id", else its place: `file-name:row`."""
    assert row.data is not None
    given = row.data.get("id")
    return str(given) if given not in (None, "") else f"{Path(row.file).name}:{row.number}"
