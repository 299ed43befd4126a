"""Bulk pre-annotation throughput: `skillloop predict` in one process and with --workers N.

The 58 SkillSpan dev postings (whole posts, `training.datasets.read_skillspan`) repeated
to `--posts` (default 1,000) go through `python -m backend.cli predict` once per setting;
printed per setting: posts/s over the whole command and after the model(s) loaded, the
peak resident memory of the whole process tree (sampled every 0.1 s) and of its largest
process, and whether the spans equal the first setting's, post by post, in input order.

    .venv/bin/python -m benchmarks.predict_workers --model state/models/NAME \\
        --settings in-process workers-1 workers-2 --json /tmp/workers.json
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

from benchmarks.common import ROOT, add_skillspan_data, run_benchmark, split_file
from training.cpu import cpu_info
from training.datasets import read_skillspan

SETTINGS = {"in-process": [], "workers-1": ["--workers", "1"], "workers-2": ["--workers", "2"]}
DONE = re.compile(r"predicted (\d+) texts in ([\d.]+) s \(([\d.]+) s after loading\)")


def tree_rss(pid: int) -> tuple[int, int]:
    """(sum, max) resident bytes of `pid` and all its descendants; (0, 0) once gone."""
    total = largest = 0
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            rss = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024
            for task in Path(f"/proc/{current}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, AttributeError, ValueError):
            continue
        total, largest = total + rss, max(largest, rss)
    return total, largest


def run(model: str, source: Path, out: Path, extra: list[str]) -> dict:
    command = [sys.executable, "-m", "backend.cli", "predict", "--model", model]
    command += ["--input", str(source), "--output", str(out), "--no-progress", *extra]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    begin = time.perf_counter()
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    peak_total = peak_one = 0
    while process.poll() is None:
        total, largest = tree_rss(process.pid)
        peak_total, peak_one = max(peak_total, total), max(peak_one, largest)
        time.sleep(0.1)
    wall = time.perf_counter() - begin
    stderr = process.stderr.read()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{stderr}")
    match = DONE.search(stderr)
    n, seconds, after_load = int(match.group(1)), float(match.group(2)), float(match.group(3))
    precision = re.search(r"precision (\S+)", stderr).group(1)
    return {
        "posts": n,
        "wall_s": round(wall, 2),
        "posts_per_s": n / seconds,
        "posts_per_s_after_load": n / after_load,
        "peak_rss_total_mb": round(peak_total / 2**20),
        "peak_rss_largest_process_mb": round(peak_one / 2**20),
        "precision": precision,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="checkpoint folder")
    add_skillspan_data(parser, "dev")
    parser.add_argument("--posts", type=int, default=1000)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--precision", default="auto", help="passed to skillloop predict")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cpu = cpu_info()
    print(cpu.line())
    docs = read_skillspan(split_file(args.data, "dev"))
    rows = [{"id": str(i), "text": docs[i % len(docs)].text} for i in range(args.posts)]
    results: dict = {}
    first_spans = None
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "posts.jsonl"
        source.write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"{len(rows)} posts ({len(docs)} dev postings repeated), precision {args.precision}")
        print(
            f"{'setting':<12}{'posts/s':>9}{'after load':>11}{'wall s':>8}"
            f"{'peak MB':>9}{'largest':>9}  same spans"
        )
        for name in args.settings:
            out = Path(folder) / f"{name}.jsonl"
            row = run(args.model, source, out, [*SETTINGS[name], "--precision", args.precision])
            spans = [json.loads(line)["spans"] for line in out.read_text().splitlines()]
            ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
            row["input_order_kept"] = ids == [r["id"] for r in rows]
            first_spans = first_spans or spans
            same = sum(a == b for a, b in zip(first_spans, spans, strict=True)) / len(spans)
            row["posts_with_same_spans_as_first"] = same
            results[name] = row
            print(
                f"{name:<12}{row['posts_per_s']:>9.2f}{row['posts_per_s_after_load']:>11.2f}"
                f"{row['wall_s']:>8.1f}{row['peak_rss_total_mb']:>9}"
                f"{row['peak_rss_largest_process_mb']:>9}  {same:.1%}"
                f"{'' if row['input_order_kept'] else '  ORDER LOST'}",
                flush=True,
            )
    end = cpu_info().load_average
    print(f"load average at the end: {end:.1f}")
    if args.json:
        report = {"cpu": cpu.as_dict(), "load_average_end": end, "settings": results}
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    run_benchmark(main)
