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
import json
import logging
import time
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from backend.metrics import Gauge, Metrics
from backend.serving import ModelHolder, ServingModel, StudioLink
from backend.settings import ServiceConfig
from labeling.studio.config import ConfigError, LabelingConfig, map_model_labels, parse_config
from labeling.studio.tasks import TaskError, spans_to_regions, task_text

log = logging.getLogger(__name__)

UNAUTHENTICATED = ("health",)  # Label Studio checks /health before anything else
SETUP_WAIT_S = 2.0  # Label Studio gives /setup 3 s
PREDICT_WAIT_S = 60.0  # ... and /predict 100 s: wait for a model still loading
# ANNOTATIONS_CREATED (plural) is Label Studio's bulk form, e.g. an import with annotations
ANNOTATION_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED")


class BadRequest(Exception):
    """A request the service cannot serve: answered as JSON {"error": message}."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Services:
    """Everything the routes use, built once per application."""

    config: ServiceConfig
    project: object  # labeling.project.Project
    state_dir: Path
    store: object  # labeling.store.AnnotationStore
    registry: object  # training.registry.Registry
    worker: object | None  # backend.worker.TrainingWorker (None: training disabled)
    holder: ModelHolder
    studio: StudioLink
    metrics: Metrics

    def close(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        self.holder.stop()
        self.store.close()


def build_services(config: ServiceConfig, make_worker=None) -> Services:
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
    worker = None
    if config.training:
        if make_worker is None:
            from backend.worker import TrainingWorker as make_worker
        worker = make_worker(project, state_dir, on_promoted=holder.promoted)
        holder.training_running = lambda: bool(worker.status().get("running"))
    return Services(
        config, project, state_dir, store, registry, worker, holder, studio, _make_metrics()
    )


def create_app(config: ServiceConfig, services: Services | None = None) -> Flask:
    """The WSGI application. Loads the model (in a background thread unless configured
    otherwise) and starts the training worker; `app.extensions["skillloop"].close()`
    stops both."""
    config.validate()
    services = services or build_services(config)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_content_length
    app.json.sort_keys = False
    app.extensions["skillloop"] = services
    _register(app, services)
    services.holder.start(background=config.background_load)
    if services.worker is not None:
        services.worker.start()
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
    metrics.counter("annotations_stored_total", "annotations written by webhooks")
    metrics.counter("annotations_deleted_total", "annotations tombstoned by webhooks")
    metrics.counter("webhook_events_total", "webhook events by action")
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

    @app.errorhandler(BadRequest)
    def _bad_request(err: BadRequest):
        log.info("%s %s -> %d: %s", request.method, request.path, err.status, err)
        return jsonify(error=str(err)), err.status

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException):
        message = err.description or err.name
        if err.code == 413:
            message = f"request body larger than {config.max_content_length} bytes"
        return jsonify(error=message), err.code

    @app.errorhandler(Exception)
    def _unexpected(err: Exception):
        log.exception("%s %s failed", request.method, request.path)
        return jsonify(error=f"internal error: {type(err).__name__}"), 500

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
        body = _json_object()
        s.studio.remember(body.get("project"))
        schema = body.get("schema")
        if schema not in (None, ""):
            if not isinstance(schema, str):
                raise BadRequest("'schema' must be the labeling config XML as a string")
            _label_names(_parse(schema), s.project)  # a config we cannot serve: say so now
        s.holder.wait_ready(SETUP_WAIT_S)
        return jsonify(model_version=s.holder.current().version)

    @app.post("/predict")
    def predict():
        body = _json_object()
        tasks = body.get("tasks")
        if tasks is None:
            raise BadRequest("missing 'tasks': expected {\"tasks\": [task, ...]}")
        if not isinstance(tasks, list):
            raise BadRequest(f"'tasks' must be a list, got {type(tasks).__name__}")
        schema = body.get("label_config")
        labeling = _parse(schema) if schema else s.project.config
        names = _label_names(labeling, s.project)
        if not s.holder.wait_ready(PREDICT_WAIT_S):
            raise BadRequest("the model is still loading; retry shortly", 503)
        model = s.holder.current()  # this request's model, even if a swap happens now
        results = predict_tasks(s, tasks, labeling, names, model)
        return jsonify(results=results, model_version=model.version)

    @app.post("/webhook")
    def webhook():
        body = _json_object()
        action = body.get("action")
        if not isinstance(action, str) or not action:
            raise BadRequest("missing 'action': not a Label Studio webhook payload")
        s.metrics.inc("webhook_events_total", action=action)
        if body.get("project") is not None:
            s.studio.remember(body["project"])
        if action in ANNOTATION_EVENTS:
            return jsonify(_store_annotations(s, body))
        if action == "ANNOTATIONS_DELETED":
            return jsonify(_delete_annotations(s, body))
        if action == "START_TRAINING":
            return jsonify(_request_training(s, "studio"))
        return jsonify(status="ignored", action=action)

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
    raw = request.get_data(cache=True)  # raises 413 past MAX_CONTENT_LENGTH
    if not raw:
        raise BadRequest("empty request body: expected a JSON object")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise BadRequest(f"request body is not valid JSON: {err}") from None
    if not isinstance(body, dict):
        raise BadRequest(f"request body must be a JSON object, got {type(body).__name__}")
    return body


def _parse(schema) -> LabelingConfig:
    if not isinstance(schema, str):
        raise BadRequest("'label_config' must be the labeling config XML as a string")
    try:
        return parse_config(schema)
    except ConfigError as err:
        raise BadRequest(str(err), 422) from None


def _label_names(labeling: LabelingConfig, project) -> dict[str, str]:
    """The model's (project) label -> the request config's label value.

    Configs written for other backends name the checkpoint's tag types instead
    (`predicted_values="BUS"`); those are read through the project's label map.
    """
    labels = [label.value for label in project.labels]
    try:
        return map_model_labels(labeling, labels)
    except ConfigError as first:
        aliases: dict[str, str] = {}
        for label in project.labels:
            for alias in getattr(label, "predicted_values", ()) or ():
                aliases.setdefault(alias, label.value)
        for tag_type, label in (getattr(project.model, "label_map", None) or {}).items():
            aliases.setdefault(tag_type, label)
        try:
            by_alias = map_model_labels(labeling, list(aliases))
        except ConfigError:
            raise BadRequest(str(first), 422) from None
        return {aliases[alias]: value for alias, value in by_alias.items()}


def predict_tasks(
    s: Services, tasks: list, labeling: LabelingConfig, names: dict, model: ServingModel
) -> list[dict]:
    """One result per task, in order; all readable tasks go to the model in one call."""
    texts: dict[int, str] = {}
    errors: dict[int, str] = {}
    for i, task in enumerate(tasks):
        try:
            texts[i] = task_text(task, labeling)
        except TaskError as err:
            errors[i] = str(err)
    if tasks and not texts:
        # nothing readable at all: a config/data mismatch the user must see, not empty results
        raise BadRequest(f"no task has a readable text: {errors[0]}", 422)
    order = sorted(texts)
    predictions, model = s.holder.predict([texts[i] for i in order], model)
    by_task = dict(zip(order, predictions or [], strict=False))
    results = []
    for i in range(len(tasks)):
        if i in errors:
            log.warning("predict: task %d of %d answered empty: %s", i + 1, len(tasks), errors[i])
            s.metrics.inc("prediction_task_errors_total")
            results.append({"result": [], "score": 1.0, "model_version": model.version})
            continue
        prediction = by_task.get(i)
        if prediction is None:  # no model yet
            results.append({"result": [], "model_version": model.version})
            continue
        regions = spans_to_regions(prediction.spans, labeling, texts[i], names)
        score = round(float(s.holder.task_score(prediction)), 6)
        results.append({"result": regions, "score": score, "model_version": model.version})
    s.metrics.inc("predictions_total", len(tasks), model_version=model.version)
    return results


def _store_annotations(s: Services, body: dict) -> dict:
    from labeling.store import records_from_webhook

    try:
        records = records_from_webhook(body, s.project.config)
    except ValueError as err:  # TaskError and ConfigError are ValueErrors too
        raise BadRequest(f"cannot read the annotation: {err}", 422) from None
    for record in records:
        s.store.upsert(record)  # durable (committed, fsynced) before we acknowledge
    s.metrics.inc("annotations_stored_total", len(records))
    _notify_worker(s)
    ids = [r.annotation_id for r in records]
    return {"status": "stored", "annotation_ids": ids}


def _delete_annotations(s: Services, body: dict) -> dict:
    from labeling.store import deleted_ids_from_webhook

    try:
        ids = deleted_ids_from_webhook(body)
    except ValueError as err:
        raise BadRequest(str(err)) from None
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
