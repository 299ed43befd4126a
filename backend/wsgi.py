"""The WSGI entry point for gunicorn, configured by environment variables:

    SKILLLOOP_PROJECT=projects/linkedin-skills \\
    gunicorn -w 1 --threads 4 -b 127.0.0.1:9090 'backend.wsgi:app'

Exactly one worker process (-w 1): the warm model, the training worker thread and the one
training round at a time live in that process; a second worker would load a second model,
run a second training worker racing on the same registry, and split the metrics. Threads
(--threads) give concurrency: predictions serialise on the model, webhooks do not wait for
them. Do not use --preload: the background threads would be lost when gunicorn forks.

`app` is built on first access, not at import: importing this module does no work.
"""

from __future__ import annotations

import atexit
import threading

_lock = threading.Lock()
_app = None


def application():
    """The application, built once from the environment (ServiceConfig.from_env)."""
    global _app
    with _lock:
        if _app is None:
            from backend.app import create_app
            from backend.settings import ServiceConfig

            _app = create_app(ServiceConfig.from_env())
            atexit.register(_app.extensions["skillloop"].close)
    return _app


def __getattr__(name: str):
    # gunicorn resolves 'backend.wsgi:app' with getattr(module, "app")
    if name == "app":
        return application()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
