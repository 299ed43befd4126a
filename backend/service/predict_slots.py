"""A bound on the /predict requests one worker process holds at once.

Predictions take turns on the model, so a /predict beyond the one running only waits, and
it waits on a server thread: with gunicorn `--threads 4`, four large /predicts took every
thread and a webhook waited 63 s (Label Studio gives a webhook 1 s and does not retry).
Here at most SKILLLOOP_PREDICT_SLOTS (2 by default: one predicting, one next in line)
/predicts are inside the application; one more is answered at once with 503, a JSON
reason and Retry-After, so the other threads stay free for webhooks and /health. Run
gunicorn with `--threads` at least the slots plus two (docs/service.md).

The slot is taken before the route reads the body: without a buffering proxy in front, a
/predict that uploads slowly holds a slot, not one thread more.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from flask import Response, jsonify

log = logging.getLogger(__name__)

DEFAULT_SLOTS = 2
RETRY_AFTER_S = 2  # a maximum-size /predict takes longer; a small one is done by then
ENV = "SKILLLOOP_PREDICT_SLOTS"


def slots_from_env(environ: dict[str, str] | None = None) -> int:
    """SKILLLOOP_PREDICT_SLOTS as a positive integer; ValueError saying so otherwise (a
    mistyped setting stops the start, it is not silently replaced)."""
    raw = (os.environ if environ is None else environ).get(ENV, "").strip()
    if not raw:
        return DEFAULT_SLOTS
    if not raw.isascii() or not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{ENV} must be a whole number >= 1, not {raw!r}")
    return int(raw)


class PredictSlots:
    """`bounded(view)`: the view runs only while one of `slots` is free; else 503."""

    def __init__(self, slots: int):
        if slots < 1:
            raise ValueError("at least one /predict slot")
        self.slots = slots
        self._free = threading.BoundedSemaphore(slots)

    @classmethod
    def from_env(cls) -> PredictSlots:
        return cls(slots_from_env())

    def bounded(self, view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            # never blocks: a request waiting here would hold the very thread we keep free
            if not self._free.acquire(blocking=False):
                return self.busy()
            try:
                return view(*args, **kwargs)
            finally:
                self._free.release()

        return wrapper

    def busy(self) -> Response:
        log.info("/predict -> 503: %d predictions already in this worker", self.slots)
        response = jsonify(
            error=f"busy: {self.slots} predictions already running or waiting in this "
            f"worker; retry in {RETRY_AFTER_S} s",
            retry=True,
        )
        response.status_code = 503
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response
