"""Reliability of the real service under kill -9 and under heavy, concurrent input.

Starts `skillloop serve` as its own process on loopback (a temporary project served by the
offline MiniLM-L6 backbone with a seeded random head: real inference cost, meaningless
spans) and replays issue 12's probes, each bounded in count and time:

  1. kill -9: SENDERS threads post single ANNOTATION_CREATED webhooks, one more posts a
     bulk ANNOTATIONS_CREATED of --bulk items; the process group is SIGKILLed at a random
     moment; after a restart (and the inbox drained) every acknowledged annotation must be
     in the store. Repeated --kills times. Prints acknowledged vs stored.
  2. concurrency: --writers threads post webhooks while one client keeps sending a 1 MB
     post to /predict and another sends one small task at a time; prints the latency
     percentiles of each (the small ones must not starve) and what the 1 MB post answered.
  3. 5,000 tasks in one /predict: the answer time (Label Studio waits 100 s) and how many
     tasks were reached within the budget.
  4. a bulk webhook of 5,000 items: the acknowledgement time (Label Studio waits 1 s) and
     the time until all are stored.
  5. SIGTERM while predicting: seconds until the process is gone.

    nice -n 10 .venv/bin/python -m benchmarks.reliability --out /tmp/reliability.json

Everything stops by itself; nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import tempfile
import threading
import time
from pathlib import Path

from backend.service.serving_process import ServedProcess, settled
from benchmarks.common import ROOT, run_benchmark
from benchmarks.service_project import skillspan_backbone_project
from training.cpu import cpu_info

TEXT = "Senior data engineer: Python, SQL and stakeholder management in a cloud team."
WORDS = [
    "python",
    "sql",
    "cloud",
    "data",
    "engineer",
    "pipelines",
    "stakeholder",
    "management",
    "spark",
]


# --- the service ---------------------------------------------------------------------------
def make_project(tmp: Path) -> Path:
    return skillspan_backbone_project(tmp, "[retrain]\nevery_n_annotations = 0\n")


class Service(ServedProcess):
    """`skillloop serve` with one torch thread, ready once its model has loaded (or failed
    to); restartable on the same state (`kill`, then `start`)."""

    def __init__(self, project: Path, state: Path, log: Path):
        super().__init__(project, state, log, ready=settled, timeout=300)

    def store_ids(self) -> set[int]:
        from labeling.project import load_project
        from labeling.state import ProjectState

        # the service's own way to its store (SKILLLOOP_DATABASE_URL included)
        with ProjectState.of(load_project(self.project), self.state).store() as store:
            return {r.annotation_id for r in store.annotations.records()}

    def wait_inbox(self, timeout: float = 300) -> None:
        import requests

        deadline = time.time() + timeout
        while time.time() < deadline:
            inbox = requests.get(f"{self.url}/status", timeout=10).json()["webhook_inbox"]
            if inbox["pending"] == 0:
                return
            time.sleep(0.2)
        raise SystemExit("the inbox was not drained in time")


def annotation(annotation_id: int) -> dict:
    task = {"id": annotation_id, "data": {"text": TEXT}}
    value = {"start": 22, "end": 28, "text": "Python", "labels": ["Skill"]}
    result = [{"id": "r", "from_name": "label", "to_name": "text", "type": "labels"}]
    result[0]["value"] = value
    return {
        "action": "ANNOTATION_CREATED",
        "annotation": {"id": annotation_id, "task": annotation_id, "result": result},
        "task": task,
        "project": {"id": 1},
    }


def bulk(first: int, n: int) -> dict:
    items = [annotation(first + i) for i in range(n)]
    return {
        "action": "ANNOTATIONS_CREATED",
        "annotation": [i["annotation"] for i in items],
        "task": [i["task"] for i in items],
        "project": {"id": 1},
    }


def predict_body(texts: list[str]) -> dict:
    xml = (ROOT / "projects" / "skillspan" / "labeling_config.xml").read_text()
    tasks = [{"id": i, "data": {"text": t}} for i, t in enumerate(texts)]
    return {"tasks": tasks, "project": "1.1700000000", "label_config": xml}


def post_text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


# --- the probes ----------------------------------------------------------------------------
def kill_probe(service: Service, rng: random.Random, events: int, bulk_items: int) -> dict:
    import requests

    acknowledged: set[int] = set()
    lock = threading.Lock()
    ids = iter(range(1, events + 1))
    killed = threading.Event()
    kill_after = rng.randrange(events // 5, events // 2)
    first = 1_000_000 + rng.randrange(1 << 20) * 10_000
    bulk_acknowledged: list[int] = []
    latencies: list[float] = []

    def sender() -> None:
        session = requests.Session()
        while not killed.is_set():
            with lock:
                annotation_id = next(ids, None)
            if annotation_id is None:
                return
            started = time.perf_counter()
            try:
                reply = session.post(
                    f"{service.url}/webhook", json=annotation(annotation_id + first), timeout=10
                )
            except requests.RequestException:
                continue
            if reply.status_code == 200:
                with lock:
                    latencies.append(time.perf_counter() - started)
                    acknowledged.add(annotation_id + first)
                    if len(acknowledged) >= kill_after and not killed.is_set():
                        service.kill()
                        killed.set()

    def bulk_sender() -> None:
        body = bulk(first + events + 1, bulk_items)
        with contextlib.suppress(requests.RequestException):
            reply = requests.post(f"{service.url}/webhook", json=body, timeout=10)
            if reply.status_code == 200:
                bulk_acknowledged.extend(a["id"] for a in body["annotation"])

    threads = [threading.Thread(target=sender) for _ in range(4)]
    threads.append(threading.Thread(target=bulk_sender))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    service.kill()
    service.start()
    service.wait_inbox()
    stored = service.store_ids()
    wanted = acknowledged | set(bulk_acknowledged)
    return {
        "acknowledged": len(acknowledged),
        "bulk_acknowledged": len(bulk_acknowledged),
        "stored_of_acknowledged": len(wanted & stored),
        "lost": len(wanted - stored),
        "ack_latencies": latencies,
    }


def concurrency_probe(service: Service, rng: random.Random, seconds: float, writers: int) -> dict:
    import requests

    stop = threading.Event()
    small: list[float] = []
    big: list[float] = []
    acks: list[float] = []
    big_cut: list[int] = []
    lock = threading.Lock()
    huge = post_text(rng, 125_000)  # ~1 MB
    next_id = iter(range(5_000_000, 6_000_000))

    def timed_post(session, route: str, body: dict) -> tuple[float, dict]:
        started = time.perf_counter()
        reply = session.post(f"{service.url}{route}", json=body, timeout=120)
        reply.raise_for_status()
        return time.perf_counter() - started, reply.json()

    def big_client() -> None:
        session = requests.Session()
        while not stop.is_set():
            seconds_taken, body = timed_post(session, "/predict", predict_body([huge]))
            big.append(seconds_taken)
            big_cut.append(body["results"][0].get("text_cut_at", 0))

    def small_client() -> None:
        session = requests.Session()
        time.sleep(1.0)  # the 1 MB post is on the model first
        while not stop.is_set():
            seconds_taken, _ = timed_post(session, "/predict", predict_body([post_text(rng, 60)]))
            small.append(seconds_taken)

    def writer() -> None:
        session = requests.Session()
        while not stop.is_set():
            with lock:
                annotation_id = next(next_id)
            seconds_taken, _ = timed_post(session, "/webhook", annotation(annotation_id))
            acks.append(seconds_taken)

    alone_session = requests.Session()
    alone = [timed_post(alone_session, "/predict", predict_body([post_text(rng, 60)]))[0]]
    alone += [
        timed_post(alone_session, "/predict", predict_body([post_text(rng, 60)]))[0]
        for _ in range(19)
    ]
    threads = [threading.Thread(target=big_client), threading.Thread(target=small_client)]
    threads += [threading.Thread(target=writer) for _ in range(writers)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(timeout=180)
    return {
        "small_alone": alone[1:],  # the first is a warm-up
        "small_predict": small,
        "big_predict": big,
        "big_cut_at": big_cut,
        "webhook": acks,
    }


def many_tasks_probe(service: Service, rng: random.Random, tasks: int) -> dict:
    import requests

    body = predict_body([post_text(rng, 120) for _ in range(tasks)])
    started = time.perf_counter()
    reply = requests.post(f"{service.url}/predict", json=body, timeout=120)
    seconds = time.perf_counter() - started
    results = reply.json()["results"]
    return {
        "tasks": tasks,
        "status": reply.status_code,
        "seconds": round(seconds, 2),
        "results": len(results),
        "reached": sum("result" in r for r in results),
    }


def bulk_probe(service: Service, items: int) -> dict:
    import requests

    body = json.dumps(bulk(7_000_000, items))
    started = time.perf_counter()
    reply = requests.post(
        f"{service.url}/webhook",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    acknowledged = time.perf_counter() - started
    service.wait_inbox()
    stored_after = time.perf_counter() - started
    stored = service.store_ids()
    return {
        "items": items,
        "bytes": len(body),
        "status": reply.status_code,
        "ack_seconds": round(acknowledged, 3),
        "all_stored_seconds": round(stored_after, 2),
        "stored": len({7_000_000 + i for i in range(items)} & stored),
    }


def sigterm_probe(service: Service, rng: random.Random) -> float:
    import requests

    body = predict_body([post_text(rng, 3000) for _ in range(40)])

    def send() -> None:
        with contextlib.suppress(requests.RequestException):
            requests.post(f"{service.url}/predict", json=body, timeout=120)

    threading.Thread(target=send, daemon=True).start()
    time.sleep(3.0)
    started = time.perf_counter()
    os.kill(service.process.pid, signal.SIGTERM)
    service.process.wait(timeout=60)
    return round(time.perf_counter() - started, 2)


# --- numbers -------------------------------------------------------------------------------
def percentiles(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def at(q: float) -> float:
        rank = (len(ordered) - 1) * q
        low = int(rank)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)

    return {
        "n": len(ordered),
        "p50_ms": round(1000 * at(0.5), 1),
        "p95_ms": round(1000 * at(0.95), 1),
        "max_ms": round(1000 * ordered[-1], 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=3, help="kill -9 rounds")
    parser.add_argument("--events", type=int, default=300, help="single webhooks per round")
    parser.add_argument("--bulk", type=int, default=2000, help="items of the bulk per round")
    parser.add_argument("--seconds", type=float, default=30.0, help="concurrency probe length")
    parser.add_argument("--writers", type=int, default=8, help="concurrent webhook writers")
    parser.add_argument("--tasks", type=int, default=5000, help="tasks in the big /predict")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--out", type=Path, help="write the numbers as JSON here")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    report: dict = {"cpu": cpu_info().as_dict(), "args": {k: str(v) for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory(prefix="skillloop-reliability-") as tmp:
        tmp = Path(tmp)
        service = Service(make_project(tmp), tmp / "state", tmp / "service.log")
        try:
            service.start()
            kills = [kill_probe(service, rng, args.events, args.bulk) for _ in range(args.kills)]
            report["kill_9"] = {
                "rounds": len(kills),
                "acknowledged": sum(k["acknowledged"] + k["bulk_acknowledged"] for k in kills),
                "stored_of_acknowledged": sum(k["stored_of_acknowledged"] for k in kills),
                "lost": sum(k["lost"] for k in kills),
                "single_ack": percentiles([x for k in kills for x in k["ack_latencies"]]),
            }
            found = concurrency_probe(service, rng, args.seconds, args.writers)
            report["concurrency"] = {
                "writers": args.writers,
                "webhook_ack": percentiles(found["webhook"]),
                "small_predict_alone": percentiles(found["small_alone"]),
                "small_predict": percentiles(found["small_predict"]),
                "one_mb_predict": percentiles(found["big_predict"]),
                "one_mb_cut_at": sorted(set(found["big_cut_at"])),
            }
            report["many_tasks"] = many_tasks_probe(service, rng, args.tasks)
            report["bulk_webhook"] = bulk_probe(service, 5000)
            report["sigterm_seconds"] = sigterm_probe(service, rng)
        finally:
            service.kill()
    print_report(report)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def print_report(r: dict) -> None:
    cpu = r["cpu"]
    print(
        f"CPU: {cpu['model']}; torch capability {cpu['capability']}; native bf16 "
        f"{'yes' if cpu['native_bf16'] else 'no'}; class {cpu['cpu_class']}; "
        f"{cpu['cores']} cores, service 1 thread; load average at start {cpu['load_average']:.1f}"
    )
    k = r["kill_9"]
    print(
        f"kill -9 x{k['rounds']}: {k['acknowledged']} acknowledged, "
        f"{k['stored_of_acknowledged']} of them stored after restart, {k['lost']} lost"
    )
    print(f"  single webhook ack: {fmt(k['single_ack'])}")
    c = r["concurrency"]
    print(f"concurrency ({c['writers']} webhook writers + a 1 MB /predict loop + small /predict):")
    print(f"  webhook ack:        {fmt(c['webhook_ack'])}")
    print(f"  small /predict:     {fmt(c['small_predict'])}")
    print(f"  (small, alone:      {fmt(c['small_predict_alone'])})")
    print(f"  1 MB /predict:      {fmt(c['one_mb_predict'])} (cut at {c['one_mb_cut_at']} chars)")
    m = r["many_tasks"]
    print(
        f"{m['tasks']} tasks in one /predict: HTTP {m['status']} in {m['seconds']} s, "
        f"{m['results']} entries, {m['reached']} predicted (the rest: asked again later)"
    )
    b = r["bulk_webhook"]
    print(
        f"bulk webhook of {b['items']} ({b['bytes']} bytes): acknowledged in {b['ack_seconds']} s,"
        f" all {b['stored']} stored after {b['all_stored_seconds']} s"
    )
    print(f"SIGTERM while predicting: gone in {r['sigterm_seconds']} s")


def fmt(p: dict) -> str:
    if not p.get("n"):
        return "n=0"
    return (
        f"n={p['n']:5d}  p50 {p['p50_ms']:8.1f} ms  p95 {p['p95_ms']:8.1f} ms"
        f"  max {p['max_ms']:8.1f} ms"
    )


if __name__ == "__main__":
    run_benchmark(main)
