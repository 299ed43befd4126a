"""A project's state folder: the one place that knows its layout.

Everything a project produces at run time lives under `<state base>/<project name>/`,
never in the source tree (the base is `$SKILLLOOP_STATE_DIR` or `./state`). The service,
the worker, the CLI and the demo all find files here through `ProjectState`, so a file's
name is written once.

The annotation store is the one piece that may live elsewhere: with
`$SKILLLOOP_DATABASE_URL` set, `store()` opens that database (shared by several projects,
each its own partition, `store_key`) instead of the SQLite file here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from labeling.project import Project
    from labeling.store import AnnotationStore
    from training.registry import Registry

STORE_FILE = "annotations.sqlite"


@dataclass(frozen=True)
class ProjectState:
    """Paths (and openers) for one project's runtime state; nothing is created until used."""

    root: Path
    key: str = ""  # the project's partition in a shared database; "" = the folder's name

    @classmethod
    def of(cls, project: Project, base: str | Path | None = None) -> ProjectState:
        return cls(project.state_dir(base))

    @property
    def store_path(self) -> Path:
        """The annotation store's SQLite file (unless $SKILLLOOP_DATABASE_URL is set)."""
        return self.root / STORE_FILE

    @property
    def store_key(self) -> str:
        """The project's key in the annotation store: every row of it carries this key."""
        return self.key or self.root.name

    @property
    def store_location(self) -> str:
        """Where `store()` finds the annotations, as it may be shown (no password)."""
        from labeling.storage.engine import database_url_from_env, describe

        url = database_url_from_env()
        return str(self.store_path) if url is None else f"{describe(url)} ({self.store_key})"

    @property
    def models(self) -> Path:
        """The model registry's folder: one sub-folder per version."""
        return self.root / "models"

    @property
    def rounds_log(self) -> Path:
        """One JSON line per finished (or skipped) retraining round."""
        return self.root / "rounds.jsonl"

    @property
    def rounds_dir(self) -> Path:
        """One working folder per round: spec, progress, result."""
        return self.root / "rounds"

    @property
    def heldout_file(self) -> Path:
        return self.root / "heldout.json"

    @property
    def training_lock(self) -> Path:
        return self.root / "training.lock"

    @property
    def studio_file(self) -> Path:
        """The connected Label Studio project, as last seen in /setup or a webhook."""
        return self.root / "studio.json"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def linking_cache(self) -> Path:
        """Label embeddings, one file per (encoder, taxonomy) pair."""
        return self.root / "linking"

    @property
    def backend_log(self) -> Path:
        return self.root / "backend.log"

    @property
    def first_round_log(self) -> Path:
        """The output of the demo's first training round (run beside the backend)."""
        return self.root / "first-round.log"

    def has_store(self) -> bool:
        """Whether `store()` would open existing records (a shared database always may)."""
        from labeling.storage.engine import database_url_from_env

        return database_url_from_env() is not None or self.store_path.is_file()

    def store(self) -> AnnotationStore:
        """A new connection to the annotation store: the database `$SKILLLOOP_DATABASE_URL`
        names, else the SQLite file here (created, and migrated, on first use)."""
        from labeling.storage.engine import database_url_from_env
        from labeling.store import AnnotationStore

        return AnnotationStore(database_url_from_env() or self.store_path, key=self.store_key)

    def registry(self) -> Registry:
        from training.registry import Registry

        return Registry(self.models)
