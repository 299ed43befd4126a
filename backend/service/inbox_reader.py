"""The inbox reader: big webhooks, stored first and read after.

Label Studio waits 1 s for a webhook, and reading a bulk ANNOTATIONS_CREATED of 5,000
annotations (5.7 MB of JSON, every region checked, one row each) takes longer than that on
a busy machine; even parsing its JSON takes a quarter of it. So a webhook body over
`SYNC_BYTES` is kept as sent in the project's webhook inbox (one fsynced write,
labeling.storage.webhook_inbox.WebhookInbox.enqueue), acknowledged with
`{"status": "queued"}`, and read here, in a thread: all its annotations are stored in one
transaction, or, when one of them is bad, none, and the inbox row says why (`/status`
shows the last refusals, /metrics counts them). A row left pending by a crash (kill -9) is
read at the next start.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from labeling.storage.webhook_inbox import WebhookInbox

log = logging.getLogger(__name__)

# webhook bodies up to this size are read in the request (422 when bad): ~200 annotations
SYNC_BYTES = 256 * 1024


class InboxReader:
    """Drains the project's webhook inbox. `read(body)` turns a body into
    `(records, deleted ids)` or raises ValueError (the refusal recorded); `on_stored(n)` is
    called after each row."""

    def __init__(
        self,
        inbox: WebhookInbox,
        read: Callable[[bytes], tuple[Sequence, Sequence[int]]],
        on_stored: Callable[[int], None] = lambda n: None,
    ):
        self.inbox = inbox
        self.read = read
        self.on_stored = on_stored
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._wake.set()  # what a crash left pending is read first
        self._thread = threading.Thread(target=self._run, name="skillloop-inbox", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        self._idle.clear()
        self._wake.set()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """True once everything enqueued so far has been read (for tests and benchmarks)."""
        return self._idle.wait(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            try:
                self.drain()
            except Exception:  # keep draining later: the rows stay pending
                log.exception("reading the webhook inbox failed")
                self._stop.wait(1.0)
                self._wake.set()
                continue
            if not self._wake.is_set():
                self._idle.set()

    def drain(self) -> int:
        """Read every pending row; returns how many annotations were stored."""
        total = 0
        for inbox_id, body in self.inbox.pending():
            if self._stop.is_set():
                break
            try:
                records, deleted = self.read(body)
            except (ValueError, RecursionError) as err:
                log.warning("inbox row %d refused, nothing stored: %s", inbox_id, err)
                self.inbox.settle(inbox_id, error=str(err) or type(err).__name__)
                continue
            changed = self.inbox.settle(inbox_id, records, deleted)
            log.info("inbox row %d: %d annotations changed", inbox_id, changed)
            total += changed
            self.on_stored(changed)
        return total
