"""The edge of the service: request bodies parsed into typed requests, and one set of error
handlers, so every route answers the same fault with the same 4xx JSON `{"error": ...}` and
no handler meets an unchecked type.

What a client can send and what it gets (docs/service.md, "Error policy"): a body that is
not JSON, nested too deeply (json.loads recurses), or uses NaN/Infinity: 400; a JSON value
of the wrong type for a field: 400 naming the field; a Label Studio payload that cannot be
read (a region naming an unknown label, an id past 2**63): 422 naming the item. Nothing a
client sends reaches the catch-all 500 handler, which is kept for bugs.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from backend.service.shown import shown_text
from labeling.storage.engine import StoreUnavailable
from labeling.studio.config import ConfigError

log = logging.getLogger(__name__)

# the webhook actions Label Studio 1.23 sends; anything else is counted as "other" so that
# a client inventing action strings cannot grow the metrics without bound
KNOWN_ACTIONS = frozenset(
    {
        "ANNOTATION_CREATED",
        "ANNOTATIONS_CREATED",
        "ANNOTATION_UPDATED",
        "ANNOTATIONS_DELETED",
        "START_TRAINING",
        "PROJECT_CREATED",
        "PROJECT_UPDATED",
        "PROJECT_DELETED",
        "TASKS_CREATED",
        "TASKS_DELETED",
        "LABEL_LINK_CREATED",
        "LABEL_LINK_UPDATED",
        "LABEL_LINK_DELETED",
        "REVIEW_CREATED",
        "REVIEW_UPDATED",
        "REVIEWS_DELETED",
    }
)
ANNOTATION_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED")


class BadRequest(Exception):
    """A request the service cannot serve: answered as JSON {"error": message}."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# --- bodies ------------------------------------------------------------------------------
