"""The Label Studio ML backend: a Flask application factory and its routes.

Label Studio 1.23 drops a whole /predict batch when the number of results is wrong and
reports a 500 as success with nothing stored, so /predict always answers one result per
task, in order, and a task it cannot read gets a logged empty result instead of failing
its batch. Webhooks store the annotation (SQLite, durable) before answering and hand
training to the worker, which runs it in another process. Nothing in a request loads a
model or trains one. Every route answers through the services of the project the request
is for (backend/service/routing.py: one project, or one of several Label Studio projects). The
facts behind these choices: ../shared/notes/label-studio.md.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
from typing import TYPE_CHECKING

from flask import Flask, Response, g, jsonify, request
from flask.json.provider import DefaultJSONProvider

from backend.service import webhooks
from backend.service.build import MakeWorker, build_services, make_metrics
from backend.service.config import ServiceConfig
from backend.service.inbox_reader import SYNC_BYTES
from backend.service.memory import TRIM_AFTER_BYTES, release_memory
from backend.service.predict_slots import PredictSlots
from backend.service.predictions import Limits, deadline_from, predict_tasks
from backend.service.requests import (
    ANNOTATION_EVENTS,
    BadRequest,
    PredictRequest,
    SetupRequest,
    WebhookRequest,
    json_object,
    project_field,
    refuse_cut_bodies,
    register_error_handlers,
)
from backend.service.routing import OneProject, SeveralProjects
from backend.service.service_status import gauges, jsonable, status
from backend.service.services import Services
from backend.service.shown import shown, shown_text
from backend.service.taxonomy_search import note_search_url, taxonomy_response
from labeling.studio.config import parse_config
from labeling.studio.label_map import label_names

if TYPE_CHECKING:
    from backend.service.metrics import Metrics

log = logging.getLogger(__name__)

# Label Studio checks /health before anything else; /taxonomy is read by the annotators'
# browser, which checks its own key (backend/service/taxonomy_search.py)
UNAUTHENTICATED = ("health", "taxonomy")
SETUP_WAIT_S = 2.0  # Label Studio gives /setup 3 s
PREDICT_WAIT_S = 60.0  # ... and /predict 100 s: wait for a model still loading
# the webhooks that set up a project the backend has not met (serving several)
SETS_UP = (*ANNOTATION_EVENTS, "START_TRAINING")
# what a deletion webhook does: Label Studio deletes a task's annotations with the task
# and sends TASKS_DELETED only
DELETIONS = {
    "ANNOTATIONS_DELETED": webhooks.delete_annotations,
    "TASKS_DELETED": webhooks.delete_tasks,
}
__all__ = ["BadRequest", "Services", "build_services", "create_app"]
Router = OneProject | SeveralProjects


def create_app(
    config: ServiceConfig,
    services: Services | None = None,
    make_worker: MakeWorker | None = None,
) -> Flask:
    """The WSGI application. Loads the model(s) (in a background thread unless configured
    otherwise) and starts the training worker(s). `app.extensions["skillloop"]` is the
    project's `Services` (one project) or the `SeveralProjects` router; its `close()`
    stops everything."""
    config.validate()
    router: Router
    if config.several_projects:
        router = SeveralProjects(config, make_metrics(), make_worker)
    else:
        router = OneProject(services or build_services(config, make_worker))
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_content_length
    if isinstance(app.json, DefaultJSONProvider):
        app.json.sort_keys = False  # keys in the order Label Studio's docs show them
    app.extensions["skillloop"] = router if router.several else router.all()[0]
    app.extensions["skillloop.projects"] = router
    _register(app, config, router, router.metrics)
    router.start()
    log.info(
        "serving %s (auth %s, Label Studio refresh %s)",
        router.describe(),
        "on" if config.auth_enabled else "off",
        "on" if config.studio_enabled else "off",
    )
    return app


def _register(app: Flask, config: ServiceConfig, router: Router, metrics: Metrics) -> None:
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
        metrics.inc(
            "http_requests_total",
            route=route,
            method=request.method,
            status=str(response.status_code),
        )
        metrics.observe("http_request_duration_seconds", seconds, route=route)
        if config.trim_memory and (request.content_length or 0) > TRIM_AFTER_BYTES:
            response.call_on_close(release_memory)  # once its objects are freed (memory.py)
        return response

    refuse_cut_bodies(app, config.max_content_length)  # after authentication (above)
    register_error_handlers(app, config.max_content_length)

    @app.get("/health")
    def health():
        if router.several:  # Label Studio reads "status"; each project says how its model is
            return jsonify(status="UP", projects=[_health(s) for s in router.all()])
        return jsonify({"status": "UP", **_health(router.all()[0])})

    @app.post("/setup")
    def setup():
        req = SetupRequest.parse(_json_object())
        new = not router.connected(req.project)  # its model starts loading only now
        s = router.for_setup(req.project, req.schema)
        if req.schema is not None:
            label_names(parse_config(req.schema), s.project)  # one we cannot serve: 422
            router.remember_schema(s, req.schema)  # only now: a refused /setup changes nothing
        if not new:  # a model that just started loading is not ready within Label Studio's 3 s
            s.holder.wait_ready(max(0.0, SETUP_WAIT_S - (time.perf_counter() - g.started)))
        model = s.holder.current()
        # remembered only after the checks (a refused /setup changes nothing); its queue
        # arranged in the background
        s.studio.connected(req.project, model)
        return jsonify(model_version=model.version)

    @app.post("/predict")
    @PredictSlots.from_env().bounded  # /predict never takes every thread (predict_slots.py)
    def predict():
        req = PredictRequest.parse(_json_object())
        # a project is set up by /setup or a webhook (Label Studio sends /setup first)
        s = router.for_request(req.project, req.label_config, create=False)
        # without a config in the request: the one /setup sent for this Label Studio project
        xml = req.label_config or (s.connected_config if s.studio_id is not None else None)
        labeling = parse_config(xml) if xml else s.project.config
        names = label_names(labeling, s.project)
        limits = Limits(
            config.max_text_chars,
            config.max_tasks,
            deadline_from(g.started, config.predict_budget_s, s.holder.clock),
        )
        s.holder.ensure_loaded()  # a model unloaded while idle loads again (model_cache.py)
        if not s.holder.wait_ready(min(PREDICT_WAIT_S, config.predict_budget_s)):
            raise BadRequest("the model is still loading; retry shortly", 503)
        model = s.holder.current()  # this request's model, even if a swap happens now
        note_search_url(s, request.host_url, config)
        results = predict_tasks(s, req.tasks, labeling, names, model, limits)
        return jsonify(results=results, model_version=model.version)

    @app.post("/webhook")
    def webhook():
        raw = request.get_data(cache=True)  # 413 past MAX_CONTENT_LENGTH
        if len(raw) > SYNC_BYTES:
            s = router.for_request(_queued_project(router, raw))
            if s.inbox_reader is not None:
                inbox_id = s.store.inbox.enqueue(raw)  # durable (fsynced) before we acknowledge
                s.inbox_reader.wake()
                return jsonify(status="queued", inbox_id=inbox_id, bytes=len(raw))
        req = WebhookRequest.parse(json_object(raw))
        metrics.inc("webhook_events_total", action=req.metrics_action)
        if req.action not in SETS_UP and not router.connected(req.project):
            return jsonify(status="ignored", action=req.action)  # nothing of it to change
        s = router.for_request(req.project, req.label_config)
        if req.action in ANNOTATION_EVENTS:
            reply = webhooks.store_annotations(
                s, req
            )  # before remember(): a refusal leaves no trace
            s.studio.remember(req.project)
            return jsonify(reply)
        if req.action in DELETIONS:  # a refusal raises: no trace
            reply = DELETIONS[req.action](s, req.body)
            s.studio.remember(req.project)
            return jsonify(reply)
        if req.project is not None:
            s.studio.remember(req.project)
        if req.action == "START_TRAINING":
            return jsonify(webhooks.request_training(s, "studio"))
        return jsonify(status="ignored", action=req.action)

    @app.post("/train")
    def train():
        return jsonify(webhooks.request_training(_named(router), "api"))

    @app.get("/versions")
    def versions():
        s = _named(router)
        details = shown(jsonable(s.registry.versions()), s.state.root)  # no absolute paths
        serving = s.registry.serving()
        return jsonify(
            versions=[d["version"] for d in details],
            serving=serving.version if serving is not None else None,
            model_version=s.holder.current().version,
            details=details,
        )

    @app.get("/taxonomy")
    def taxonomy():
        gzip = "gzip" in request.headers.get("Accept-Encoding", "")
        return taxonomy_response(_named(router), request.args.get("key", ""), config, gzip)

    @app.get("/status")
    def status_route():
        if router.several and _asked_project() is None:
            return jsonify(projects=[status(s) for s in router.all()])
        return jsonify(status(_named(router)))

    @app.get("/metrics")
    def metrics_route():
        found = []
        for s in router.all():
            labels = (("studio_project", str(s.studio_id)),) if router.several else ()
            found += gauges(s, labels)
        found.sort(key=lambda gauge: gauge.name)  # a family's samples together
        text = metrics.render(found)
        return Response(text, mimetype="text/plain", content_type="text/plain; version=0.0.4")


# --- request helpers ---------------------------------------------------------------------
def _json_object() -> dict:
    return json_object(request.get_data(cache=True))  # get_data: 413 past MAX_CONTENT_LENGTH


def _health(s: Services) -> dict:
    model = s.holder.current()
    body = {"model_loaded": model.loaded, "model_version": model.version}
    body["loading"] = not s.holder.ready
    if model.unloaded:  # idle: loaded again by the next /predict
        body["unloaded"] = True
    if s.studio_id is not None:
        body = {"studio_project": s.studio_id, **body}
    if s.holder.error:  # /health needs no login: no absolute path in it either
        body["error"] = shown_text(s.holder.error, s.state.root)
    return body


def _asked_project() -> str | dict | int | None:
    """The project a /status, /versions or /train request names: `?project=7`, or the
    JSON body's `project` (Label Studio sends GET /versions with one)."""
    if request.args.get("project"):
        return request.args["project"]
    raw = request.get_data(cache=True)
    return project_field(json_object(raw)) if raw.strip() else None


def _named(router: Router) -> Services:
    """The services a request without a Label Studio payload is for (one project: its)."""
    if not router.several:
        return router.all()[0]
    return router.for_request(_asked_project(), create=False)


QUEUED_PROJECT = re.compile(rb'"project"\s*:\s*(?:\{\s*"id"\s*:\s*)?"?(\d+)')


def _queued_project(router: Router, raw: bytes) -> int | dict | str | None:
    """The project of a body too big to read in the request. Every `"project": 7` (or
    `{"id": 7`) key in it names the webhook's project (a quote inside a JSON string is
    escaped, so text cannot fake one); when they disagree (a task's data may hold its own
    `project` field) the body is parsed after all. The inbox checks it again on reading."""
    if not router.several:
        return None
    found = {int(m) for m in QUEUED_PROJECT.findall(raw)}
    if len(found) == 1:
        return found.pop()
    return WebhookRequest.parse(json_object(raw)).project
