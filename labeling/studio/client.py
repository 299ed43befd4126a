"""Label Studio through label-studio-sdk 2.x: the few calls skillloop makes, each idempotent
where a second run of `make demo` or `skillloop project ...` would otherwise duplicate.

Both token kinds work: `LabelStudio(api_key=...)` sends a legacy token as `Token ...` and
exchanges a personal access token (a JWT) for short-lived Bearer tokens itself. The facts
this relies on (measured on Label Studio 1.23.2) are in ../shared/notes/label-studio.md.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import requests

from training.text import Document

# The task data field holding skillloop's stable post id, so re-imports can skip posts.
POST_ID_KEY = "post_id"
UNCERTAINTY_SAMPLING = "Uncertainty sampling"
EXPORT_TYPES = ("CONLL2003", "JSON", "JSON_MIN", "CSV")


class StudioError(RuntimeError):
    """Label Studio refused or failed a request (the message carries its answer)."""


@dataclass(slots=True)
class ImportResult:
    imported: int
    skipped: int
    task_ids: list[int]


@dataclass(slots=True)
class ProjectRef:
    id: int
    title: str
    created: bool


def post_task(doc: Document, text_key: str = "text") -> dict:
    """The task data for one post: its text under the config's field and its stable id."""
    data: dict[str, Any] = {text_key: doc.text, POST_ID_KEY: doc.id}
    title = (doc.meta or {}).get("title")
    if title:
        data["title"] = title
    return data


