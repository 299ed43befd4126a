"""Slow and many clients: gunicorn alone vs gunicorn behind nginx (deploy/nginx.conf).

For each setup, gunicorn `-w 1 --threads 4` (docs/service.md) serves a temporary project
(the offline MiniLM-L6 backbone with a seeded random head, benchmarks/service_project.py)
on loopback; "nginx" puts Debian's nginx with the shipped config in front. Against the
front port: --slow connections that send headers and one byte of a 100 kB body and stall
(a byte more every second), --idle connections that send nothing, and 4 maximum-size
/predicts (800 posts of 20,000 characters: 16.0 MB, just under the 16 MiB limit). Then for
--seconds: an ANNOTATION_CREATED webhook and a /health probe every --every seconds, one
at a time, each with a --timeout (a probe that times out is "not answered"; its latency
counts as the timeout). Printed: the CPU, the load average, webhook p50/p99 and answered,
/health answered/probes, the /predict answers. Loopback only; every loop bounded.

    nice -n 10 .venv/bin/python -m benchmarks.slow_clients
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import tempfile
import threading
import time
from pathlib import Path

from backend.service.serving_process import served
from benchmarks.common import run_benchmark
from benchmarks.load_test import annotation
from benchmarks.reliability import predict_body
from benchmarks.service_project import skillspan_backbone_project
from labeling.studio.server import free_port
from tests.nginx_proxy import (
    close_all,
    open_idle,
    open_slow_bodies,
    start_nginx,
    stop,
    trickle,
)
from training.cpu import cpu_info

N_PREDICTS = 4
MAX_SIZE_POSTS = 800  # x 20,000 characters (SKILLLOOP_MAX_TEXT_CHARS): 16.0 MB


def scenario(port: int, args: argparse.Namespace, first_id: int) -> dict:
    import requests

    url = f"http://127.0.0.1:{port}"
    rng = random.Random(first_id)
    big = predict_body([" ".join(rng.choice(["python", "sql", "aws"]) for _ in range(3300))])
    big["tasks"] = [{"id": i, "data": big["tasks"][0]["data"]} for i in range(MAX_SIZE_POSTS)]
    predicts: list[str] = []

    def large_predict() -> None:
        try:
            reply = requests.post(f"{url}/predict", json=big, timeout=args.seconds + 30)
            predicts.append(str(reply.status_code))
        except requests.RequestException as err:
            predicts.append(type(err).__name__)

    slow = open_slow_bodies(port, args.slow)
    idle = open_idle(port, args.idle)
    senders = [threading.Thread(target=large_predict, daemon=True) for _ in range(N_PREDICTS)]
    for sender in senders:
        sender.start()
    time.sleep(1.0)  # the /predicts are sent (or waiting for a thread)
    webhook_s: list[float] = []
    webhooks_ok = health_ok = probes = 0
    end = time.monotonic() + args.seconds
    i = 0
    while time.monotonic() < end and probes < 1000:
        trickle(slow)
        started = time.perf_counter()
        try:
            event = annotation(first_id + i, rng)
            ok = requests.post(f"{url}/webhook", json=event, timeout=args.timeout).ok
        except requests.RequestException:
            ok = False
        webhook_s.append(time.perf_counter() - started if ok else args.timeout)
        webhooks_ok += ok
        with contextlib.suppress(requests.RequestException):
            health_ok += requests.get(f"{url}/health", timeout=args.timeout).ok
        probes += 1
        i += 1
        time.sleep(max(0.0, args.every - (time.perf_counter() - started)))
    close_all(slow + idle)
    ordered = sorted(webhook_s) or [float("nan")]
    return {  # nearest rank: p99 of fewer than 100 is the slowest but one or the slowest
        "webhook_p50_s": round(ordered[int(0.5 * (len(ordered) - 1))], 3),
        "webhook_p99_s": round(ordered[round(0.99 * (len(ordered) - 1))], 3),
        "webhooks_answered": f"{webhooks_ok}/{len(webhook_s)}",
        "health_answered": f"{health_ok}/{probes}",
        "predicts_answered_in_window": sorted(predicts),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slow", type=int, default=25)
    parser.add_argument("--idle", type=int, default=25)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--every", type=float, default=0.5)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--setups", nargs="+", default=["gunicorn", "nginx"])
    parser.add_argument("--predict-slots", type=int, help="SKILLLOOP_PREDICT_SLOTS (default 2)")
    args = parser.parse_args()
    print(cpu_info().line(), flush=True)
    print(f"load average at start {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="slow-clients-") as tmp_name:
        tmp = Path(tmp_name)
        project = skillspan_backbone_project(tmp)
        slots = {}
        if args.predict_slots is not None:  # 4 = --threads: as without the bound
            slots["SKILLLOOP_PREDICT_SLOTS"] = str(args.predict_slots)
        for n, setup in enumerate(args.setups):
            with served(
                project,
                tmp / f"state-{setup}",
                tmp / "g.log",
                server="gunicorn",
                env=slots,
                timeout=300,
                stop_signal=signal.SIGKILL,
            ) as gunicorn:
                port = gunicorn.port
                nginx = None
                if setup == "nginx":
                    port = free_port()
                    nginx = start_nginx(tmp / f"nginx-{n}", port, gunicorn.port)
                try:
                    result = scenario(port, args, first_id=1 + 100_000 * n)
                finally:
                    if nginx is not None:
                        stop(nginx)
            print(
                f"{setup}: {args.slow} slow-body + {args.idle} idle connections, "
                f"{N_PREDICTS} maximum-size /predicts, {args.seconds:.0f} s, predict slots "
                f"{args.predict_slots or 2}: {result} "
                f"(load {os.getloadavg()[0]:.1f})",
                flush=True,
            )


if __name__ == "__main__":
    run_benchmark(main)
