"""Linking inside the service: the project's linker loaded in the background (like the
model, never inside a request), predicted spans linked within /predict's budget, and the
candidates written into Label Studio's tasks for the editor's link control.

Label Studio's editor reads a per-region Choices' options from the task's data
(labeling.studio.links), and a prediction cannot change task data, so after answering
/predict a background thread PATCHes each linked task's `link_choices` through Label
Studio's API (when a URL and API key are configured). Label Studio's own stored
prediction already holds the chosen entries; the options only make them visible and
selectable. The same PATCH writes the URL of `GET /taxonomy` (`taxonomy_response`), from
which the annotator's browser loads the whole taxonomy for the link search.

Projects whose linkers are the same (`backend.linkers.linker_key`: taxonomy, linker folder
and their versions, settings, annotators' additions; the Label Studio projects of one
template on a backend serving several) hold one loaded linker, in a `ModelCache` of
linkers as backend/service/model_cache.py shares taggers, and take turns linking with it
(a tokenizer must not run in two threads at once). Linkers are not bounded: one is
unloaded when no project holds it any longer.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from backend.linkers import LinkerKey, linker_key, project_linker
from backend.service.model_cache import ModelCache
from labeling.link_pairs import project_taxonomy_additions
from training.text import Document, Span

if TYPE_CHECKING:
    from labeling.project import Project
    from labeling.state import ProjectState
    from labeling.studio.client import StudioClient
    from training.linker import Link, Linker
    from training.taxonomy import TaxonomyEntry

log = logging.getLogger(__name__)


class LinkerHolder:
    """The project's linker (`[linking]` in project.toml), loaded once in a thread; None
    until then (and forever when the project names no taxonomy or loading failed)."""

    def __init__(self, project: Project, state: ProjectState, cache: ModelCache | None = None):
        self.project = project
        self.project_state = state  # its linker versions and label-embedding cache
        self.enabled = bool(project.linking.taxonomy)
        self.cache = ModelCache() if cache is None else cache  # shared by a backend's projects
        self.key: LinkerKey | None = None  # the loaded linker's key in `cache`
        self.linker: Linker | None = None
        self.top_k = project.linking.top_k
        self.error: str | None = None
        # GET /taxonomy's JSON, plain and gzipped, made once the linker is loaded
        self.search_body: tuple[bytes, bytes] | None = None
        self._ready = threading.Event()
        if not self.enabled:
            self._ready.set()

    def start(self, background: bool = True, after: Callable[[], object] | None = None) -> None:
        """Load the linker; in the background, once `after()` returns (the model holder's
        wait: two threads importing transformers at once can break its lazy imports)."""
        if not self.enabled:
            return
        if background:
            threading.Thread(
                target=self._load, args=(after,), name="skillloop-linker", daemon=True
            ).start()
        else:
            self._load()

    def _load(self, after: Callable[[], object] | None = None) -> None:
        if after is not None:
            after()
        started = time.perf_counter()
        try:
            if self.top_k < 1:
                raise ValueError("[linking] top_k must be at least 1")
            additions = project_taxonomy_additions(self.project_state)
            key = linker_key(self.project, self.project_state, additions=additions)
            self.linker = self.cache.acquire(key, self, lambda: self._open(additions))
            self.key = key
            self.search_body = search_body(self.linker)
            log.info("linker ready in %.1f s", time.perf_counter() - started)
        except Exception as err:  # linking is an extra: predictions go on without it
            self.error = f"{type(err).__name__}: {err}"
            log.exception("the linker could not be loaded; predictions carry no links")
        finally:
            self._ready.set()

    def _open(self, additions: list[TaxonomyEntry]) -> Linker:
        found, _ = project_linker(
            self.project, self.project_state, progress=False, additions=additions
        )
        return found

    def unloaded(self, key: LinkerKey) -> None:
        """The cache dropped the linker (not done: the linker cache has no bound)."""
        if key == self.key:
            self.linker, self.key = None, None

    def close(self) -> None:
        """The project stops serving: its linker is unloaded unless another project holds it."""
        key, self.key, self.linker = self.key, None, None
        self.cache.release(key, self)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def embedding(self) -> dict | None:
        """This process's embedding of the taxonomy's labels while it runs (a linker's
        first use: minutes for ESCO), else None."""
        from training.embedding_progress import read_progress

        if self.ready:
            return None
        found = read_progress(self.project_state.linking_cache)
        if found is None or found.get("finished") or found.get("pid") != os.getpid():
            return None
        return found

    def state(self) -> dict:
        """What /status says about linking."""
        return {
            "enabled": self.enabled,
            "ready": self.linker is not None,
            "loading": self.enabled and not self.ready,
            "embedding": self.embedding(),
            "error": self.error,
            "in_memory": self.cache.summary(),  # linkers held, loads: the process's
        }

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    def link(self, texts: Sequence[str], spans: Sequence[Sequence[Span]]) -> list[list[Link]]:
        """Links for each text's spans ([] per text while the linker is not loaded)."""
        from training.linker import link_spans

        linker, key = self.linker, self.key
        if linker is None or key is None:
            return [[] for _ in texts]
        docs = [Document(t, list(s)) for t, s in zip(texts, spans, strict=True)]
        with self.cache.turns(key), self.cache.using(key):  # projects sharing it take turns
            return link_spans(linker, docs, self.top_k)


class TaskOptionsWriter:
    """Writes `link_choices` into Label Studio tasks, one PATCH at a time, off the request
    thread; a task whose options did not change is not written again."""

    def __init__(self, client_factory, data_key: str, search_key: str = ""):
        self._client_factory = client_factory
        self.data_key = data_key
        self.search_key = search_key  # the task field holding the link search's URL
        self.search_url = ""  # set by /predict (`note_search_url`)
        self._queue: queue.Queue[tuple[int, dict]] = queue.Queue()
        self._written: dict[int, dict] = {}
        self._thread: threading.Thread | None = None
        self.written = 0

    def submit(self, task: dict, options: list[dict]) -> None:
        task_id = task.get("id")
        data = task.get("data")
        if not isinstance(task_id, int) or not isinstance(data, dict):
            return
        fields: dict = {self.data_key: options}
        if self.search_key and self.search_url:
            fields[self.search_key] = self.search_url
        if all(data.get(k) == v for k, v in fields.items()) or self._written.get(task_id) == fields:
            return
        self._written[task_id] = fields
        self._queue.put((task_id, {**data, **fields}))
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._run, name="skillloop-link-options", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        client: StudioClient | None = None
        while True:
            try:
                task_id, data = self._queue.get(timeout=5)
            except queue.Empty:
                return
            try:
                client = client or self._client_factory()
                client.request("PATCH", f"/api/tasks/{task_id}", json={"data": data})
                self.written += 1
            except Exception:  # Label Studio away: the next /predict of the task tries again
                self._written.pop(task_id, None)
                log.exception("could not write link options into task %d", task_id)


def search_body(linker: Linker) -> tuple[bytes, bytes]:
    """The whole taxonomy (annotators' additions included) as the link search loads it,
    plain and gzipped (ESCO: 5.6 MB of JSON, 1.1 MB gzipped)."""
    from labeling.studio.links import taxonomy_items

    body = json.dumps({"items": taxonomy_items(linker.taxonomy)}, ensure_ascii=False).encode()
    return body, gzip.compress(body, 6)
