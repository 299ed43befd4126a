"""A project's state folder: the one place that knows its layout.

Everything a project produces at run time lives under `<state base>/<project name>/`,
never in the source tree (the base is `$SKILLLOOP_STATE_DIR` or `./state`). The service,
the worker, the CLI and the demo all find files here through a `ProjectState`, which they
hand on instead of a bare folder, so a file's name is written once and the environment is
read in this module only (`state_base`, `database_url_from_env`).

The annotation store is the one piece that may live elsewhere: a `ProjectState` with a
`database_url` (by default `$SKILLLOOP_DATABASE_URL`) opens that database (shared by
several projects, each its own partition, `store_key`) instead of the SQLite file here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from labeling.project import Project
    from labeling.store import Store
    from training.registry import LinkerRegistry, Registry

STATE_ENV = "SKILLLOOP_STATE_DIR"
DATABASE_URL_ENV = "SKILLLOOP_DATABASE_URL"
# where the state base comes from without --state-dir, as help texts say it
STATE_BASE_DEFAULT = f"${STATE_ENV} or ./state"
STORE_FILE = "annotations.sqlite"
# What a project's state folder holds once the service, a round or the demo used it: any
# one of these means the folder is that project's state (an empty or missing folder is not)
STATE_MARKERS = (
    STORE_FILE,
    "models",
    "rounds.jsonl",
    "rounds",
    "heldout.json",
    "studio.json",
    "connection.json",
    "linkers",  # linker versions (skillloop link-train)
    "linking",  # label embeddings cached by linking
)
# a Label Studio project connected to a backend that serves several: `<base>/studio-<id>/`
STUDIO_PREFIX = "studio-"
CONNECTION_FILE = "connection.json"


def database_url_from_env() -> str | None:
    """`$SKILLLOOP_DATABASE_URL`, or None (the SQLite file in the state folder)."""
    return os.environ.get(DATABASE_URL_ENV, "").strip() or None


@dataclass(frozen=True)
class ProjectState:
    """Paths (and openers) for one project's runtime state; nothing is created until used."""

    root: Path
    # where the annotations live when not in the SQLite file here: a database several
    # projects and hosts share (`skillloop worker --database-url`, or the environment's)
    database_url: str | None = field(default_factory=database_url_from_env)

    @classmethod
    def of(cls, project: Project, base: str | Path | None = None) -> ProjectState:
        """`<base>/<project name>/`, base defaulting to `$SKILLLOOP_STATE_DIR` or `./state`."""
        return cls(state_base(base) / project.name)

    @classmethod
    def for_studio(cls, studio_id: int, base: str | Path | None = None) -> ProjectState:
        """The state of Label Studio project `studio_id` on a backend serving several
        projects: `<base>/studio-<id>/`, whichever template it was created from."""
        return cls(state_base(base) / f"{STUDIO_PREFIX}{int(studio_id)}")

    @property
    def key(self) -> str:
        """The project's name in shared storage (e.g. a database partition): the state
        folder's name, unique under one state base ("linkedin-skills", "studio-7")."""
        return self.root.name

    @property
    def store_path(self) -> Path:
        """The annotation store's SQLite file (unless a database URL is set)."""
        return self.root / STORE_FILE

    @property
    def store_key(self) -> str:
        """The project's key in the annotation store: every row of it carries this key."""
        return self.key

    @property
    def store_location(self) -> str:
        """Where `store()` finds the annotations, as it may be shown (no password)."""
        from labeling.storage.engine import describe

        url = self.database_url
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
    def studio_publish_lock(self) -> Path:
        """Taken while a process points Label Studio at a model (one at a time)."""
        return self.root / "studio-publish.lock"

    @property
    def studio_published(self) -> Path:
        """The model version Label Studio was last pointed at."""
        return self.root / "studio-published.json"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def linkers(self) -> Path:
        """The linker registry's folder (`skillloop link-train`), beside the tagger's."""
        return self.root / "linkers"

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

    @property
    def connection_file(self) -> Path:
        """Which Label Studio project this state serves and the template it was made from
        (several-projects mode only; see `read_connection`)."""
        return self.root / CONNECTION_FILE

    def read_connection(self) -> dict[str, Any] | None:
        """`{"studio_project", "created_ts", "template", "title", "schema"}`, or None."""
        try:
            value = json.loads(self.connection_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def write_connection(self, connection: dict[str, Any]) -> None:
        """Written whole and renamed into place: a crash leaves the old file or the new."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.connection_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(connection, indent=2), encoding="utf-8")
        os.replace(tmp, self.connection_file)

    def has_store(self) -> bool:
        """Whether `store()` would open existing records (a shared database always may)."""
        return self.database_url is not None or self.store_path.is_file()

    def has_state_files(self) -> bool:
        """Whether the folder holds any of what a project's state folder holds."""
        return self.root.is_dir() and any((self.root / name).exists() for name in STATE_MARKERS)

    def holds_state(self) -> bool:
        """Whether this folder is a project's state: it holds what the service, a round or
        the demo writes (the store, the registry, the rounds log...), or, with a shared
        database, the database holds annotations under this state's key. An empty or
        missing folder is not: read-only commands refuse it rather than report zeros."""
        if self.has_state_files():
            return True
        if self.database_url is None:
            return False
        with self.store() as store:  # another host's state: only its rows are shared
            return store.annotations.change_counter() > 0

    def store(self) -> Store:
        """A new connection to the project's database (its annotations, webhook inbox and
        training requests): the database `database_url` names, else the SQLite file here
        (created, and migrated, on first use)."""
        from labeling.store import Store

        return Store(self.database_url or self.store_path, key=self.store_key)

    def registry(self) -> Registry:
        from training.registry import Registry

        return Registry(self.models)

    def linker_registry(self) -> LinkerRegistry:
        from training.registry import LinkerRegistry

        return LinkerRegistry(self.linkers)


def state_base(base: str | Path | None = None) -> Path:
    """The state root: `base`, else `$SKILLLOOP_STATE_DIR`, else `./state`. The one place
    that reads it."""
    return Path(base) if base else Path(os.environ.get(STATE_ENV) or "state")


def state_base_from_environment() -> bool:
    """Whether the state base comes from `$SKILLLOOP_STATE_DIR` (not the ./state default)."""
    return bool(os.environ.get(STATE_ENV))


def environment_for(base: str | Path) -> dict[str, str]:
    """What a child process's environment needs so that its resolver finds `base` (gunicorn
    is configured by the environment only: backend/service/wsgi.py)."""
    return {STATE_ENV: str(base)}


def label_studio_home(base: str | Path | None = None) -> Path:
    """The local Label Studio's data (labeling.studio.server), beside the projects' states."""
    return state_base(base).resolve() / "label-studio"


def linking_cache_without_project(base: str | Path | None = None) -> Path:
    """Label embeddings of a linker opened without a project (`skillloop link --taxonomy`)."""
    return state_base(base) / "linking"


def connected_states(base: str | Path | None = None) -> list[ProjectState]:
    """Every Label Studio project's state under `base` (several-projects mode)."""
    root = state_base(base)
    if not root.is_dir():
        return []
    found = [ProjectState(p) for p in sorted(root.glob(f"{STUDIO_PREFIX}*")) if p.is_dir()]
    return [state for state in found if state.read_connection() is not None]


def studio_project(studio_id: int, base: str | Path | None = None) -> tuple[Project, ProjectState]:
    """The project (its template) and state of a connected Label Studio project, for the
    commands that take `--studio-project ID`. ValueError says what is missing."""
    from labeling.project import load_project

    state = ProjectState.for_studio(studio_id, base)
    connection = state.read_connection()
    if connection is None:
        known = ", ".join(s.root.name.removeprefix(STUDIO_PREFIX) for s in connected_states(base))
        raise ValueError(
            f"Label Studio project {studio_id} has no state in {state.root} "
            f"(connected projects under {state_base(base)}: {known or 'none'})"
        )
    return load_project(connection["template"]), state
