"""Which model version a Label Studio project was last pointed at, kept in the project's
state folder under an exclusive file lock.

Every process that serves a project (each gunicorn worker) holds its own model and
notices a promotion on its own, and each would point Label Studio at it: three workers made
three "retrieve predictions for all tasks" calls per promotion, and a worker that noticed
late published an older version after a newer one, so Label Studio's model version went
backwards. With the ledger, publications take turns (`flock`, dropped by the kernel if a
holder dies), the first publishes, the others find the version already recorded and skip,
and a process whose model no longer serves (`serving_version`) publishes nothing.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Published:
    project_id: int
    version: str


class PublicationLedger:
    """`lock_file` and `record_file`: the project state's `studio_publish_lock` and
    `studio_published` (labeling.state.ProjectState)."""

    def __init__(self, lock_file: Path, record_file: Path):
        self.lock_file, self.record_file = Path(lock_file), Path(record_file)

    @contextmanager
    def turn(self) -> Iterator[Published | None]:
        """Hold the project's publication turn; yields what was published last (None:
        nothing yet). Blocks while another process publishes."""
        self.lock_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_file, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield self.last()
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def last(self) -> Published | None:
        try:
            data = json.loads(self.record_file.read_text())
            return Published(int(data["project_id"]), str(data["version"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def record(self, published: Published) -> None:
        """Called inside `turn()`, after Label Studio took the version."""
        path = self.record_file
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        partial.write_text(
            json.dumps({"project_id": published.project_id, "version": published.version})
        )
        os.replace(partial, path)
