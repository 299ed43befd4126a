"""Load test: gunicorn with 4 workers vs 1 under /predict and webhook load while a round
trains, with the round lock on PostgreSQL; one of the 4 workers is killed with -9
mid-stream and every acknowledged annotation must still be in the store.

For each worker count: gunicorn `-w N --threads 2` on loopback serves a temporary
project (the offline MiniLM-L6 backbone with a seeded random head, benchmarks/
service_project.py; `[retrain] every_n_annotations` small, one epoch, so the webhooks
start a round during the load). --predictors threads send one-task /predict calls and
--writers threads send ANNOTATION_CREATED webhooks (distinct posts) for --seconds
seconds. With 4 workers one worker without a training child is SIGKILLed at half time
(gunicorn starts another). Printed and written as JSON: p50/p95 per route, errors (a
request cut by the kill is an error, not an acknowledgement), acknowledged vs stored
annotations, the rounds run (and that none overlapped), and the CPU.

    flock /work/heavy.lock nice -n 10 .venv/bin/python -m benchmarks.load_test \\
        --out /tmp/load_test.json

Without --database-url a throwaway PostgreSQL server is started (tests/postgres.py, Debian's
package). Bounded: --seconds per worker count plus start-up; nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from backend.service.serving_process import ServedProcess, child_pids
from benchmarks.common import run_benchmark
from benchmarks.reliability import WORDS, percentiles, predict_body
from benchmarks.service_project import skillspan_backbone_project
from training.cpu import cpu_info

RETRAIN = (
    "[training]\nepochs = 1\n\n[retrain]\nevery_n_annotations = {every}\ndebounce_seconds = 1\n"
)


def annotation(annotation_id: int, rng: random.Random) -> dict:
    """An ANNOTATION_CREATED webhook on a post of its own (so rounds have data)."""
    words = [rng.choice(WORDS) for _ in range(12)]
    text = f"{' '.join(words)} number {annotation_id}"
    value = {"start": 0, "end": len(words[0]), "text": words[0], "labels": ["Skill"]}
    result: list[dict[str, object]] = [
        {"id": "r", "from_name": "label", "to_name": "text", "type": "labels", "value": value}
    ]
    return {
        "action": "ANNOTATION_CREATED",
        "annotation": {"id": annotation_id, "task": annotation_id, "result": result},
        "task": {"id": annotation_id, "data": {"text": text}},
        "project": {"id": 1},
    }


class Gunicorn(ServedProcess):
    """gunicorn -w N --threads 2 on the throwaway project, its round lock and store on
    PostgreSQL at `database_url`; ready once every worker is up and the model loaded."""

    def __init__(self, project: Path, state: Path, log: Path, workers: int, database_url: str):
        env = {"SKILLLOOP_DATABASE_URL": database_url, "SKILLLOOP_WATCH_INTERVAL": "2"}
        options = {"server": "gunicorn", "workers": workers, "server_threads": 2, "env": env}
        super().__init__(project, state, log, timeout=300, **options)
        self.database_url = database_url


def stored_ids(project: Path, state: Path, database_url: str) -> set[int]:
    """The annotation ids in the store the service wrote (the PostgreSQL database)."""
    from labeling.project import load_project
    from labeling.state import ProjectState

    os.environ["SKILLLOOP_DATABASE_URL"] = database_url
    with ProjectState.of(load_project(project), state).store() as store:
        return {r.annotation_id for r in store.annotations.records()}


def load_phase(service: Gunicorn, args, first_id: int, kill: bool) -> dict:
    import requests

    stop = threading.Event()
    lock = threading.Lock()
    latency: dict[str, list[float]] = {"predict": [], "webhook": []}
    errors = {"predict": 0, "webhook": 0}
    acknowledged: set[int] = set()
    ids = iter(range(first_id, first_id + 10**6))
    body = predict_body(["Python, SQL and stakeholder management for a cloud data team."])
    running_seen = []

    def predictor() -> None:
        session = requests.Session()
        while not stop.is_set():
            started = time.perf_counter()
            try:
                ok = session.post(f"{service.url}/predict", json=body, timeout=60).ok
            except requests.RequestException:
                ok = False
                session = requests.Session()
            with lock:
                if ok:
                    latency["predict"].append(time.perf_counter() - started)
                else:
                    errors["predict"] += 1

    def writer(seed: int) -> None:
        rng, session = random.Random(seed), requests.Session()
        while not stop.is_set():
            with lock:
                annotation_id = next(ids)
            started = time.perf_counter()
            try:
                reply = session.post(
                    f"{service.url}/webhook", json=annotation(annotation_id, rng), timeout=30
                )
                ok = reply.status_code == 200
            except requests.RequestException:
                ok = False
                session = requests.Session()
            with lock:
                if ok:
                    acknowledged.add(annotation_id)
                    latency["webhook"].append(time.perf_counter() - started)
                else:
                    errors["webhook"] += 1

    def watch_status() -> None:  # whether a round trains during the load
        while not stop.wait(1.0):
            with contextlib.suppress(requests.RequestException, ValueError):
                running_seen.append(
                    bool(requests.get(f"{service.url}/status", timeout=5).json().get("running"))
                )

    threads = [threading.Thread(target=predictor) for _ in range(args.predictors)]
    threads += [threading.Thread(target=writer, args=(k,)) for k in range(args.writers)]
    threads.append(threading.Thread(target=watch_status))
    for thread in threads:
        thread.start()
    killed = None
    time.sleep(args.seconds / 2)
    if kill:
        idle = [p for p in service.worker_pids() if not child_pids(p)]  # not the trainer
        killed = (idle or service.worker_pids())[0]
        os.kill(killed, signal.SIGKILL)
    time.sleep(args.seconds / 2)
    stop.set()
    for thread in threads:
        thread.join(timeout=120)
    stored = stored_ids(service.project, service.state, service.database_url)
    return {
        "workers": service.workers,
        "seconds": args.seconds,
        "predict": percentiles(latency["predict"]),
        "webhook": percentiles(latency["webhook"]),
        "errors": errors,
        "killed_worker": killed,
        "acknowledged": len(acknowledged),
        "stored_of_acknowledged": len(acknowledged & stored),
        "lost": len(acknowledged - stored),
        "status_polls_with_a_round_running": sum(running_seen),
        "status_polls": len(running_seen),
    }


def rounds_report(state: Path) -> dict:
    path = next(state.glob("*/rounds.jsonl"), None)
    rounds = [json.loads(x) for x in path.read_text().splitlines()] if path else []
    trained = [r for r in rounds if r["status"] not in ("skipped",)]
    spans = sorted((r["started_at"], r["finished_at"]) for r in trained if r.get("finished_at"))
    overlapping = sum(1 for a, b in zip(spans, spans[1:], strict=False) if b[0] < a[1])
    return {
        "rounds": [
            {k: r.get(k) for k in ("status", "train_documents", "started_at", "finished_at")}
            for r in trained
        ],
        "skipped": len(rounds) - len(trained),
        "overlapping": overlapping,
    }


@contextlib.contextmanager
def database(url: str | None):
    if url:
        yield url
        return
    from tests.postgres import PostgresServer

    server = PostgresServer().start()
    try:
        yield server.create_database()
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="load per worker count")
    parser.add_argument("--predictors", type=int, default=4, help="/predict client threads")
    parser.add_argument("--writers", type=int, default=2, help="webhook client threads")
    parser.add_argument("--every", type=int, default=20, help="annotations per round")
    parser.add_argument("--database-url", help="postgresql://... (default: a throwaway server)")
    parser.add_argument("--out", type=Path, help="write the numbers as JSON here")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers it started
    report: dict = {"cpu": cpu_info().as_dict(), "args": {k: str(v) for k, v in vars(args).items()}}
    print(cpu_info().line(), flush=True)
    with (
        tempfile.TemporaryDirectory(prefix="skillloop-load-") as tmp,
        database(args.database_url) as url,
    ):
        report["runs"] = []
        for n, workers in enumerate((1, 4)):
            folder = Path(tmp) / f"w{workers}"
            folder.mkdir()
            project = skillspan_backbone_project(folder, RETRAIN.format(every=args.every))
            service = Gunicorn(project, folder / "state", folder / "gunicorn.log", workers, url)
            started = time.perf_counter()
            service.start()
            try:
                run: dict = {"start_s": round(time.perf_counter() - started, 1)}
                run |= load_phase(service, args, 1 + n * 10**6, kill=workers > 1)
            finally:
                service.kill()
            run["rounds"] = rounds_report(folder / "state")
            report["runs"].append(run)
            print_run(run, flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(r["lost"] == 0 for r in report["runs"]) else 1


def print_run(run: dict, flush: bool = True) -> None:
    p, w = run["predict"], run["webhook"]
    print(
        f"-w {run['workers']}: /predict n={p.get('n')} p50 {p.get('p50_ms')} ms p95 "
        f"{p.get('p95_ms')} ms; webhook n={w.get('n')} p50 {w.get('p50_ms')} ms p95 "
        f"{w.get('p95_ms')} ms; errors {run['errors']}; killed worker {run['killed_worker']}; "
        f"acknowledged {run['acknowledged']}, stored {run['stored_of_acknowledged']}, lost "
        f"{run['lost']}; a round running in {run['status_polls_with_a_round_running']} of "
        f"{run['status_polls']} status polls; rounds {run['rounds']}",
        flush=flush,
    )


if __name__ == "__main__":
    run_benchmark(main)
