"""Ray: where the job runs, and the one Ray Data pipeline every corpus command uses.

`--ray-address local` starts a Ray on this machine for the job (stopped with it); `auto`
joins the cluster this machine is part of (`ray start` ran here); `HOST:PORT` is a
cluster's GCS address; `ray://HOST:PORT` reaches a cluster's Ray Client server from
anywhere, and the job's driver then runs as a Ray task on the cluster (`on_cluster`): Ray
Data needs its driver on the cluster. The pipeline: the planned blocks as a dataset (one
row per block), `map_batches` over a callable class with `concurrency=` actors, each
holding one model, one block at a time, results streamed back to the driver as they
complete.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from typing import Any, TypeVar

from backend.corpus.sources import Block

log = logging.getLogger(__name__)
T = TypeVar("T")
CLIENT_ATTEMPTS = 3  # Ray Client connections tried before `on_cluster` gives up
_joined = False  # whether `connect` ran ray.init in this process (a task's Ray is not ours)


def ray_version() -> str:
    try:
        import ray
    except ImportError as err:
        raise ValueError(
            "Ray is not installed: pip install 'skillloop[ray]' (docs/ray.md)"
        ) from err
    return str(ray.__version__)


def check_address(address: str) -> None:
    """Refuse what `connect` cannot use, before a command builds anything."""
    if address not in ("local", "auto") and ":" not in address:
        raise ValueError(
            f"--ray-address takes local, auto, HOST:PORT or ray://HOST:PORT, got {address!r}"
        )


def on_cluster(address: str, driver: Callable[..., T], *args: Any) -> T:
    """`driver(*args)`: here, or for a `ray://` address as a Ray task on the cluster.

    Over Ray Client a Ray Data pipeline fails (Ray 2.58.0: "'Worker' object has no
    attribute 'core_worker'"), so the whole driver goes to the cluster, where its `connect`
    finds the task's own Ray; only its arguments and its result travel. The paths it reads
    and writes are then the cluster's."""
    if not address.startswith("ray://"):
        return driver(*args)
    ray_version()
    import ray

    if importlib.util.find_spec("grpc") is None:
        raise ValueError(
            "Ray Client (ray://) needs grpcio here and on the cluster's head: "
            "pip install 'ray[client]' (docs/ray.md)"
        )
    for attempt in range(CLIENT_ATTEMPTS):
        try:
            ray.init(address, log_to_driver=True)
            break
        except (ConnectionError, RuntimeError, TimeoutError) as err:
            # a failed ray:// init leaves this process in client mode, where every later
            # ray.init (a local job, another address) fails: undo it before anything else
            ray.shutdown()
            # the head starts one server per client connection; seen failing to start now
            # and then on loaded loopback clusters (docs/ray.md), reported as the server
            # failing or, when it exits while the head checks on it, as a ZombieProcess
            # traceback: both come back as an initialization failure, worth a retry
            if _server_did_not_start(err) and attempt + 1 < CLIENT_ATTEMPTS:
                log.warning("Ray Client server did not start at %s; trying again", address)
                time.sleep(2.0)
                continue
            raise ValueError(f"could not connect to Ray at {address}: {err}") from None
    try:
        return ray.get(ray.remote(num_cpus=0)(driver).remote(*args))
    finally:
        ray.shutdown()


def _server_did_not_start(err: Exception) -> bool:
    return "Initialization failure from server" in str(err) or "client server failed" in str(err)


def connect(address: str, num_cpus: int | None = None) -> int:
    """Join or start Ray; returns the CPUs the cluster has (the default actor count)."""
    ray_version()
    import ray

    global _joined
    check_address(address)
    if not ray.is_initialized():
        options: dict[str, Any] = {"address": address, "log_to_driver": False}
        if address == "local":
            options["include_dashboard"] = False
            if num_cpus:
                options["num_cpus"] = num_cpus
        try:
            ray.init(**options)
            _joined = True
        except (ConnectionError, RuntimeError, TimeoutError) as err:
            raise ValueError(f"could not connect to Ray at {address}: {err}") from None
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def disconnect() -> None:
    """Stop what `connect` joined or started (inside a task, nothing)."""
    global _joined
    import ray

    if _joined and ray.is_initialized():
        ray.shutdown()
    _joined = False


def run_blocks(
    actor: type,
    blocks: Sequence[Block],
    args: Sequence[Any],
    actors: int,
    threads: int = 1,
    progress: bool = True,
) -> Iterator[dict]:
    """`actor(*args)` on `actors` Ray actors (`threads` CPUs each), called with batches of
    one block; yields each result row as it arrives (in no set order)."""
    import ray.data

    if not blocks:
        return
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = progress
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # a line per block is ours
    dataset = ray.data.from_items(
        [asdict(block) for block in blocks], override_num_blocks=len(blocks)
    )
    results = dataset.map_batches(
        actor,
        fn_constructor_args=tuple(args),
        batch_size=1,
        concurrency=max(1, min(actors, len(blocks))),
        num_cpus=threads,
        batch_format="numpy",
    )
    yield from results.iter_rows()
