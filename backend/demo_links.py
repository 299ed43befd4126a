"""What `make demo` says about taxonomy links: the backend's linker as its `/status` tells
it, polled from the demo's loop, so the demo prints when links become available (ESCO's
first use embeds its 96,135 labels: minutes; later runs read the cache in seconds)."""

from __future__ import annotations

import base64
import json
import time
import urllib.request

from backend.service.config import auth_from_env

POLL_S = 5.0  # how often /status is asked
PROGRESS_EVERY_S = 60.0  # how often the embedding's progress is printed


def linking_state(url: str) -> dict | None:
    """/status's `linking` object ({"enabled", "ready", "loading", "embedding", "error"}),
    or None when the backend does not answer."""
    request = urllib.request.Request(f"{url}/status")
    auth = auth_from_env()
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            found = json.loads(reply.read() or b"{}").get("linking")
    except (OSError, ValueError, AttributeError):
        return None
    return found if isinstance(found, dict) else None


class LinkWatch:
    """Polls the backend until its linker is ready (or failed), printing its progress once
    a minute and one line when links become available. `settled`: ready, failed or off."""

    def __init__(self, url: str, taxonomy: str, clock=time.monotonic):
        self.url, self.taxonomy, self.clock = url, taxonomy, clock
        self.began = clock()
        self.settled = False
        self.ready = False
        self._next_poll = float("-inf")
        self._next_note = self.began + PROGRESS_EVERY_S

    def poll(self) -> bool:
        """Asks /status at most every POLL_S seconds; True once settled."""
        now = self.clock()
        if self.settled or now < self._next_poll:
            return self.settled
        self._next_poll = now + POLL_S
        state = linking_state(self.url)
        if state is None:  # not answering (yet): ask again later
            return False
        seconds = now - self.began
        if state.get("ready"):
            self.settled = self.ready = True
            print(
                f"== links ready after {seconds:.0f} s: each suggested span is linked to "
                f"{self.taxonomy}; select a span to see its candidates, search or add an entry",
                flush=True,
            )
        elif state.get("error") or not state.get("enabled", True) or not state.get("loading"):
            self.settled = True
            why = state.get("error") or "the backend loads no linker"
            print(f"== no links: {why} (see the backend log)", flush=True)
        elif now >= self._next_note:
            self._next_note = now + PROGRESS_EVERY_S
            print(f"  links: {progress_line(state.get('embedding'), self.taxonomy)}", flush=True)
        return self.settled


def progress_line(embedding: dict | None, taxonomy: str) -> str:
    if not embedding or not embedding.get("total"):
        return f"loading the {taxonomy} linker"
    done, total = int(embedding.get("done") or 0), int(embedding["total"])
    left = embedding.get("seconds_left")
    eta = f", about {max(1, round(left / 60))} min left" if left else ""
    return f"embedding {taxonomy}'s labels: {done:,} of {total:,} ({100 * done // total}%){eta}"
