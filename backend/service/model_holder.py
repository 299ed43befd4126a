"""The warm model: loaded once, shared by every request, swapped atomically when the
registry's serving version changes (a promotion by the worker, or a rollback or retrain
run from the command line in another process).

Requests read `ModelHolder.current()` once and use that snapshot to the end, so a batch
is always predicted and labelled by one model. Loading a new model happens in the worker
or watcher thread, never in a request; the swap itself is one reference assignment.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from backend.loop.cold_start import DICTIONARY_SOURCE, project_dictionary
from backend.service.chunks import CHUNK_CHARS, FairLock, chunks, joined, pieces
from backend.service.model_cache import ModelCache, ModelKey

if TYPE_CHECKING:
    from labeling.project import Project
    from training.reading import Predictor

log = logging.getLogger(__name__)

UNTRAINED = "untrained"


@dataclass(frozen=True, slots=True)
class ServingModel:
    """A loaded tagger and the model_version it answers with (`tagger` None: no model yet;
    a DictionaryTagger, source "dictionary": no model yet, the taxonomy's matches served)."""

    tagger: Predictor | None
    version: str
    source: str | None = None
    from_registry: bool = False  # False: the project's base model (or none)
    loaded_at: float = field(default_factory=time.time)
    key: ModelKey | None = None  # its key in the ModelCache (None: not a loaded model)
    unloaded: bool = False  # unloaded while idle (model_cache.py): loaded again on /predict

    @property
    def loaded(self) -> bool:
        """A model serves (dictionary matches are not one)."""
        return self.tagger is not None and self.source != "dictionary"


class ModelHolder:
    """Holds the serving Tagger for one project and predicts batches of texts with it.

    `registry` is a `training.registry.Registry`; `on_swap(model)` is called (in the thread
    that loaded it) after each swap, e.g. to refresh Label Studio's predictions. `cache`
    holds the loaded taggers, shared with the other projects' holders (model_cache.py).
    """

    def __init__(
        self,
        project,
        registry,
        *,
        on_swap: Callable[[ServingModel], None] | None = None,
        watch_interval: float = 5.0,
        threads: int | None = None,
        training_threads: int = 1,
        chunk_chars: int = CHUNK_CHARS,
        cache: ModelCache | None = None,
    ):
        self.project = project
        self.cache = ModelCache() if cache is None else cache
        self.registry = registry
        self.on_swap = on_swap
        self.watch_interval = watch_interval
        self.error: str | None = None  # why the last load failed, for /health
        self._failed: str | None = None  # a version that failed to load: not retried
        self._model = ServingModel(None, UNTRAINED)
        self._ready = threading.Event()
        self._load_lock = threading.Lock()  # one load at a time (worker vs watcher)
        self._swap_lock = threading.Lock()  # a swap vs the cache unloading the model
        self._reloading = False  # a load after an unload is under way
        # one forward pass at a time (on two cores, parallel passes only slow each other),
        # handed out in arrival order, one chunk of a request per turn
        self._predict_lock = FairLock()
        self.chunk_chars = chunk_chars
        self._stop = threading.Event()
        # what budgets are measured on: a test swaps in a clock that advances with counted
        # work, so the budget logic is pinned down without timing anything
        self.clock: Callable[[], float] = time.monotonic
        self._threads: list[threading.Thread] = []
        self.threads = threads  # torch threads when no round trains (None: torch's default)
        self.training_threads = training_threads  # ... and while one trains (0: the same)
        # whether a training round runs now (set by the app once the worker exists)
        self.training_running: Callable[[], bool] = lambda: False

    # --- lifecycle -----------------------------------------------------------------------
    def start(self, background: bool = True) -> None:
        """Load the serving model (in a thread when `background`) and watch the registry."""
        if background:
            self._spawn(self._initial_load, "skillloop-model-load")
        else:
            self._initial_load()
        self._spawn(self._watch, "skillloop-model-watch")

    def stop_predicting(self) -> None:
        """Shutting down: predictions in flight end after their current chunk (safe in a
        signal handler: one flag set, no join)."""
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self.cache.release(self._model.key, self)  # no other project: unloaded

    def _spawn(self, target, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _initial_load(self) -> None:
        try:
            self.reload(force=True)
        finally:
            self._ready.set()

    def _watch(self) -> None:
        seen = self.registry.index_mtime()
        while not self._stop.wait(self.watch_interval):
            try:
                self.cache.unload_idle()  # every holder asks: cheap, and no thread of its own
                if self.registry.serving_changed_since(seen):  # a stat, not a read
                    seen = self.registry.index_mtime()
                    self.reload()
            except Exception:  # keep watching: a broken checkpoint must not stop serving
                log.exception("checking the registry for a new serving version failed")

    # --- state ---------------------------------------------------------------------------
    def current(self) -> ServingModel:
        return self._model

    @property
    def ready(self) -> bool:
        """True once the first load finished (with or without a model)."""
        return self._ready.is_set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    # --- loading -------------------------------------------------------------------------
    def reload(self, force: bool = False) -> bool:
        """Serve the registry's serving version (or the project's base model when there is
        none) if it differs from the one held. Returns True when a swap happened."""
        with self._load_lock:
            wanted = self.registry.serving()
            held = self._model
            if not force:
                if wanted is None and not held.from_registry:
                    return False  # still on the base model (or none)
                if wanted is not None and (
                    (held.from_registry and wanted.version == held.version)
                    or wanted.version == self._failed
                ):
                    return False
            model = self._load(wanted)
            if model is held:
                return False
            with self._swap_lock:
                self._model = model  # the atomic swap: requests hold their own reference
            if held.key != model.key:
                self.cache.release(held.key, self)
        log.info("serving model %s (%s)", model.version, model.source or "no model")
        if self.on_swap is not None and held.version != model.version:
            try:
                self.on_swap(model)
            except Exception:  # Label Studio being down must not undo a promotion
                log.exception("after-swap hook failed for %s", model.version)
        return True

    def unloaded(self, key: ModelKey) -> None:
        """The cache unloaded `key` (idle, or the least used past SKILLLOOP_MAX_MODELS): if
        this holder serves it, it serves nothing until `ensure_loaded` loads it again."""
        with self._swap_lock:
            if self._model.key == key and not self._model.unloaded:
                self._model = replace(self._model, tagger=None, unloaded=True)

    def ensure_loaded(self) -> None:
        """Called by /predict: a model unloaded while idle is loaded again in a background
        thread; the request then waits for it (`wait_ready`) as during the first load."""
        with self._swap_lock:
            if not self._model.unloaded or self._reloading or self._stop.is_set():
                return
            self._reloading = True
            self._ready.clear()
        self._spawn(self._load_again, "skillloop-model-reload")

    def _load_again(self) -> None:
        try:
            self.reload(force=True)
        except Exception:  # the request answers 503 (or the stale placeholder): keep serving
            log.exception("loading the model again after it was unloaded failed")
        finally:
            with self._swap_lock:
                self._reloading = False
            self._ready.set()

    def promoted(self, version) -> None:
        """The worker's `on_promoted` callback: swap to the new serving version now."""
        log.info("version %s promoted; loading it", getattr(version, "version", version))
        self.reload()

    def _load(self, wanted) -> ServingModel:
        from training.checkpoint import CheckpointError

        if wanted is not None:
            spec, version = self.project.tagger_spec(wanted.path), wanted.version
        else:
            spec, version = self.project.tagger_spec(), None
        source = spec.source
        # what loading reads: projects whose specs agree share one loaded copy
        key = (
            str(source),
            tuple(spec.labels),
            tuple(sorted((spec.label_map or {}).items())),
            spec.window,
            spec.precision,
            spec.quantize,
        )
        started = time.perf_counter()
        loads = self.cache.loads
        try:
            tagger = self.cache.acquire(key, self, spec.load)
        except CheckpointError as err:
            if wanted is not None:
                self._failed = wanted.version
                self.error = f"cannot load serving version {wanted.version}: {err}"
                log.error("%s; keeping %s", self.error, self._model.version)
                return self._model
            # the base model has no head for the project's labels: no model until a round,
            # and until then the taxonomy dictionary's matches where the project sets one
            self.error = None
            fallback = dictionary_model(self.project)
            if fallback is not None:
                log.warning("no model yet (%s): /predict answers %s", err, fallback.version)
                return fallback
            log.warning("no model yet (%s): /predict answers empty results", err)
            return ServingModel(None, UNTRAINED)
        self.error = self._failed = None
        seconds = time.perf_counter() - started
        shared = "" if self.cache.loads > loads else " (already loaded for another project)"
        log.info("loaded %s in %.1f s%s", source or "backbone", seconds, shared)
        return ServingModel(
            tagger,
            version or tagger.version,
            str(source or "backbone"),
            wanted is not None,
            key=key,
        )

    # --- prediction ----------------------------------------------------------------------
    def predict(
        self,
        texts: Sequence[str],
        model: ServingModel | None = None,
        deadline: float | None = None,
    ) -> tuple[list | None, ServingModel]:
        """Predictions for `texts`, with the model that made them.

        Returns `(predictions, model)`; predictions is None when no model is loaded, else
        one entry per text, None for the texts not reached by `deadline` (a
        `self.clock()` value) or before the holder stopped. The texts go to the model
        in chunks of about `chunk_chars` characters (a longer text in pieces cut at a line,
        sentence or word boundary, predicted apart and joined), and the model is taken for
        one chunk at a time, in arrival order: a huge request cannot starve the others, it
        only takes its turn once per chunk. The first chunk is always predicted.
        """
        model = model or self._model
        if model.tagger is None:
            return None, model
        parts = [
            (i, offset, piece)
            for i, t in enumerate(texts)
            for offset, piece in pieces(t, self.chunk_chars)
        ]
        done: list = [None] * len(parts)
        # the model's turns are shared with the other projects serving it (model_cache.py)
        turns = self._predict_lock if model.key is None else self.cache.turns(model.key)
        with self.cache.using(model.key):  # not unloaded while it predicts
            for first, last in chunks([len(p[2]) for p in parts], self.chunk_chars):
                if first and self._out_of_time(deadline):
                    break
                with turns:
                    if first and self._out_of_time(deadline):
                        break
                    training = self.training_threads and self.training_running()
                    self._set_threads(self.training_threads if training else self.threads)
                    assert model.tagger is not None  # predict() returns early without a model
                    done[first:last] = model.tagger.predict([p[2] for p in parts[first:last]])
        by_text: dict[int, list] = {}
        for (i, offset, _), prediction in zip(parts, done, strict=True):
            by_text.setdefault(i, []).append((offset, prediction))
        predictions = [joined(texts[i], by_text.get(i, [])) for i in range(len(texts))]
        return predictions, model

    def _out_of_time(self, deadline: float | None) -> bool:
        return self._stop.is_set() or (deadline is not None and self.clock() >= deadline)

    def _set_threads(self, wanted: int | None) -> None:
        """Predict with fewer torch threads (default one) while a round trains.

        Measured on two shared cores (docs/service.md): two OpenMP threads slow down many
        times over as soon as another process takes a core (each parallel step waits for
        the descheduled thread), while one thread barely notices.
        """
        import torch

        if self.threads is None:
            self.threads = torch.get_num_threads()  # the process's setting before any change
            wanted = wanted or self.threads
        if wanted and torch.get_num_threads() != wanted:
            torch.set_num_threads(wanted)


def dictionary_model(project: Project) -> ServingModel | None:
    """What /predict serves before a project's first model: dictionary matches (None when
    the project sets no dictionary, or its taxonomy cannot be read: logged, not raised, so
    the service still starts)."""
    from training.dictionary import DictionaryTagger

    try:
        dictionary = project_dictionary(project)
    except (ValueError, OSError) as err:  # TaxonomyError is a ValueError
        log.warning("no dictionary pre-annotations: %s", err)
        return None
    if dictionary is None:
        return None
    tagger = DictionaryTagger(dictionary, project.label_values)
    return ServingModel(tagger, tagger.version, DICTIONARY_SOURCE)
