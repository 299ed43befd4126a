"""Giving memory back after a large request (issue 22.8: a gunicorn worker stayed at 823 MB
after maximum-size /predicts, from 496 MB).

A 16 MB /predict body becomes bytes, a parsed JSON tree, 800 texts, their pieces, token ids
and results, allocated by several request threads; when the request ends Python frees them,
but glibc keeps the freed pages in each thread's malloc arena for later use, so the process
stays large. `release_memory()` asks glibc to hand free pages back to the system
(`malloc_trim(0)`, which also returns free pages in the middle of each arena); the app
calls it once a request whose body was past `TRIM_AFTER_BYTES` is answered and closed
(backend/service/app.py), so it costs nothing on ordinary requests. Elsewhere than glibc
(musl, macOS) it does nothing. Measured by benchmarks/predict_memory.py (docs/service.md):
after four maximum-size /predicts a worker is back within 10 MB of where it started (181 MB
above without it); fewer malloc arenas (MALLOC_ARENA_MAX=2) gained nothing more.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from functools import cache

log = logging.getLogger(__name__)

TRIM_AFTER_BYTES = 1024 * 1024  # bodies past 1 MiB: /predicts of many tasks, bulk webhooks


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        libc.malloc_trim  # noqa: B018 -- glibc only
    except (OSError, AttributeError):
        return None
    return libc


def release_memory() -> bool:
    """Hand the memory freed by the request back to the system; whether glibc did any."""
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.malloc_trim(0))
