"""Ray: where the job runs, and the one Ray Data pipeline every corpus command uses.

`--ray-address local` starts a Ray on this machine for the job (stopped with it); `auto`
joins the cluster this machine is part of (`ray start` ran here); `HOST:PORT` is a
cluster's GCS address. Not `ray://` (Ray Client): Ray Data needs its driver on the
cluster. The pipeline: the planned blocks as a dataset (one row per block), `map_batches`
over a callable class with `concurrency=` actors, each holding one model, one block at a
time, results streamed back to the driver as they complete.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import Any

from backend.corpus.sources import Block

log = logging.getLogger(__name__)


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
    if address.startswith("ray://"):
        # Ray Data's executor needs a driver on the cluster: over Ray Client it fails with
        # "'Worker' object has no attribute 'core_worker'" (tried with Ray 2.58.0)
        raise ValueError(
            "Ray Data does not run over Ray Client (ray://): run the command on a node of "
            "the cluster with --ray-address auto, or as a job: ray job submit (docs/ray.md)"
        )
    if address not in ("local", "auto") and ":" not in address:
        raise ValueError(f"--ray-address takes local, auto or HOST:PORT, got {address!r}")


def connect(address: str, num_cpus: int | None = None) -> int:
    """Join or start Ray; returns the CPUs the cluster has (the default actor count)."""
    ray_version()
    import ray

    check_address(address)
    if not ray.is_initialized():
        options: dict[str, Any] = {"address": address, "log_to_driver": False}
        if address == "local":
            options["include_dashboard"] = False
            if num_cpus:
                options["num_cpus"] = num_cpus
        try:
            ray.init(**options)
        except (ConnectionError, RuntimeError, TimeoutError) as err:
            raise ValueError(f"could not connect to Ray at {address}: {err}") from None
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def disconnect() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


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
