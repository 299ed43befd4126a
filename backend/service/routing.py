"""Which project's services answer a request.

One project (`serve --project X`, the default): its services answer every request,
whatever Label Studio project it names, as a backend always did.

Several projects (`serve --project-templates A,B`): each connected Label Studio project is
served from its own state, `<state base>/studio-<id>/` (labeling/state.py), made on the
first request that names it (Label Studio sends /setup first, when the backend is
connected) from a project template: the template `SKILLLOOP_STUDIO_PROJECTS` names for
its id, else the one whose name or title is the Label Studio project's title (from the
webhook, or asked of Label Studio when LABEL_STUDIO_URL/API_KEY are set), else the only
template the labeling config's labels fit (by name, then through the template's
aliases), else the only template there is. The
state remembers the template (`connection.json`), so a restart serves each project
again from the same template and state, and /predict or a webhook for a project the
backend has not met yet is set up by the same rule. Nothing here loads a model in the
request: a new project's model loads in the background like any other.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from backend.service.build import MakeWorker, build_services, model_cache
from backend.service.model_cache import ModelCache
from backend.service.requests import BadRequest, StudioProjectKey
from backend.service.services import Services
from labeling.studio.config import ConfigError, LabelingConfig, map_model_labels, parse_config
from labeling.studio.label_map import label_names

if TYPE_CHECKING:
    from backend.service.config import ServiceConfig
    from backend.service.metrics import Metrics
    from labeling.project import Project

log = logging.getLogger(__name__)

TITLE_LOOKUP_S = 1.0  # asking Label Studio for a new project's title (/setup has 3 s)
ProjectField = dict | str | int | None


class OneProject:
    """One project folder serves every request."""

    several = False

    def __init__(self, services: Services):
        self.services = services
        self.metrics = services.metrics

    def for_setup(self, project: ProjectField, schema: str | None) -> Services:
        return self.services

    def remember_schema(self, services: Services, schema: str) -> None:
        services.connected_config = schema

    def for_request(
        self, project: ProjectField, label_config: str | None = None, *, create: bool = True
    ) -> Services:
        return self.services

    def connected(self, project: ProjectField) -> bool:
        return True

    def all(self) -> list[Services]:
        return [self.services]

    def start(self) -> None:
        self.services.start()

    def stop_predicting(self) -> None:
        self.services.stop_predicting()

    def close(self) -> None:
        self.services.close()

    def describe(self) -> str:
        return f"project {self.services.project.name} from {self.services.state.root}"


class SeveralProjects:
    """One `Services` per connected Label Studio project, made from a template."""

    several = True

    def __init__(
        self, config: ServiceConfig, metrics: Metrics, make_worker: MakeWorker | None = None
    ):
        from labeling.project import load_project

        self.config = config
        self.metrics = metrics
        self.make_worker = make_worker
        self.models = model_cache(config)  # one loaded copy of a model for all projects
        self.linkers = ModelCache()  # and of a linker (backend/service/linker_holder.py)
        # read at start, so a broken template fails the start, not a later /setup
        loaded = [(spec, load_project(spec)) for spec in config.templates()]
        self.templates = {project.name: project for _, project in loaded}
        names = {n: p for spec, p in loaded for n in (spec, p.folder.name, p.name)}
        unknown = sorted(set(config.template_for_id().values()) - set(names))
        if unknown:
            raise ValueError(
                f"SKILLLOOP_STUDIO_PROJECTS names templates {unknown} that are not among "
                f"the project templates ({', '.join(sorted(self.templates))})"
            )
        self.by_id = {i: names[n] for i, n in config.template_for_id().items()}
        self._projects: dict[int, Services] = {}
        self._lock = threading.Lock()
        self._started = False

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Serve again every project connected before (its model loads in the background)."""
        from labeling.project import load_project
        from labeling.state import connected_states

        for state in connected_states(self.config.state_dir):
            connection = state.read_connection() or {}
            try:
                project = load_project(connection["template"])
                key = StudioProjectKey(int(connection["studio_project"]))
            except (KeyError, TypeError, ValueError, FileNotFoundError) as err:
                log.error("cannot serve %s again: %s", state.root, err)
                continue
            self._open(key, project, connection.get("schema"))
        self._started = True

    def connected(self, project: ProjectField) -> bool:
        """Whether the backend serves this project already (no state is made here)."""
        key = StudioProjectKey.of(project)
        with self._lock:
            return key is not None and key.id in self._projects

    def all(self) -> list[Services]:
        with self._lock:
            return list(self._projects.values())

    def stop_predicting(self) -> None:
        for services in self.all():
            services.stop_predicting()

    def close(self) -> None:
        for services in self.all():
            services.close()

    def describe(self) -> str:
        served = ", ".join(str(s.studio_id) for s in self.all()) or "none yet"
        return f"Label Studio projects from templates {', '.join(self.templates)} ({served})"

    # --- routing -------------------------------------------------------------------------
    def for_setup(self, project: ProjectField, schema: str | None) -> Services:
        """The services /setup is for; its schema is remembered by `remember_schema`, once
        the route has checked it (a refused /setup changes nothing)."""
        return self.for_request(project, schema)

    def for_request(
        self, project: ProjectField, label_config: str | None = None, *, create: bool = True
    ) -> Services:
        """The services of the Label Studio project a request names, set up from a
        template when it is new (`create`); 400 without a project, 409 for a project id
        whose creation time is not the one its state was made for, 404 for an unknown
        project when not `create`, 422 when no template fits it."""
        key = StudioProjectKey.of(project)
        if key is None:
            raise BadRequest(
                "this backend serves several Label Studio projects: the request must name "
                'its project (\'project\': "<id>.<created_ts>" or {"id": <id>})'
            )
        with self._lock:
            services = self._projects.get(key.id)
        if services is not None:
            self._check_same(services, key)
            return services
        if not create:
            raise BadRequest(f"Label Studio project {key.id} is not connected to this backend", 404)
        title = project.get("title") if isinstance(project, dict) else None
        template = self.choose(key.id, title if isinstance(title, str) else None, label_config)
        if label_config is not None:  # one the template cannot serve: 422, no state made
            label_names(parse_config(label_config), template)
        return self._open(key, template, label_config, title)

    def choose(self, studio_id: int, title: str | None, schema: str | None) -> Project:
        """The template for a newly connected Label Studio project (module docstring)."""
        template, rule = self._choose(studio_id, title, schema)
        log.info("Label Studio project %d: template %s (by %s)", studio_id, template.name, rule)
        return template

    def _choose(self, studio_id: int, title: str | None, schema: str | None) -> tuple[Project, str]:
        if studio_id in self.by_id:
            return self.by_id[studio_id], "SKILLLOOP_STUDIO_PROJECTS"
        if title is None and len(self.templates) > 1:
            title = self._title_from_studio(studio_id)
        if title is not None:
            wanted = title.strip().casefold()
            for template in self.templates.values():
                names = {template.folder.name, template.name, template.title}
                if wanted in {n.strip().casefold() for n in names}:
                    return template, f"its title {title!r}"
        if schema is not None:
            labeling = parse_config(schema)
            for direct in (True, False):  # its label names first, then through aliases
                fits = [t for t in self.templates.values() if _fits(labeling, t, direct)]
                if len(fits) == 1:
                    return fits[0], "its labeling config's labels"
        if len(self.templates) == 1:
            return next(iter(self.templates.values())), "the only template"
        raise BadRequest(
            f"no project template chosen for Label Studio project {studio_id}"
            + (f" ({title!r})" if title else "")
            + f": name one in SKILLLOOP_STUDIO_PROJECTS ('{studio_id}=TEMPLATE'), or title the "
            f"project after a template, or use a labeling config whose labels fit exactly one "
            f"of {', '.join(sorted(self.templates))}",
            422,
        )

    # --- helpers -------------------------------------------------------------------------
    def _open(
        self,
        key: StudioProjectKey,
        template: Project,
        schema: str | None,
        title: str | None = None,
    ) -> Services:
        from labeling.project import load_project
        from labeling.state import ProjectState

        with self._lock:
            if key.id in self._projects:  # another request set it up meanwhile
                return self._projects[key.id]
            if self._started and len(self._projects) >= self.config.max_projects:
                raise BadRequest(
                    f"this backend serves {len(self._projects)} Label Studio projects, its "
                    f"limit (SKILLLOOP_MAX_PROJECTS={self.config.max_projects}): project "
                    f"{key.id} is not set up; raise the limit or serve it from another backend",
                    409,
                )
            state = ProjectState.for_studio(key.id, self.config.state_dir)
            connection = state.read_connection()
            if connection is None:
                connection = {
                    "studio_project": key.id,
                    "created_ts": key.created_ts,
                    "template": str(template.folder),
                    "template_name": template.name,
                    "title": title,
                    "schema": schema,
                }
                state.write_connection(connection)
                log.info(
                    "Label Studio project %d: new state %s from %s",
                    key.id,
                    state.root,
                    template.name,
                )
            project = load_project(template.folder)  # its own copy: no object shared
            services = build_services(
                self.config,
                self.make_worker,
                project=project,
                state=state,
                metrics=self.metrics,
                models=self.models,
                linkers=self.linkers,
            )
            services.studio_id = key.id
            services.connected_config = connection.get("schema") or schema
            services.studio.remember(key.id)
            services.start()  # quick: the model loads in the background (unless configured)
            self._projects[key.id] = services
        return services

    def _check_same(self, services: Services, key: StudioProjectKey) -> None:
        if key.created_ts is None:
            return

        connection = services.state.read_connection() or {}
        known = connection.get("created_ts")
        if known is None:
            connection["created_ts"] = key.created_ts
            services.state.write_connection(connection)
        elif int(known) != key.created_ts:
            raise BadRequest(
                f"Label Studio project {key.id} created at {key.created_ts} is not the project "
                f"{key.id} (created at {known}) whose state is {services.state.root.name} in "
                "the backend's state folder: Label Studio reuses ids after a reset; move that "
                "folder away to connect it afresh",
                409,
            )

    def remember_schema(self, services: Services, schema: str) -> None:
        """The labeling config /setup sent, checked: how webhooks without one are read."""
        if schema == services.connected_config:
            return
        state = services.state
        connection = state.read_connection() or {}
        connection["schema"] = schema
        state.write_connection(connection)  # a restart reads webhooks with it too
        services.connected_config = schema

    def _title_from_studio(self, studio_id: int) -> str | None:
        """The project's title from Label Studio, when the backend is told where it is
        (LABEL_STUDIO_URL/API_KEY), within TITLE_LOOKUP_S; None otherwise."""
        url, key = self.config.label_studio_url, self.config.label_studio_api_key
        if not url or not key:
            return None
        found: list[str] = []

        def ask() -> None:
            from labeling.studio.client import StudioClient

            try:
                title = StudioClient(url, key).project(studio_id).get("title")
            except Exception as err:  # no title: the other rules still choose
                log.warning("cannot read Label Studio project %d's title: %s", studio_id, err)
                return
            if isinstance(title, str):
                found.append(title)

        thread = threading.Thread(target=ask, name="skillloop-studio-title", daemon=True)
        thread.start()
        thread.join(TITLE_LOOKUP_S)
        return found[0] if found else None


def _fits(labeling: LabelingConfig, template: Project, direct: bool) -> bool:
    """Whether the template serves a config: its labels by name (`direct`), or also
    through the template's aliases (`predicted_values`, `[model] label_map`)."""
    try:
        if direct:
            map_model_labels(labeling, template.label_values)
        else:
            label_names(labeling, template)
    except ConfigError:
        return False
    return True
