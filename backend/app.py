"""The Label Studio ML backend: a Flask application factory and its routes.

Label Studio 1.23 drops a whole /predict batch when the number of results is wrong and
reports a 500 as success with nothing stored, so /predict always answers one result per
task, in order, and a task it cannot read gets a logged empty result instead of failing
its batch. Webhooks store the annotation (SQLite, durable) before answering and hand
training to the worker, which runs it in another process. Nothing in a request loads a
model or trains one. The facts behind these choices: ../shared/notes/label-studio.md.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flask import Flask, Response, g, jsonify, request
from flask.json.provider import DefaultJSONProvider

from backend.inbox import SYNC_BYTES, Inbox
from backend.metrics import Gauge, Metrics
from backend.predictions import (
    Limits,
    TaskScorer,
    deadline_from,
    label_names,
    parse_labeling,
    predict_tasks,
    project_labels,
)
from backend.serving import ModelHolder, StudioLink
from backend.settings import ServiceConfig
from backend.validation import (
    ANNOTATION_EVENTS,
    BadRequest,
    PredictRequest,
    SetupRequest,
    WebhookRequest,
    json_object,
    register_error_handlers,
)
from labeling.studio.config import LabelingConfig

if TYPE_CHECKING:
    from backend.linking import LinkerHolder, TaskOptionsWriter
    from backend.worker import TrainingWorker
    from labeling.project import Project
    from labeling.store import AnnotationStore
    from training.registry import Registry

log = logging.getLogger(__name__)

UNAUTHENTICATED = ("health",)  # Label Studio checks /health before anything else
SETUP_WAIT_S = 2.0  # Label Studio gives /setup 3 s
PREDICT_WAIT_S = 60.0  # ... and /predict 100 s: wait for a model still loading
__all__ = ["BadRequest", "Services", "build_services", "create_app"]


@dataclass
class Services:
    """Everything the routes use, built once per application."""

    config: ServiceConfig
    project: Project
    state_dir: Path
    store: AnnotationStore
    registry: Registry
    worker: TrainingWorker | None  # None: training disabled
    holder: ModelHolder
    studio: StudioLink
    metrics: Metrics
    # the config Label Studio last sent to /setup: how webhooks without one are read
    connected_config: str | None = None
    inbox: Inbox | None = None  # bulk webhooks stored first, read after (backend/inbox.py)
    scorer: TaskScorer = field(default_factory=TaskScorer)  # the project's selection strategy
    linker: LinkerHolder | None = None  # the project's taxonomy linker (backend/linking.py)
    link_options: TaskOptionsWriter | None = None  # candidates into Label Studio's tasks

    def close(self) -> None:
        if self.inbox is not None:
            self.inbox.stop()
        if self.worker is not None:
            self.worker.stop()
        self.holder.stop()
        self.store.close()


MakeWorker = Callable[..., "TrainingWorker"]


def build_services(config: ServiceConfig, make_worker: MakeWorker | None = None) -> Services:
    """The project, store, registry, model holder and training worker for `config`.

    `make_worker(project, state_dir, on_promoted)` defaults to backend.worker.TrainingWorker.
    """
    from labeling.project import load_project
    from labeling.state import ProjectState

    project = load_project(config.project)
    state = ProjectState.of(project, config.state_dir)
    state_dir = state.root
    state_dir.mkdir(parents=True, exist_ok=True)
    store = state.store()
    registry = state.registry()
    studio = StudioLink(
        state.studio_file,
        config.label_studio_url,
        config.label_studio_api_key,
        remove_older=config.remove_older_predictions,
    )
    holder = ModelHolder(
        project,
        registry,
        on_swap=studio.model_swapped,
        watch_interval=config.watch_interval,
        threads=config.threads,
        training_threads=config.training_threads,
    )
    worker: TrainingWorker | None = None
    if config.training:
        if make_worker is None:
            from backend.worker import TrainingWorker

            make_worker = TrainingWorker
        worker = make_worker(project, state_dir, on_promoted=holder.promoted)
        holder.training_running = worker.is_running  # an Event: no I/O per /predict
    from backend.linking import LinkerHolder, TaskOptionsWriter
    from labeling.studio.client import StudioClient

    link_options = None
    if studio.configured and project.linking.taxonomy and project.config.links:
        url, key = config.label_studio_url or "", config.label_studio_api_key or ""
        link_options = TaskOptionsWriter(
            lambda: StudioClient(url, key), project.config.link_choices_key
        )
    return Services(
        config,
        project,
        state_dir,
        store,
        registry,
        worker,
        holder,
        studio,
        _make_metrics(),
        scorer=TaskScorer(project.selection.strategy),
        linker=LinkerHolder(project, config.state_dir),
        link_options=link_options,
    )


def create_app(config: ServiceConfig, services: Services | None = None) -> Flask:
    """The WSGI application. Loads the model (in a background thread unless configured
    otherwise) and starts the training worker; `app.extensions["skillloop"].close()`
    stops both."""
    config.validate()
    services = services or build_services(config)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_content_length
    if isinstance(app.json, DefaultJSONProvider):
        app.json.sort_keys = False  # keys in the order Label Studio's docs show them
    app.extensions["skillloop"] = services
    _register(app, services)
    services.holder.start(background=config.background_load)
    if services.linker is not None:
        holder = services.holder
        services.linker.start(config.background_load, after=lambda: holder.wait_ready(600))
    if services.worker is not None:
        services.worker.start()
    services.inbox = Inbox(
        services.store,
        lambda body: _read_queued(services, body),
        on_stored=lambda n: _stored(services, n),
    )
    services.inbox.start()
    log.info(
        "serving project %s from %s (auth %s, Label Studio refresh %s)",
        services.project.name,
        services.state_dir,
        "on" if config.auth_enabled else "off",
        "on" if config.studio_enabled else "off",
    )
    return app


def _make_metrics() -> Metrics:
    metrics = Metrics()
    metrics.counter("http_requests_total", "HTTP requests by route and status")
    metrics.histogram("http_request_duration_seconds", "request latency by route")
    metrics.counter("predictions_total", "tasks predicted, by model version")
    metrics.counter("prediction_task_errors_total", "tasks answered empty: unreadable")
    metrics.counter(
        "prediction_tasks_not_reached_total", "tasks past the time budget or the tasks limit"
    )
    metrics.counter("annotations_stored_total", "annotations written by webhooks")
    metrics.counter("annotations_deleted_total", "annotations tombstoned by webhooks")
    metrics.counter("webhook_events_total", "webhook events by action (unknown: other)")
    metrics.counter("training_requests_total", "training triggers by source and outcome")
    return metrics


def _register(app: Flask, s: Services) -> None:  # the route table
    config = s.config

    @app.before_request
    def _start_and_authenticate():
        g.started = time.perf_counter()
        if not config.auth_enabled or request.endpoint in UNAUTHENTICATED:
            return None
        auth = request.authorization
        ok = (
            auth is not None
            and auth.type == "basic"
            and hmac.compare_digest((auth.username or "").encode(), config.basic_auth_user.encode())
            and hmac.compare_digest((auth.password or "").encode(), config.basic_auth_pass.encode())
        )
        if ok:
            return None
        response = jsonify(error="authentication required (HTTP basic auth)")
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Basic realm="skillloop"'
        return response

    @app.after_request
    def _measure(response: Response):
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        seconds = time.perf_counter() - g.get("started", time.perf_counter())
        s.metrics.inc(
            "http_requests_total",
            route=route,
            method=request.method,
            status=str(response.status_code),
        )
        s.metrics.observe("http_request_duration_seconds", seconds, route=route)
        return response

    register_error_handlers(app, config.max_content_length)

    @app.get("/health")
    def health():
        model = s.holder.current()
        body = {
            "status": "UP",
            "model_loaded": model.loaded,
            "model_version": model.version,
            "loading": not s.holder.ready,
        }
        if s.holder.error:
            body["error"] = s.holder.error
        return jsonify(body)

    @app.post("/setup")
    def setup():
        req = SetupRequest.parse(_json_object())
        s.studio.remember(req.project)
        if req.schema is not None:
            label_names(parse_labeling(req.schema), s.project)  # one we cannot serve: say so
            s.connected_config = req.schema
        s.holder.wait_ready(SETUP_WAIT_S)
        return jsonify(model_version=s.holder.current().version)

    @app.post("/predict")
    def predict():
        req = PredictRequest.parse(_json_object())
        labeling = parse_labeling(req.label_config) if req.label_config else s.project.config
        names = label_names(labeling, s.project)
        limits = Limits(
            config.max_text_chars,
            config.max_tasks,
            deadline_from(g.started, config.predict_budget_s),
        )
        if not s.holder.wait_ready(min(PREDICT_WAIT_S, config.predict_budget_s)):
            raise BadRequest("the model is still loading; retry shortly", 503)
        model = s.holder.current()  # this request's model, even if a swap happens now
        results = predict_tasks(s, req.tasks, labeling, names, model, limits)
        return jsonify(results=results, model_version=model.version)

    @app.post("/webhook")
    def webhook():
        raw = request.get_data(cache=True)  # 413 past MAX_CONTENT_LENGTH
        if len(raw) > SYNC_BYTES and s.inbox is not None:
            inbox_id = s.store.enqueue(raw)  # durable (fsynced) before we acknowledge
            s.inbox.wake()
            return jsonify(status="queued", inbox_id=inbox_id, bytes=len(raw))
        req = WebhookRequest.parse(json_object(raw))
        s.metrics.inc("webhook_events_total", action=req.metrics_action)
        if req.action in ANNOTATION_EVENTS:
            reply = _store_annotations(s, req)  # before remember(): a refusal leaves no trace
            s.studio.remember(req.project)
            return jsonify(reply)
        if req.project is not None:
            s.studio.remember(req.project)
        if req.action == "ANNOTATIONS_DELETED":
            return jsonify(_delete_annotations(s, req.body))
        if req.action == "START_TRAINING":
            return jsonify(_request_training(s, "studio"))
        return jsonify(status="ignored", action=req.action)

    @app.post("/train")
    def train():
        return jsonify(_request_training(s, "api"))

    @app.get("/versions")
    def versions():
        details = [_jsonable(v) for v in s.registry.versions()]
        serving = s.registry.serving()
        return jsonify(
            versions=[d["version"] for d in details],
            serving=serving.version if serving is not None else None,
            model_version=s.holder.current().version,
            details=details,
        )

    @app.get("/status")
    def status():
        return jsonify(_status(s))

    @app.get("/metrics")
    def metrics():
        text = s.metrics.render(_gauges(s))
        return Response(text, mimetype="text/plain", content_type="text/plain; version=0.0.4")


# --- request helpers ---------------------------------------------------------------------
def _json_object() -> dict:
    return json_object(request.get_data(cache=True))  # get_data: 413 past MAX_CONTENT_LENGTH


def _annotation_config(s: Services, req: WebhookRequest) -> tuple[LabelingConfig, dict | None]:
    """The config an annotation was made with (the webhook's project's own, else the one
    /setup last sent, else the project folder's) and its labels -> the project's."""
    xml = req.label_config or s.connected_config
    if xml is None:
        return s.project.config, None
    labeling = parse_labeling(xml)
    return labeling, project_labels(labeling, s.project)


def _records(s: Services, req: WebhookRequest) -> list:
    from labeling.studio.payloads import records_from_webhook

    labeling, names = _annotation_config(s, req)
    try:
        return records_from_webhook(req.body, labeling, names)
    except ValueError as err:  # TaskError and ConfigError are ValueErrors too
        raise BadRequest(f"cannot read the annotation: {err}", 422) from None


def _store_annotations(s: Services, req: WebhookRequest) -> dict:
    """All the webhook's annotations in one transaction, or (422) none of them."""
    records = _records(s, req)
    s.store.upsert_many(records)  # durable (committed, fsynced) before we acknowledge
    _stored(s, len(records))
    ids = [r.annotation_id for r in records]
    return {"status": "stored", "annotation_ids": ids}


def _read_queued(s: Services, body: bytes) -> tuple[list, list[int]]:
    """What a queued webhook body stores or deletes (ValueError: refused, nothing done)."""
    from labeling.studio.payloads import deleted_ids_from_webhook

    try:
        req = WebhookRequest.parse(json_object(body))
        s.metrics.inc("webhook_events_total", action=req.metrics_action)
        if req.action in ANNOTATION_EVENTS:
            return _records(s, req), []
        if req.action == "ANNOTATIONS_DELETED":
            return [], deleted_ids_from_webhook(req.body)
    except BadRequest as err:
        raise ValueError(str(err)) from None
    raise ValueError(f"only annotation events are read from the inbox, not {req.action}")


def _stored(s: Services, count: int) -> None:
    s.metrics.inc("annotations_stored_total", count)
    _notify_worker(s)


def _delete_annotations(s: Services, body: dict) -> dict:
    from labeling.studio.payloads import deleted_ids_from_webhook

    try:
        ids = deleted_ids_from_webhook(body)
    except ValueError as err:
        raise BadRequest(f"cannot read the deletion: {err}", 422) from None
    deleted = s.store.tombstone(ids)
    s.metrics.inc("annotations_deleted_total", deleted)
    _notify_worker(s)
    return {"status": "deleted", "deleted": deleted, "annotation_ids": ids}


def _notify_worker(s: Services) -> None:
    if s.worker is None:
        return
    try:
        s.worker.annotation_changed()
    except Exception:  # the annotation is stored: acknowledge it whatever the worker says
        log.exception("the training worker failed to take an annotation change")


def _request_training(s: Services, source: str) -> dict:
    if s.worker is None:
        raise BadRequest("training is disabled in this service (SKILLLOOP_TRAINING=0)", 409)
    reply = s.worker.request(source)
    outcome = "accepted" if reply.get("accepted") else "refused"
    s.metrics.inc("training_requests_total", source=source, outcome=outcome)
    return {**reply, "status": _jsonable(s.worker.status())}


def _status(s: Services) -> dict:
    model = s.holder.current()
    worker = _jsonable(s.worker.status()) if s.worker is not None else {"training": "disabled"}
    return {
        **worker,
        "project": s.project.name,
        "model_version": model.version,
        "model_loaded": model.loaded,
        "model_source": model.source,
        "studio_project": s.studio.project_id,
        "studio_refresh": s.studio.last_refresh,
        "webhook_inbox": {**s.store.inbox(), "refused_last": s.store.inbox_errors()},
    }


def _gauges(s: Services) -> list[Gauge]:
    model = s.holder.current()
    gauges = [
        Gauge("model_loaded", "1 when a model serves predictions", float(model.loaded)),
        Gauge(
            "serving_info",
            "the model version answering /predict",
            1.0,
            (("model_version", model.version),),
        ),
    ]
    inbox = s.store.inbox()
    pending = float(inbox["pending"])
    gauges.append(Gauge("webhook_inbox_pending", "bulk webhooks not read yet", pending))
    gauges.append(Gauge("webhook_inbox_refused", "bulk webhooks refused", float(inbox["refused"])))
    events: dict[str, int] = {}
    for event in s.registry.events():
        events[event["action"]] = events.get(event["action"], 0) + 1
    for action, name, help_text in (
        ("add", "rounds_run", "rounds that registered a new version"),
        ("promote", "rounds_promoted", "versions promoted by the held-out gate"),
        ("refuse", "rounds_refused", "versions refused by the held-out gate"),
        ("rollback", "rollbacks", "rollbacks to an earlier version"),
    ):
        gauges.append(Gauge(name, help_text, float(events.get(action, 0))))
    if s.worker is not None:
        worker = s.worker.status()
        gauges.append(
            Gauge("training_running", "1 while a round trains", float(bool(worker.get("running"))))
        )
        gauges.append(
            Gauge(
                "training_queued",
                "1 when a follow-up round is queued",
                float(bool(worker.get("queued"))),
            )
        )
    return gauges


def _jsonable(value):
    """Dataclasses, paths and nested containers as JSON-ready values."""
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    return str(value)
