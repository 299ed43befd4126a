"""The WSGI entry point for gunicorn, configured by environment variables:

    SKILLLOOP_PROJECT=projects/linkedin-skills \\
    gunicorn -w 4 --threads 4 --graceful-timeout 3 -b 127.0.0.1:9091 'backend.service.wsgi:app'

Each worker process holds a warm model, a training worker thread and its metrics. Several
workers (-w 4, and several hosts sharing the state folder and its database, labeling/state.py) each
answer /predict from the registry's serving version and pick up a promotion within
SKILLLOOP_WATCH_INTERVAL seconds; exactly one round runs across them (the round lock,
backend/loop/lock.py). Threads (--threads) give concurrency within a worker:
predictions serialise on the model, webhooks do not wait for them. Do not use --preload:
the background threads would be lost when gunicorn forks.

`app` is built on first access, not at import: importing this module does no work.

SIGTERM: gunicorn lets requests in flight finish for `--graceful-timeout` seconds (30 by
default: pass 3 to be gone within 5 s). The application adds to gunicorn's SIGTERM
handler: predictions in flight stop after their current chunk (the tasks not reached are
answered as such), so the worker usually exits before the graceful timeout.
"""

from __future__ import annotations

import atexit
import signal
import threading

_lock = threading.Lock()
_app = None


def application():
    """The application, built once from the environment (ServiceConfig.from_env)."""
    global _app
    with _lock:
        if _app is None:
            from backend.service.app import create_app
            from backend.service.config import ServiceConfig

            _app = create_app(ServiceConfig.from_env())
            services = _app.extensions["skillloop"]
            atexit.register(services.close)
            _stop_predicting_on_sigterm(services)
    return _app


def _stop_predicting_on_sigterm(services) -> None:
    """Chain onto the server's SIGTERM handler (gunicorn builds the app in the worker's
    main thread, after installing its own): stop predictions, then do what it did."""
    if threading.current_thread() is not threading.main_thread():
        return  # signals can only be set from the main thread
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum, frame):
        services.stop_predicting()
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, handler)


def __getattr__(name: str):
    # gunicorn resolves 'backend.service.wsgi:app' with getattr(module, "app")
    if name == "app":
        return application()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
