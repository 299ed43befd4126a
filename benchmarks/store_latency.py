"""How long the webhook's durable write takes: `record_from_webhook` + `AnnotationStore.upsert`
(SQLite WAL, synchronous=FULL: an fsync per write; PostgreSQL: synchronous_commit=on), the
work done before the webhook answers Label Studio (timeout 1 s).

    .venv/bin/python -m benchmarks.store_latency [--n 500] [--dir /tmp]
        [--database-url postgresql://... | --postgres]   # default: the SQLite file
`--postgres` starts a throwaway PostgreSQL server (tests/postgres.py: initdb, pg_ctl on a
free loopback port, fsync and synchronous_commit on) and measures the store on it.

Prints p50/p95/p99/max in milliseconds for new annotations, updates of existing ones,
and tombstones. Results land in docs/rounds.md.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from pathlib import Path

from labeling.state import ProjectState
from labeling.studio.config import parse_config
from labeling.studio.payloads import record_from_webhook
from training.cpu import cpu_info

CONFIG = parse_config(
    '<View><Labels name="label" toName="text"><Label value="Technology"/><Label value="Soft"/>'
    '</Labels><Text name="text" value="$text"/></View>'
)
TEXT = ("We are looking for a data engineer with Python, SQL and Spark experience. " * 30).strip()


def payload(annotation_id: int, task_id: int, start: int) -> dict:
    region = {
        "from_name": "label",
        "to_name": "text",
        "type": "labels",
        "value": {
            "start": start,
            "end": start + 6,
            "text": TEXT[start : start + 6],
            "labels": ["Technology"],
        },
    }
    return {
        "action": "ANNOTATION_CREATED",
        "annotation": {
            "id": annotation_id,
            "task": task_id,
            "project": 1,
            "completed_by": 1,
            "result": [region] * 20,
            "was_cancelled": False,
            "ground_truth": False,
            "lead_time": 30.0,
            "created_at": "2026-11-25T17:00:00Z",
            "updated_at": f"2026-11-25T17:00:{start % 60:02d}Z",
        },
        "task": {"id": task_id, "data": {"text": TEXT}, "meta": {}},
        "project": {"id": 1},
    }


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def summary(name: str, ms: list[float]) -> str:
    q = statistics.quantiles(ms, n=100)
    return (
        f"{name:<9} n={len(ms):<5} p50 {q[49]:6.2f} ms  p95 {q[94]:6.2f} ms  "
        f"p99 {q[98]:6.2f} ms  max {max(ms):6.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--dir", type=Path, default=None, help="where the database goes")
    parser.add_argument("--database-url", default=None, help="a PostgreSQL store instead")
    parser.add_argument("--postgres", action="store_true", help="on a throwaway server")
    args = parser.parse_args()
    if args.postgres:
        from tests.postgres import PostgresServer

        with PostgresServer() as server:
            measure(args, server.create_database("bench"))
    else:
        measure(args, args.database_url)


def measure(args: argparse.Namespace, database_url: str | None) -> None:
    if database_url:
        os.environ["SKILLLOOP_DATABASE_URL"] = database_url
    print(cpu_info().line())
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        opened = ProjectState(Path(folder)).store()
        store = opened.annotations
        new = [
            timed(lambda i=i: store.upsert(record_from_webhook(payload(i, i, 40), CONFIG)))
            for i in range(1, args.n + 1)
        ]
        updates = []
        for i in range(1, args.n + 1):
            body = copy.deepcopy(payload(i, i, 74))
            body["action"] = "ANNOTATION_UPDATED"
            updates.append(timed(lambda b=body: store.upsert(record_from_webhook(b, CONFIG))))
        deletes = [timed(lambda i=i: store.tombstone([i])) for i in range(1, args.n + 1)]
        print(f"store in {opened.location} ({len(TEXT)}-char posts, 20 regions each)")
        print(summary("create", new))
        print(summary("update", updates))
        print(summary("tombstone", deletes))
        opened.close()


if __name__ == "__main__":
    main()