class StudioClient:
    """A Label Studio server reached with one user's token (legacy or personal access token)."""

    def __init__(self, url: str, api_key: str, timeout: float = 120.0):
        if not url or not api_key:
            raise ValueError("Label Studio needs a URL and an API key (LABEL_STUDIO_URL/_API_KEY)")
        from label_studio_sdk import LabelStudio  # heavy import: only when a client is made

        # the SDK's httpx logs every request at INFO: noise in a CLI
        logging.getLogger("httpx").setLevel(logging.WARNING)
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.ls = LabelStudio(base_url=self.url, api_key=api_key, timeout=timeout)

    @classmethod
    def from_env(cls) -> StudioClient:
        env = os.environ
        return cls(env.get("LABEL_STUDIO_URL", ""), env.get("LABEL_STUDIO_API_KEY", ""))

    # --- raw HTTP for endpoints the SDK does not wrap (/next, JWT settings) -------------
    def request(self, method: str, path: str, **kwargs) -> Any:
        """One API call with the SDK's auth headers (PAT refresh included); JSON or None."""
        headers = self.ls._client_wrapper.get_headers()  # the SDK's auth
        headers.update(kwargs.pop("headers", {}))
        reply = requests.request(
            method, f"{self.url}{path}", headers=headers, timeout=self.timeout, **kwargs
        )
        if reply.status_code >= 400:
            raise StudioError(f"{method} {path}: HTTP {reply.status_code}: {reply.text[:300]}")
        if not reply.content:
            return None
        try:
            return reply.json()
        except ValueError:
            return reply.content

    def whoami(self) -> dict:
        return self.request("GET", "/api/current-user/whoami")

    # --- projects ------------------------------------------------------------------------
    def find_project(self, title: str) -> int | None:
        """The id of the project with exactly this title (the oldest when several)."""
        listed: Iterable[Any] = self.ls.projects.list(title=title)
        ids: list[int] = [p.id for p in listed if p.title == title and p.id is not None]
        return min(ids) if ids else None

    def ensure_project(self, title: str, label_config: str, description: str = "") -> ProjectRef:
        """Find the project by title or create it; an existing one gets the given config."""
        project_id = self.find_project(title)
        if project_id is None:
            project = self.ls.projects.create(
                title=title, label_config=label_config, description=description
            )
            if project.id is None:
                raise StudioError(f"Label Studio created project {title!r} without an id")
            return ProjectRef(project.id, title, created=True)
        current = self.ls.projects.get(id=project_id)
        if _normalise_xml(current.label_config or "") != _normalise_xml(label_config):
            self.ls.projects.update(id=project_id, label_config=label_config)
        return ProjectRef(project_id, title, created=False)

    def project(self, project_id: int) -> dict:
        return self.request("GET", f"/api/projects/{project_id}")

    def set_model_version(self, project_id: int, version: str, sampling: bool = True) -> None:
        """Make `version` the project's model version, so the Data Manager's prediction score
        and Uncertainty sampling (lowest prediction score served first) follow it."""
        fields: dict[str, Any] = {"model_version": version}
        if sampling:
            fields["sampling"] = UNCERTAINTY_SAMPLING
        try:
            self.request("PATCH", f"/api/projects/{project_id}", json=fields)
        except StudioError as err:
            # Label Studio accepts only a version it already holds predictions of (or a
            # backend titled so): fetch the new model's predictions first, then retry
            if "Model version doesn" not in str(err):
                raise
            self.refresh_predictions(project_id)
            self.request("PATCH", f"/api/projects/{project_id}", json=fields)

    def publish_model(
        self, project_id: int, version: str, sampling: bool = True, remove_older: bool = True
    ) -> int:
        """After a promotion or a connection (the backend's swap and /setup hooks): fetch
        the new model's predictions for every task, make it the project's model version,
        make skillloop's Data Manager tab (ordered by those scores, lowest first: what
        "Label All Tasks" serves, labeling/studio/queue.py) the project's first, then (with
        `remove_older`) delete older versions' predictions from tasks nobody has annotated,
        so annotators see one suggestion. Returns the number of predictions removed."""
        from labeling.studio.queue import rank_tab

        self.refresh_predictions(project_id)
        self.set_model_version(project_id, version, sampling=sampling)
        rank_tab(self, project_id)  # what "Label All Tasks" serves follows the new scores
        return self.remove_older_predictions(project_id, version) if remove_older else 0

    def remove_older_predictions(self, project_id: int, version: str) -> int:
        """Delete other versions' predictions from unannotated tasks that already hold one
        of `version` (a task the new model has not answered for keeps what it has)."""
        stale = stale_prediction_ids(self.tasks(project_id), version)
        for prediction_id in stale:
            self.ls.predictions.delete(id=prediction_id)
        return len(stale)

    # --- tasks ---------------------------------------------------------------------------
    def tasks(self, project_id: int) -> list[dict]:
        """All tasks with their data, annotations and predictions, as plain dicts."""
        tasks: Iterable[Any] = self.ls.tasks.list(project=project_id, fields="all", page_size=100)
        return [t.model_dump(mode="json") if hasattr(t, "model_dump") else dict(t) for t in tasks]

    def task_exists(self, task_id: int) -> bool | None:
        """Whether Label Studio holds the task: False on a 404 only, None if it cannot tell."""
        headers = self.ls._client_wrapper.get_headers()
        url, params = f"{self.url}/api/tasks/{task_id}", {"fields": "task_only"}
        reply = requests.get(url, headers=headers, params=params, timeout=self.timeout)
        return {200: True, 404: False}.get(reply.status_code)

    def imported_post_ids(self, project_id: int) -> dict[str, int]:
        """Stable post id -> task id, for the project's tasks that carry one."""
        return {post_id: task_id for post_id, (task_id, _) in self._imported(project_id).items()}

    def _imported(self, project_id: int) -> dict[str, tuple[int, int]]:
        """Stable post id -> (task id, number of annotations)."""
        known: dict[str, tuple[int, int]] = {}
        listed: Iterable[Any] = self.ls.tasks.list(
            project=project_id, fields="task_only", page_size=100
        )
        for task in listed:
            post_id = (task.data or {}).get(POST_ID_KEY)
            if post_id is not None:
                known[str(post_id)] = (task.id, int(task.total_annotations or 0))
        return known

    def import_tasks(self, project_id: int, tasks: Iterable[Mapping]) -> ImportResult:
        """Import tasks, skipping those whose `post_id` the project already holds.

        A task is a data dict, or `{"data": ..., "annotations": [...]}` (Label Studio's
        import format). One with annotations replaces a task of the same post that has
        none yet (imported before its gold existed): nothing anyone did is lost, and an
        import sends no annotation webhooks, so the backend does not count it as new work.
        """
        seen = self._imported(project_id)
        fresh, skipped, replaced, batch = [], 0, [], set()
        for task in tasks:
            task = dict(task) if "data" in task else {"data": dict(task)}
            post_id = task["data"].get(POST_ID_KEY)
            key = None if post_id is None else str(post_id)
            if key in batch or (key in seen and (seen[key][1] or not task.get("annotations"))):
                skipped += 1
                continue
            if key in seen:
                replaced.append(seen[key][0])
            if key is not None:
                batch.add(key)
            fresh.append(task)
        if not fresh:
            return ImportResult(0, skipped, [])
        for task_id in replaced:
            self.ls.tasks.delete(id=str(task_id))
        request: Any = fresh  # plain dicts: the SDK's request models accept their JSON form
        reply = self.ls.projects.import_tasks(id=project_id, request=request, return_task_ids=True)
        task_ids = list(getattr(reply, "task_ids", None) or [])
        return ImportResult(len(fresh), skipped, task_ids)

    def import_documents(
        self,
        project_id: int,
        docs: Iterable[Document],
        text_key: str = "text",
        ground_truth: Mapping[str, list[dict]] | None = None,
        link_choices_key: str = "",
    ) -> ImportResult:
        """Import posts; those in `ground_truth` (post id -> regions) come with that
        annotation, completed and marked as ground truth. A config with a link control
        (`link_choices_key`) needs the field in every task: Label Studio refuses tasks
        without it; the backend fills it when it links the post's spans."""
        ground_truth = ground_truth or {}
        tasks = []
        for doc in docs:
            task: dict[str, Any] = {"data": post_task(doc, text_key)}
            if link_choices_key:
                task["data"][link_choices_key] = []
            regions = ground_truth.get(str(doc.id))
            if regions is not None:
                task["annotations"] = [{"result": regions, "ground_truth": True}]
            tasks.append(task)
        return self.import_tasks(project_id, tasks)

    def import_project_posts(self, project_id: int, project) -> ImportResult:
        """A project's posts (`labeling.project.Project`), those with gold spans imported
        with them as a completed ground-truth annotation: annotators are never served the
        posts the first model was trained or gated on, and Label Studio's unlabelled tasks
        are the posts `skillloop select` ranks."""
        from labeling.studio.tasks import spans_to_regions

        regions = {
            str(doc.id): spans_to_regions(doc.spans, project.config, doc.text)
            for doc in project.gold()
            if doc.id is not None
        }
        result = self.import_documents(
            project_id,
            project.posts(),
            project.config.value_key,
            ground_truth=regions,
            link_choices_key=project.config.link_choices_key,
        )
        return result

    def annotate(self, task_id: int, result: list[dict], lead_time: float | None = None) -> int:
        """Submit an annotation (regions as Label Studio stores them); its id."""
        extra = {"lead_time": lead_time} if lead_time is not None else {}
        return self.ls.annotations.create(id=task_id, result=result, **extra).id

    def next_task(self, project_id: int) -> dict | None:
        """The task Label Studio's labelling stream serves next to this user."""
        try:
            return self.request("GET", f"/api/projects/{project_id}/next")
        except StudioError as err:
            if "HTTP 404" in str(err):  # "no more tasks"
                return None
            raise

    # --- the ML backend ------------------------------------------------------------------
    def backends(self, project_id: int) -> list[Any]:
        return list(self.ls.ml.list(project=project_id) or [])

    def connect_backend(
        self,
        project_id: int,
        url: str,
        title: str = "skillloop",
        basic_auth: tuple[str, str] | None = None,
        timeout: float = 100.0,
    ) -> int:
        """Register the backend with the project once (reused by URL); its ML backend id.

        Label Studio calls the backend's /health and /setup here: a backend that is down
        or answers /setup with an error is refused ("doesn't look like a valid ML backend").
        """
        auth: dict[str, Any] = {"auth_method": "NONE"}
        if basic_auth:
            auth = {
                "auth_method": "BASIC_AUTH",
                "basic_auth_user": basic_auth[0],
                "basic_auth_pass": basic_auth[1],
            }
        url = url.rstrip("/")
        for backend in self.backends(project_id):
            if (backend.url or "").rstrip("/") == url:
                self.ls.ml.update(id=backend.id, project=project_id, url=url, title=title, **auth)
                return backend.id
        try:
            backend = self.ls.ml.create(
                project=project_id,
                url=url,
                title=title,
                is_interactive=False,
                timeout=timeout,
                **auth,
            )
        except Exception as err:  # the SDK's ApiError carries Label Studio's reason
            raise StudioError(f"Label Studio refused the ML backend at {url}: {err}") from err
        return backend.id

    def backend_id(self, project_id: int) -> int:
        backends = self.backends(project_id)
        if not backends:
            raise ValueError(f"project {project_id} has no ML backend; connect one first")
        return backends[0].id

    def refresh_predictions(self, project_id: int) -> None:
        """Ask Label Studio to fetch predictions for every task from the connected backend.

        Tasks already holding a prediction of the backend's current model_version are
        skipped by Label Studio itself, so this is cheap to repeat.
        """
        self.ls.actions.create(
            id="retrieve_tasks_predictions",
            project=project_id,
            selected_items={"all": True, "excluded": []},
        )

    def latest_prediction_version(self, project_id: int) -> str | None:
        """The model_version of the project's most recently stored prediction."""
        latest: tuple | None = None
        for task in self.tasks(project_id):
            for prediction in task.get("predictions") or []:
                key = (str(prediction.get("created_at") or ""), prediction.get("id") or 0)
                if latest is None or key > latest[0]:
                    latest = (key, prediction.get("model_version"))
        return latest[1] if latest else None

    def train(self, project_id: int) -> None:
        """Press Start Training: Label Studio posts START_TRAINING to the backend's /webhook."""
        self.ls.ml.train(id=self.backend_id(project_id))

    # --- export --------------------------------------------------------------------------
    def export(self, project_id: int, export_type: str = "CONLL2003") -> bytes:
        """Label Studio's own export of the annotated tasks, in one of EXPORT_TYPES."""
        if export_type not in EXPORT_TYPES:
            raise ValueError(f"unknown export type {export_type!r}; one of {EXPORT_TYPES}")
        chunks = self.ls.projects.exports.download_sync(id=project_id, export_type=export_type)
        return chunks if isinstance(chunks, bytes) else b"".join(chunks)

    def export_json(self, project_id: int) -> list[dict]:
        return json.loads(self.export(project_id, "JSON"))


def stale_prediction_ids(tasks: Iterable[Mapping], version: str) -> list[int]:
    """Predictions of other versions on tasks without annotations that hold a prediction
    of `version`: what remove_older_predictions deletes (annotated tasks keep theirs, as
    the record of what the annotator was shown)."""
    stale = []
    for task in tasks:
        if task.get("annotations") or task.get("total_annotations"):
            continue
        predictions = task.get("predictions") or []
        if not any(p.get("model_version") == version for p in predictions):
            continue
        stale += [p["id"] for p in predictions if p.get("model_version") != version]
    return stale


def _normalise_xml(xml: str) -> str:
    return "".join(xml.split())
