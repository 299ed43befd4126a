"""kill -9 durability: the real service in its own process takes a stream of annotation
webhooks from several threads and is killed with SIGKILL at a random moment; after a
restart every annotation it had acknowledged (HTTP 200) is in the store, intact.

Run against both servers: `skillloop serve` (the development server) and gunicorn with
one worker and threads, as docs/service.md recommends for production; and on both stores:
the SQLite file, and a real PostgreSQL (`SKILLLOOP_DATABASE_URL`, tests/postgres.py)."""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path

import pytest
import requests
from service_helpers import annotation_event, require_server, write_project

from backend.service.serving_process import ServedProcess, answering
from labeling.project import load_project
from labeling.state import ProjectState

REPO = Path(__file__).resolve().parents[1]
N_EVENTS = 300
SENDERS = 4
TEXT = "Senior data engineer: Python, SQL and stakeholder management."


def start_service(kind: str, project: Path, state: Path, log: Path) -> ServedProcess:
    """The service on a free port, ready once /health answers."""
    require_server(kind)
    return ServedProcess(project, state, log, server=kind, ready=answering).start()


@pytest.mark.parametrize("kind", ["cli", "gunicorn"])
def test_kill_9_loses_no_acknowledged_annotation(
    tmp_path, tiny_reference_model, kind, database_url
):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    project = write_project(tmp_path / "project", tiny_reference_model)
    state = tmp_path / "state"
    log = tmp_path / "service.log"
    service = start_service(kind, project, state, log)
    url = service.url

    acknowledged: set[int] = set()
    lock = threading.Lock()
    kill_after = rng.randrange(20, N_EVENTS - 50)  # acknowledgements before the kill
    killed = threading.Event()
    ids = iter(range(1, N_EVENTS + 1))

    def sender() -> None:
        session = requests.Session()
        while not killed.is_set():
            with lock:
                annotation_id = next(ids, None)
            if annotation_id is None:
                return
            event = annotation_event(
                annotation_id,
                10_000 + annotation_id,
                TEXT,
                [(22, 28, "Technology"), (30, 33, "Technology")],
            )
            try:
                reply = session.post(f"{url}/webhook", json=event, timeout=10)
            except requests.RequestException:
                continue  # killed mid-request: not acknowledged
            if reply.status_code == 200:
                with lock:
                    acknowledged.add(annotation_id)
                    if len(acknowledged) >= kill_after and not killed.is_set():
                        time.sleep(rng.random() * 0.01)  # land inside other in-flight writes
                        service.kill()
                        killed.set()

    threads = [threading.Thread(target=sender) for _ in range(SENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    if not killed.is_set():
        service.kill()  # never leave a server behind a failed run
        pytest.fail(f"the stream ended before the kill (seed {seed})")
    assert service.process is not None and service.process.returncode == -signal.SIGKILL

    # restart on the same state folder: the store opens (WAL recovery) and serves
    service.start()
    try:
        after = annotation_event(N_EVENTS + 1, 99_999, TEXT, [(22, 28, "Technology")])
        assert requests.post(f"{service.url}/webhook", json=after, timeout=10).status_code == 200
    finally:
        service.kill()
    # the service's own way to its store (the URL is in this process's environment too)
    with ProjectState.of(load_project(project), state).store() as store:
        assert (store.path is None) == (database_url is not None)
        records = {r.annotation_id: r for r in store.annotations.records()}
    missing = sorted(acknowledged - set(records))
    assert not missing, f"acknowledged but lost after kill -9 (seed {seed}): {missing}"
    assert N_EVENTS + 1 in records
    for annotation_id in acknowledged:
        spans = records[annotation_id].spans
        assert [(s.start, s.end, s.text) for s in spans] == [(22, 28, "Python"), (30, 33, "SQL")]
    where = "postgresql" if database_url else "sqlite"
    print(f"{kind}, {where}: {len(acknowledged)} acknowledged, killed after {kill_after}")
    print(f"seed {seed}")
