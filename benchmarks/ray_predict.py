"""Corpus tagging throughput: today's process pool (`skillloop predict --workers N`) vs a
local Ray (`skillloop predict --ray-address local --workers N` actors), on the SkillSpan
dev postings repeated to `--posts` (default 10,000).

Each setting is one `python -m backend.cli predict` command; printed per setting: posts/s
over the whole command (Ray's start and the actors' model loads included), the peak
resident memory of the whole process tree (sampled every 0.1 s; Ray's own daemons are
children of the command, so they count), and the share of posts whose spans equal the
first setting's. Without `--model`, an untrained MiniLM tagger (the backbone with a random
head for the reference model's tags) is saved to a temp folder: the same network and speed
as a trained checkpoint, spans not meaningful (their equality still is).

    nice -n 10 .venv/bin/python -m benchmarks.ray_predict --posts 10000 \\
        --settings pool-2 ray-1 ray-2 --precision onnx-int8
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, SKILLSPAN
from training.cpu import cpu_info
from training.datasets import read_skillspan

DEV = SKILLSPAN / "dev.json"
SETTINGS = {
    "pool-1": ["--workers", "1"],
    "pool-2": ["--workers", "2"],
    "ray-1": ["--ray-address", "local", "--workers", "1"],
    "ray-2": ["--ray-address", "local", "--workers", "2"],
}
TAGS = ["O", "B-BUS", "I-BUS", "B-TECHNOLOGY", "I-TECHNOLOGY", "B-TECHNICAL", "I-TECHNICAL"]
TAGS += ["B-SOFT", "I-SOFT"]
MAP = ["BUS=Business", "TECHNOLOGY=Technology", "TECHNICAL=Technical", "SOFT=Soft"]


def tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants (0 once gone)."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024
            for task in Path(f"/proc/{current}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, AttributeError, ValueError):
            continue
    return total


def untrained_tagger(folder: Path) -> Path:
    """The MiniLM backbone with a random token-classification head for TAGS."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from training.checkpoint import resolve_source

    source = resolve_source(None)
    model = AutoModelForTokenClassification.from_pretrained(
        source, num_labels=len(TAGS), id2label=dict(enumerate(TAGS))
    )
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return folder


def run(model: str, source: Path, out: Path, extra: list[str]) -> dict:
    command = [sys.executable, "-m", "backend.cli", "predict", "--model", model]
    command += ["--input", str(source), "--output", str(out), "--no-progress", *extra]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    begin = time.perf_counter()
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    peak = 0
    while process.poll() is None:
        peak = max(peak, tree_rss(process.pid))
        time.sleep(0.1)
    wall = time.perf_counter() - begin
    stderr = process.stderr.read()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{stderr[-3000:]}")
    return {"wall_s": round(wall, 1), "peak_rss_total_mb": round(peak / 2**20)}


def spans_of(out: Path) -> dict[str, list]:
    """Post id -> its spans as (start, end, label), from JSONL or a Ray output folder."""
    if out.is_dir():
        import duckdb

        rows = duckdb.sql(
            f"select post_id, start, \"end\", label from '{out}/spans/*.parquet' "
            'order by post_id, start, "end", label'
        ).fetchall()
        ids = duckdb.sql(f"select post_id from '{out}/posts/*.parquet'").fetchall()
        found: dict[str, list] = {pid: [] for (pid,) in ids}
        for pid, start, end, label in rows:
            found[pid].append((start, end, label))
        return found
    found = {}
    for line in out.read_text().splitlines():
        row = json.loads(line)
        found[row["id"]] = sorted((s["start"], s["end"], s["label"]) for s in row["spans"])
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint folder (default: an untrained MiniLM)")
    parser.add_argument("--data", type=Path, default=DEV)
    parser.add_argument("--posts", type=int, default=10_000)
    parser.add_argument("--settings", nargs="+", default=["pool-2", "ray-1", "ray-2"])
    parser.add_argument("--precision", default="auto", help="passed to skillloop predict")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not args.data.is_file():
        print(f"SkillSpan not found at {args.data}", file=sys.stderr)
        return 2
    unknown = [s for s in args.settings if s not in SETTINGS]
    if unknown:
        print(f"unknown settings {unknown}: choose from {list(SETTINGS)}", file=sys.stderr)
        return 2
    import ray

    cpu = cpu_info()
    print(cpu.line())
    print(f"Ray {ray.__version__}")
    docs = read_skillspan(args.data)
    rows = [{"id": str(i), "text": docs[i % len(docs)].text} for i in range(args.posts)]
    results: dict = {}
    first = None
    with tempfile.TemporaryDirectory() as folder:
        model = args.model or str(untrained_tagger(Path(folder) / "minilm-untrained"))
        source = Path(folder) / "posts.jsonl"
        source.write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(
            f"{len(rows)} posts ({len(docs)} dev postings repeated), model "
            f"{args.model or 'untrained MiniLM'}, precision {args.precision}"
        )
        print(f"{'setting':<10}{'posts/s':>9}{'wall s':>8}{'peak MB':>9}  same spans")
        for name in args.settings:
            out = Path(folder) / (name if name.startswith("ray") else f"{name}.jsonl")
            extra = [*SETTINGS[name], "--precision", args.precision, "--label-map", *MAP]
            row = run(model, source, out, extra)
            spans = spans_of(out)
            first = first or spans
            same = sum(first.get(k) == v for k, v in spans.items()) / max(len(first), 1)
            row |= {"posts": len(spans), "posts_per_s": len(spans) / row["wall_s"]}
            row["posts_with_same_spans_as_first"] = same
            results[name] = row
            print(
                f"{name:<10}{row['posts_per_s']:>9.2f}{row['wall_s']:>8.1f}"
                f"{row['peak_rss_total_mb']:>9}  {same:.1%}",
                flush=True,
            )
    end = cpu_info().load_average
    print(f"load average at the end: {end:.1f}")
    if args.json:
        report = {"cpu": cpu.as_dict(), "ray": ray.__version__, "load_average_end": end}
        report["settings"] = results
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
