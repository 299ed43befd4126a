"""Memory of a gunicorn worker before and after maximum-size /predicts (issue 22.8).

gunicorn with deploy/gunicorn.conf.py (`-w 1 --threads 4`) serves a temporary project (the
offline MiniLM-L6 backbone with a seeded random head) on loopback. Its worker's resident
memory (VmRSS from /proc) is read once the model is loaded and a small /predict answered,
then while --predicts maximum-size /predicts run, --concurrent at a time (800 posts of
20,000 characters each, 16.0 MB, just under the 16 MiB limit; each answers within
SKILLLOOP_PREDICT_BUDGET_S = --budget, the tasks not reached said so), and --settle
seconds after the last. Setups: "off" (SKILLLOOP_TRIM_MEMORY=0: memory as before the fix),
"trim" (the default: malloc_trim after a large request), "trim-arenas" (also
MALLOC_ARENA_MAX=2). Printed: the CPU, the load average, per setup the RSS at start, its
peak, after the /predicts, and the /predict answers. Loopback only; every loop bounded.

    nice -n 10 .venv/bin/python -m benchmarks.predict_memory
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from backend.service.serving_process import ServedProcess, served
from benchmarks.common import ROOT as REPO
from benchmarks.common import run_benchmark
from benchmarks.service_project import skillspan_backbone_project
from training.cpu import cpu_info

POSTS, CHARS = 800, 20_000  # SKILLLOOP_MAX_TEXT_CHARS
WORDS = ["python", "sql", "aws", "we", "need", "experience", "with", "docker", "and", "teams"]
SETUPS = {
    "off": {"SKILLLOOP_TRIM_MEMORY": "0"},
    "trim": {},
    "trim-arenas": {"MALLOC_ARENA_MAX": "2"},
}


def body(posts: int, seed: int) -> dict:
    rng = random.Random(seed)
    xml = (REPO / "projects" / "skillspan" / "labeling_config.xml").read_text()
    text = " ".join(rng.choice(WORDS) for _ in range(CHARS))[:CHARS]
    tasks = [{"id": i, "data": {"text": text}} for i in range(posts)]
    return {"tasks": tasks, "project": "1.1700000000", "label_config": xml}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(service: ServedProcess, args: argparse.Namespace) -> dict:
    import requests

    (pid,) = service.worker_pids()  # one gunicorn worker: the process that predicts
    url = f"{service.url}/predict"
    assert requests.post(url, json=body(2, 0), timeout=120).ok  # warm: a small one first
    time.sleep(1.0)
    start_mb = rss_mb(pid)
    peak = [start_mb]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.25):
            with contextlib.suppress(OSError):
                peak[0] = max(peak[0], rss_mb(pid))

    big = body(POSTS, 1)

    def one(_: int) -> str:
        try:
            reply = requests.post(url, json=big, timeout=args.budget + 120)
        except requests.RequestException as err:
            return type(err).__name__
        if not reply.ok:
            return str(reply.status_code)
        reached = sum("not_reached" not in r for r in reply.json()["results"])
        return f"200 ({reached} reached)"

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with ThreadPoolExecutor(args.concurrent) as pool:
        answers = list(pool.map(one, range(args.predicts)))
    after_mb = rss_mb(pid)
    time.sleep(args.settle)
    done.set()
    sampler.join(5)
    return {
        "rss_start_mb": round(start_mb),
        "rss_peak_mb": round(peak[0]),
        "rss_after_mb": round(after_mb),
        f"rss_after_{args.settle:.0f}s_mb": round(rss_mb(pid)),
        "predicts": answers,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--predicts", type=int, default=4)
    parser.add_argument("--concurrent", type=int, default=2, help="SKILLLOOP_PREDICT_SLOTS")
    parser.add_argument("--budget", type=float, default=20.0, help="seconds per /predict")
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--setups", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    args = parser.parse_args()
    print(cpu_info().line(), flush=True)
    print(f"load average at start {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="predict-memory-") as tmp_name:
        tmp = Path(tmp_name)
        project = skillspan_backbone_project(tmp)
        for setup in args.setups:
            env = {"SKILLLOOP_PREDICT_BUDGET_S": str(args.budget), **SETUPS[setup]}
            with served(
                project,
                tmp / f"state-{setup}",
                tmp / "g.log",
                server="gunicorn",
                env=env,
                timeout=600,
            ) as service:
                result = measure(service, args)
            print(
                f"{setup}: {args.predicts} maximum-size /predicts ({POSTS} x {CHARS} chars), "
                f"{args.concurrent} at a time, budget {args.budget:.0f} s: {result} "
                f"(load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    run_benchmark(main)
