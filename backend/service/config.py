"""Service configuration: one dataclass, filled from environment variables and then from
command-line flags (flags win). Secrets are kept out of `repr`, so logging a config never
prints a password or API key."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from labeling.state import state_base

# The limits on one request; their reasons are in docs/service.md ("Limits").
DEFAULT_MAX_CONTENT_LENGTH = 16 * 1024 * 1024  # 5,000 Label Studio tasks of 3 kB each
DEFAULT_MAX_PROJECTS = 20  # Label Studio projects one backend serves
DEFAULT_MAX_MODELS = 8  # distinct models held loaded at once (+53 MB each with MiniLM)
DEFAULT_MAX_TEXT_CHARS = 20_000  # twice a long job post; the rest of a task is not read
DEFAULT_MAX_TASKS = 1_000  # tasks predicted per /predict; the rest answered "not reached"
DEFAULT_PREDICT_BUDGET_S = 60.0  # Label Studio gives /predict 100 s


def auth_from_env(env: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """The service's HTTP basic auth pair (`BASIC_AUTH_USER`/`_PASS`), for the commands that
    call it or register it with Label Studio; None when auth is off."""
    env = os.environ if env is None else env
    user = env.get(ENV["basic_auth_user"])
    return (user, env.get(ENV["basic_auth_pass"], "")) if user else None


@dataclass(frozen=True)
class ServiceConfig:
    """How `create_app` builds the service. Environment variable names are in `ENV`."""

    project: str  # "projects/linkedin-skills" or a project name ("": several projects)
    # base state folder; None: labeling.state.state_base decides (from_env asks it at once)
    state_dir: Path | None = None
    host: str = "127.0.0.1"
    port: int = 9090
    basic_auth_user: str | None = None
    basic_auth_pass: str | None = field(default=None, repr=False)
    max_content_length: int = DEFAULT_MAX_CONTENT_LENGTH
    # characters of a task's text /predict reads (the rest is not predicted, and it says so)
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS
    # tasks one /predict predicts; later ones get an entry Label Studio stores nothing for
    max_tasks: int = DEFAULT_MAX_TASKS
    # seconds one /predict may spend (waiting for the model included) before it answers
    predict_budget_s: float = DEFAULT_PREDICT_BUDGET_S
    label_studio_url: str | None = None
    label_studio_api_key: str | None = field(default=None, repr=False)
    # torch intra-op threads for serving (None: torch's default)
    threads: int | None = None
    # torch threads for serving while a round trains in the child process (0: as `threads`)
    training_threads: int = 1
    # run the background training worker (off only for a read-only predict server)
    training: bool = True
    # load the model in a background thread so /health answers at once
    background_load: bool = True
    # how often (s) the registry is checked for a promotion or rollback made elsewhere
    watch_interval: float = 5.0
    # after a promotion, delete older versions' predictions from tasks nobody annotated
    # (once the new ones are stored), so the editor shows annotators one suggestion
    remove_older_predictions: bool = True
    # several Label Studio projects: at most this many served (each holds a state folder
    # and three threads; a request naming one more is refused)
    max_projects: int = DEFAULT_MAX_PROJECTS
    # distinct models held loaded (projects serving the same one share it); past it the
    # least recently used idle model is unloaded, loaded again by its next /predict
    max_models: int = DEFAULT_MAX_MODELS
    # seconds without a prediction after which a model is unloaded (0: never)
    model_idle_s: float = 0.0
    # after a request with a body past 1 MiB, hand freed memory back (malloc_trim)
    trim_memory: bool = True
    # several Label Studio projects on one backend (docs/service.md): the project templates
    # (folders or names, comma-separated) a newly connected project's state is made from
    project_templates: str | None = None
    # ... and which template each Label Studio project id takes: "7=linkedin-skills,9=x"
    studio_projects: str | None = None

    @property
    def several_projects(self) -> bool:
        return bool(self.project_templates)

    def templates(self) -> list[str]:
        return [t.strip() for t in (self.project_templates or "").split(",") if t.strip()]

    def template_for_id(self) -> dict[int, str]:
        """`studio_projects` read: Label Studio project id -> template."""
        mapping: dict[int, str] = {}
        for item in (self.studio_projects or "").split(","):
            if not item.strip():
                continue
            key, sep, template = item.partition("=")
            try:
                mapping[int(key)] = template.strip()
            except ValueError:
                sep = ""
            if not sep or not template.strip():
                raise ValueError(
                    f"{ENV['studio_projects']}: expected ID=TEMPLATE pairs like "
                    f"'7=linkedin-skills,9=skillspan', got {item.strip()!r}"
                )
        return mapping

    @property
    def auth_enabled(self) -> bool:
        return bool(self.basic_auth_user)

    @property
    def studio_enabled(self) -> bool:
        return bool(self.label_studio_url and self.label_studio_api_key)

    def validate(self) -> ServiceConfig:
        if not self.project and not self.several_projects:
            raise ValueError(
                "no project: pass --project projects/NAME or set SKILLLOOP_PROJECT (or "
                "--project-templates / SKILLLOOP_PROJECT_TEMPLATES to serve several)"
            )
        if self.project and self.several_projects:
            raise ValueError(
                "set either a project (--project, SKILLLOOP_PROJECT) or project templates "
                "(--project-templates, SKILLLOOP_PROJECT_TEMPLATES), not both"
            )
        if self.studio_projects and not self.several_projects:
            raise ValueError(f"{ENV['studio_projects']} needs project templates to choose from")
        self.template_for_id()  # ID=TEMPLATE pairs; the names are checked when loaded
        if bool(self.basic_auth_user) != bool(self.basic_auth_pass):
            raise ValueError("set both BASIC_AUTH_USER and BASIC_AUTH_PASS, or neither")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be 1..65535, got {self.port}")
        if self.max_content_length < 1024:
            raise ValueError(
                f"MAX_CONTENT_LENGTH must be at least 1024, got {self.max_content_length}"
            )
        if self.max_text_chars < 1:
            raise ValueError(f"max text chars must be at least 1, got {self.max_text_chars}")
        if self.max_tasks < 1:
            raise ValueError(f"max tasks must be at least 1, got {self.max_tasks}")
        if not 0 < self.predict_budget_s <= 3600:
            raise ValueError(f"predict budget must be in (0, 3600] s, got {self.predict_budget_s}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")
        if self.training_threads < 0:
            raise ValueError(f"training threads must be >= 0, got {self.training_threads}")
        if bool(self.label_studio_url) != bool(self.label_studio_api_key):
            raise ValueError("set both LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY, or neither")
        if self.max_projects < 1:
            raise ValueError(f"max projects must be at least 1, got {self.max_projects}")
        if self.max_models < 1:
            raise ValueError(f"max models must be at least 1, got {self.max_models}")
        if self.model_idle_s < 0:
            raise ValueError(f"model idle time must be >= 0 s, got {self.model_idle_s}")
        if self.watch_interval <= 0:
            raise ValueError(f"watch interval must be positive, got {self.watch_interval}")
        return self

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> ServiceConfig:
        """Read `ENV` variables from `env` (default os.environ); non-None overrides win.
        The state base is the `state_dir` override, else what labeling.state.state_base
        (the one reader of its environment variable) resolves."""
        env = os.environ if env is None else env
        values: dict = {}
        for name, variable in ENV.items():
            raw = env.get(variable)
            if raw is None or raw == "":
                continue
            values[name] = _convert(name, variable, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["state_dir"] = state_base(values.get("state_dir"))
        values.setdefault("project", "")
        return cls(**values).validate()

    def with_overrides(self, **overrides) -> ServiceConfig:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None}).validate()


# field name -> environment variable
ENV = {
    "project": "SKILLLOOP_PROJECT",
    "host": "SKILLLOOP_HOST",
    "port": "SKILLLOOP_PORT",
    "basic_auth_user": "BASIC_AUTH_USER",
    "basic_auth_pass": "BASIC_AUTH_PASS",
    "max_content_length": "MAX_CONTENT_LENGTH",
    "max_text_chars": "SKILLLOOP_MAX_TEXT_CHARS",
    "max_tasks": "SKILLLOOP_MAX_TASKS",
    "predict_budget_s": "SKILLLOOP_PREDICT_BUDGET_S",
    "label_studio_url": "LABEL_STUDIO_URL",
    "label_studio_api_key": "LABEL_STUDIO_API_KEY",
    "threads": "SKILLLOOP_THREADS",
    "training_threads": "SKILLLOOP_TRAINING_THREADS",
    "training": "SKILLLOOP_TRAINING",
    "background_load": "SKILLLOOP_BACKGROUND_LOAD",
    "watch_interval": "SKILLLOOP_WATCH_INTERVAL",
    "remove_older_predictions": "SKILLLOOP_REMOVE_OLDER_PREDICTIONS",
    "project_templates": "SKILLLOOP_PROJECT_TEMPLATES",
    "max_projects": "SKILLLOOP_MAX_PROJECTS",
    "max_models": "SKILLLOOP_MAX_MODELS",
    "model_idle_s": "SKILLLOOP_MODEL_IDLE_S",
    "trim_memory": "SKILLLOOP_TRIM_MEMORY",
    "studio_projects": "SKILLLOOP_STUDIO_PROJECTS",
}

_TYPES = {f.name: f.type for f in fields(ServiceConfig)}


def _convert(name: str, variable: str, raw: str):
    kind = str(_TYPES[name])
    try:
        if kind == "bool":
            lowered = raw.strip().lower()
            if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError
            return lowered in ("1", "true", "yes", "on")
        if kind.startswith("int"):
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ValueError(f"{variable}={raw!r} is not a valid {kind.split(' ')[0]}") from None
    return raw


def max_text_chars_from_env(env: Mapping[str, str] | None = None) -> int:
    """The text limit /predict applies (SKILLLOOP_MAX_TEXT_CHARS), for `skillloop predict`."""
    variable = ENV["max_text_chars"]
    raw = (os.environ if env is None else env).get(variable, "").strip()
    limit = _convert("max_text_chars", variable, raw) if raw else DEFAULT_MAX_TEXT_CHARS
    if limit < 1:
        raise ValueError(f"{variable} must be at least 1, got {limit}")
    return limit
