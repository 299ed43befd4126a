"""/predict latency while a training round runs, against idle, through the real service.

Starts `skillloop serve` as its own process on a temporary copy of projects/skillspan
whose base model is the offline backbone (MiniLM-L6) with a seeded random head (real
inference cost; the predicted spans are meaningless here), posts SkillSpan training
postings to /webhook as Label Studio annotations, then sends /predict requests one after
another (one real SkillSpan dev posting per request, as Label Studio does when an annotator
opens a task):
  1. idle: `--requests` requests with no training;
  2. training: POST /train, then requests for as long as the round runs (the worker trains
     in a niced child process with one torch thread).
Prints p50/p95/max per phase, the p95 ratio (target: at most 3x on two cores) and the
round's outcome, and writes them as JSON with --out.

Run it under the heavy-work lock:
  flock /tmp/skillloop-heavy.lock .venv/bin/python -m benchmarks.predict_latency
`--training-threads 2` keeps two prediction threads during the round (the collapse that
made one thread the default).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from backend.service.serving_process import served, settled
from benchmarks.common import ROOT, SKILLSPAN, run_benchmark, split_file
from benchmarks.service_project import skillspan_backbone_project
from training.cpu import cpu_info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotations", type=int, default=40, help="training postings sent")
    parser.add_argument("--requests", type=int, default=60, help="idle /predict requests")
    parser.add_argument("--tasks", type=int, default=1, help="tasks per /predict request")
    parser.add_argument("--threads", type=int, default=2, help="the service's torch threads")
    parser.add_argument(
        "--training-threads",
        type=int,
        default=1,
        help="the service's torch threads while a round trains (0: --threads)",
    )
    parser.add_argument("--epochs", type=int, default=1, help="epochs of the training round")
    parser.add_argument("--out", type=Path, help="write the numbers as JSON here")
    args = parser.parse_args()
    print(cpu_info().line(), flush=True)

    import requests

    from training.datasets import read_skillspan

    train_docs = read_skillspan(split_file(SKILLSPAN, "train"))[: args.annotations]
    dev_docs = read_skillspan(split_file(SKILLSPAN, "dev"))
    with tempfile.TemporaryDirectory(prefix="skillloop-latency-") as tmp_name:
        tmp = Path(tmp_name)
        with served(
            make_project(tmp, args.epochs),
            tmp / "state",
            tmp / "service.log",
            threads=args.threads,
            env={"SKILLLOOP_TRAINING_THREADS": str(args.training_threads)},
            ready=settled,
            timeout=300,
        ) as service:
            url = service.url
            health = service.health() or {}
            if not health.get("model_loaded"):
                raise SystemExit(f"no model loaded: {health}")
            session = requests.Session()
            for i, doc in enumerate(train_docs):
                reply = session.post(f"{url}/webhook", json=annotation(i + 1, doc), timeout=10)
                reply.raise_for_status()
            bodies = [
                predict_body(dev_docs[i : i + args.tasks], i)
                for i in range(0, len(dev_docs) - args.tasks + 1, args.tasks)
            ]
            post = lambda n: timed(session, url, bodies[n % len(bodies)])  # noqa: E731
            post(0)  # warm-up (first-call allocations)
            idle = [post(n) for n in range(args.requests)]

            started = time.time()
            trigger = session.post(f"{url}/train", timeout=10).json()
            if not trigger.get("accepted"):
                raise SystemExit(f"training was not accepted: {trigger}")
            during, n = [], 0
            while True:
                status = session.get(f"{url}/status", timeout=10).json()
                if not (status["running"] or status["queued"]):
                    break
                for _ in range(5):
                    during.append(post(n))
                    n += 1
            round_seconds = time.time() - started
            last_round = status.get("last_round") or {}

    result = {
        "cpu": cpu_info().as_dict(),
        "device": f"{os.cpu_count()} CPU cores (shared machine)",
        "model": "MiniLM-L6 backbone + random head, int8, max_tokens 256",
        "service_threads": args.threads,
        "service_threads_during_training": args.training_threads or args.threads,
        "tasks_per_request": args.tasks,
        "idle": summary(idle),
        "training": summary(during),
        "p95_ratio": round(percentile(during, 95) / percentile(idle, 95), 2) if during else None,
        "round_seconds": round(round_seconds, 1),
        "round_status": last_round.get("status"),
        "round_train_documents": last_round.get("train_documents"),
    }
    print(
        f"/predict latency, {args.tasks} SkillSpan dev posting(s) per request, service "
        f"with {args.threads} torch threads ({result['service_threads_during_training']} "
        "while training)"
    )
    for phase in ("idle", "training"):
        s = result[phase]
        print(
            f"  {phase:9s} n={s['n']:4d}  p50 {s['p50_ms']:7.1f} ms  p95 {s['p95_ms']:7.1f} ms"
            f"  max {s['max_ms']:7.1f} ms"
        )
    print(f"  p95 during training / idle: {result['p95_ratio']}x (target <= 3x)")
    print(
        f"  round: {result['round_status']} after {result['round_seconds']} s "
        f"({result['round_train_documents']} training posts)"
    )
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def make_project(tmp: Path, epochs: int) -> Path:
    """A copy of projects/skillspan served by the backbone with a seeded random head."""
    return skillspan_backbone_project(
        tmp,
        f"[training]\nepochs = {epochs}\nlearning_rate = 5e-5\nbatch_size = 8\nseed = 13\n\n"
        "[retrain]\nevery_n_annotations = 0\ndebounce_seconds = 0\nheldout_share = 0.2\n"
        "tolerance = 1.0\n",
    )


def annotation(annotation_id: int, doc) -> dict:
    """An ANNOTATION_CREATED webhook body for a SkillSpan posting."""
    task = {"id": 100_000 + annotation_id, "data": {"text": doc.text}}
    result = [
        {
            "id": f"r{annotation_id}-{i}",
            "from_name": "label",
            "to_name": "text",
            "type": "labels",
            "value": {"start": s.start, "end": s.end, "text": s.text, "labels": [s.label]},
        }
        for i, s in enumerate(doc.spans)
    ]
    return {
        "action": "ANNOTATION_CREATED",
        "annotation": {
            "id": annotation_id,
            "task": task["id"],
            "result": result,
            "completed_by": 1,
            "was_cancelled": False,
            "lead_time": 30.0,
        },
        "task": task,
        "project": {"id": 1},
    }


def predict_body(docs, offset: int) -> dict:
    xml = (ROOT / "projects" / "skillspan" / "labeling_config.xml").read_text()
    tasks = [{"id": offset + i, "data": {"text": d.text}} for i, d in enumerate(docs)]
    return {"tasks": tasks, "project": "1.1700000000", "label_config": xml, "params": {}}


def timed(session, url: str, body: dict) -> float:
    started = time.perf_counter()
    reply = session.post(f"{url}/predict", json=body, timeout=100)
    seconds = time.perf_counter() - started
    reply.raise_for_status()
    if len(reply.json()["results"]) != len(body["tasks"]):
        raise SystemExit("wrong number of results")
    return seconds


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0, "p50_ms": float("nan"), "p95_ms": float("nan"), "max_ms": float("nan")}
    return {
        "n": len(values),
        "p50_ms": round(1000 * percentile(values, 50), 1),
        "p95_ms": round(1000 * percentile(values, 95), 1),
        "mean_ms": round(1000 * statistics.fmean(values), 1),
        "max_ms": round(1000 * max(values), 1),
    }


if __name__ == "__main__":
    run_benchmark(main)
