"""Progress of embedding a taxonomy's labels (a linker's first use: minutes for ESCO), told
to the log and to a small JSON file beside the label cache, which `skillloop status` reads.

A log line at most every `every_s` seconds:

    embedding esco: 24,064 of 96,135 labels (25%) in 41 s, about 2 min left
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

log = logging.getLogger("training.linker")

PROGRESS_FILE = "embedding-progress.json"


class EmbeddingProgress:
    """`on_progress(done, total)` for SentenceEncoder.encode; `path` None: log only."""

    def __init__(self, name: str, path: Path | None = None, every_s: float = 10.0):
        self.name = name
        self.path = path
        self.every_s = every_s
        self.started = time.monotonic()
        self.started_at = time.time()
        self._last = float("-inf")

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last < self.every_s and done < total:
            return
        self._last = now
        seconds = now - self.started
        left = seconds / done * (total - done) if done else None
        eta = "" if left is None else f", about {_duration(left)} left"
        log.info(
            "embedding %s: %s of %s labels (%d%%) in %.0f s%s",
            self.name,
            f"{done:,}",
            f"{total:,}",
            100 * done // max(total, 1),
            seconds,
            eta if done < total else "",
        )
        self._write(
            {
                "done": done,
                "total": total,
                "seconds": round(seconds, 1),
                "seconds_left": None if left is None else round(left, 1),
                "finished": done >= total,
            }
        )

    def _write(self, fields: dict) -> None:
        if self.path is None:
            return
        body = {
            "taxonomy": self.name,
            "started_at": self.started_at,
            "updated_at": time.time(),
            "pid": os.getpid(),
            **fields,
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_suffix(".tmp")
            partial.write_text(json.dumps(body) + "\n", encoding="utf-8")
            partial.replace(self.path)
        except OSError:  # progress is a courtesy: never fail the embedding over it
            log.debug("could not write %s", self.path, exc_info=True)


def read_progress(cache_dir: Path) -> dict | None:
    """The last embedding's progress in a label cache folder, or None."""
    try:
        return json.loads((cache_dir / PROGRESS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def describe(progress: dict) -> str:
    """One line for `skillloop status`."""
    done, total = int(progress.get("done", 0)), int(progress.get("total", 0))
    if progress.get("finished"):
        return (
            f"labels of {progress.get('taxonomy')} embedded ({total:,} in "
            f"{_duration(float(progress.get('seconds') or 0))})"
        )
    left = progress.get("seconds_left")
    eta = f", about {_duration(float(left))} left" if left is not None else ""
    return (
        f"embedding {progress.get('taxonomy')}: {done:,} of {total:,} labels "
        f"({100 * done // max(total, 1)}%){eta} (pid {progress.get('pid')})"
    )


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"