def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def json_object(raw: bytes) -> dict[str, Any]:
    """The JSON object a request body holds; BadRequest (400) for anything else."""
    if not raw:
        raise BadRequest("empty request body: expected a JSON object")
    try:
        body = json.loads(raw, parse_constant=_no_constant)
    except RecursionError:
        raise BadRequest("request body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise BadRequest(f"request body is not valid JSON: {str(err)[:200]}") from None
    if not isinstance(body, dict):
        raise BadRequest(f"request body must be a JSON object, got {type(body).__name__}")
    return body


def optional_str(body: dict, key: str, what: str) -> str | None:
    value = body.get(key)
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise BadRequest(f"'{key}' must be {what} as a string, got {type(value).__name__}")
    return value


def project_field(body: dict) -> dict | str | int | None:
    """The `project` a Label Studio request names: "7.1764…" (/setup, /predict), 7, or
    {"id": 7, "label_config": …} (webhooks); anything else is ignored."""
    value = body.get("project")
    if isinstance(value, dict | str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    return None


STUDIO_KEY = re.compile(r"(?P<id>[1-9][0-9]{0,18})(?:\.(?P<created>[0-9]{1,20}))?", re.ASCII)


@dataclass(frozen=True)
class StudioProjectKey:
    """A Label Studio project as requests name it: its id and, from /setup and /predict's
    `"<id>.<created_ts>"`, its creation time (ids restart after a Label Studio reset)."""

    id: int
    created_ts: int | None = None

    @classmethod
    def of(cls, value: dict | str | int | None) -> StudioProjectKey | None:
        """From "7.1764079200", "7", 7 or {"id": 7, ...}; None when there is no id. Parsed
        strictly (ASCII digits, no sign, no `_`, no leading zero), so that no two spellings
        (`11`, `+11`, `1_1`, Arabic-Indic digits: all 11 to `int()`) name one project."""
        if isinstance(value, dict):
            value = value.get("id")
        if isinstance(value, bool) or not isinstance(value, int | str):
            return None
        match = STUDIO_KEY.fullmatch(str(value))
        if match is None:
            return None
        studio_id = int(match["id"])
        created = int(match["created"]) if match["created"] else None
        return cls(studio_id, created) if studio_id < 2**63 else None


# --- typed requests ----------------------------------------------------------------------
@dataclass(frozen=True)
class SetupRequest:
    project: dict | str | int | None
    schema: str | None

    @classmethod
    def parse(cls, body: dict) -> SetupRequest:
        return cls(project_field(body), optional_str(body, "schema", "the labeling config XML"))


@dataclass(frozen=True)
class PredictRequest:
    tasks: list  # each checked one by one: a bad task gets an empty result, not a 4xx
    label_config: str | None
    project: dict | str | int | None = None

    @classmethod
    def parse(cls, body: dict) -> PredictRequest:
        tasks = body.get("tasks")
        if tasks is None:
            raise BadRequest("missing 'tasks': expected {\"tasks\": [task, ...]}")
        if not isinstance(tasks, list):
            raise BadRequest(f"'tasks' must be a list, got {type(tasks).__name__}")
        label_config = optional_str(body, "label_config", "the labeling config XML")
        return cls(tasks, label_config, project_field(body))


@dataclass(frozen=True)
class WebhookRequest:
    action: str
    project: dict | str | int | None
    label_config: str | None  # the sending Label Studio project's config, when it came
    body: dict

    @property
    def metrics_action(self) -> str:
        return self.action if self.action in KNOWN_ACTIONS else "other"

    @classmethod
    def parse(cls, body: dict) -> WebhookRequest:
        action = body.get("action")
        if not isinstance(action, str) or not action:
            raise BadRequest("missing 'action': not a Label Studio webhook payload")
        project = project_field(body)
        label_config = None
        if isinstance(project, dict):
            label_config = optional_str(project, "label_config", "the labeling config XML")
        return cls(action, project, label_config, body)


# --- one set of error handlers -----------------------------------------------------------
class OutageLog:
    """One warning when the annotation database becomes unavailable (with how many requests
    it refused while away, once it answers again), instead of one traceback per request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.refused = 0  # requests answered 503 in the current outage

    def failed(self, reason: str) -> None:
        with self._lock:
            self.refused += 1
            first = self.refused == 1
        if first:
            log.warning("%s; answering 503 until it is back", reason)

    def recovered(self) -> None:
        if not self.refused:  # no lock in the common case: nothing to report
            return
        with self._lock:
            refused, self.refused = self.refused, 0
        if refused:
            log.warning("the annotation database answers again (%d requests got 503)", refused)


def refuse_cut_bodies(app: Flask, max_content_length: int) -> None:
    """A body sent without a Content-Length (chunked) is read by Werkzeug only up to
    MAX_CONTENT_LENGTH and silently cut there; acknowledging it would lose the annotation
    it carried. Such a body is read here, before any route sees it: one byte past the limit
    makes it a 413, as a body that declares its length gets. Registered after
    authentication, so an unauthenticated body is never read."""

    @app.before_request
    def _whole_or_413() -> None:
        if request.content_length is not None or request.method not in ("POST", "PUT"):
            return
        data = request.get_data(cache=True)
        if len(data) >= max_content_length and request.environ["wsgi.input"].read(1):
            log.info("%s %s -> 413: chunked body past the limit", request.method, request.path)
            raise RequestEntityTooLarge()


def register_error_handlers(app: Flask, max_content_length: int) -> None:
    @app.errorhandler(BadRequest)
    def _bad_request(err: BadRequest) -> tuple[Response, int]:
        log.info("%s %s -> %d: %s", request.method, request.path, err.status, err)
        return jsonify(error=shown_text(str(err))), err.status

    @app.errorhandler(ConfigError)
    def _unreadable_config(err: ConfigError) -> tuple[Response, int]:
        # a labeling config the request brought (or named) that we cannot read or serve:
        # its labels unknown to the project (labeling.studio.label_map), a bad XML
        log.info("%s %s -> 422: %s", request.method, request.path, err)
        return jsonify(error=shown_text(str(err))), 422

    outage = OutageLog()

    @app.errorhandler(StoreUnavailable)
    def _store_unavailable(err: StoreUnavailable) -> tuple[Response, int]:
        # Label Studio shows the message; the log gets one line per outage, not a
        # traceback per request (thousands a minute while the database is away)
        outage.failed(str(err))
        return jsonify(error=shown_text(str(err)), retry=True), 503

    @app.after_request
    def _store_answered(response: Response) -> Response:
        if response.status_code < 500:
            outage.recovered()
        return response

    @app.errorhandler(RecursionError)
    def _too_deep(err: RecursionError) -> tuple[Response, int]:
        # a payload just under json.loads' limit can still be too deep for a later walk
        log.info("%s %s -> 400: nested too deeply", request.method, request.path)
        return jsonify(error="request body is nested too deeply"), 400

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException) -> tuple[Response, int]:
        message = err.description or err.name
        if err.code == 413:
            message = f"request body larger than {max_content_length} bytes"
        return jsonify(error=message), err.code or 500

    @app.errorhandler(Exception)
    def _unexpected(err: Exception) -> tuple[Response, int]:
        log.exception("%s %s failed", request.method, request.path)
        return jsonify(error=f"internal error: {type(err).__name__}"), 500
