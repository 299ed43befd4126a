"""GET /taxonomy, the link search's data: the project's whole taxonomy, read by the
annotators' browser from the URL /predict writes into each linked task."""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from flask import Response, jsonify, make_response

if TYPE_CHECKING:
    from backend.service.config import ServiceConfig
    from backend.service.services import Services


def search_key(config: ServiceConfig) -> str:
    """The key /taxonomy asks for when the backend requires basic auth: an annotator's
    browser cannot send the backend's password, so the URL written into tasks carries a
    key derived from it instead."""
    secret = f"{config.basic_auth_user}:{config.basic_auth_pass}".encode()
    return hmac.new(secret, b"skillloop taxonomy", hashlib.sha256).hexdigest()[:24]


def note_search_url(s: Services, host_url: str, config: ServiceConfig) -> None:
    """The link search's URL, as the annotators' browser reaches this backend: the URL
    Label Studio called it by, or $SKILLLOOP_PUBLIC_URL when browsers reach it elsewhere."""
    if s.link_options is None or not s.link_options.search_key:
        return
    params: dict[str, str] = {}
    if s.studio_id is not None:
        params["project"] = str(s.studio_id)
    if config.auth_enabled:
        params["key"] = search_key(config)
    base = os.environ.get("SKILLLOOP_PUBLIC_URL") or host_url
    query = f"?{urlencode(params)}" if params else ""
    s.link_options.search_url = f"{base.rstrip('/')}/taxonomy{query}"


def taxonomy_response(
    s: Services, key: str, config: ServiceConfig, accepts_gzip: bool = False
) -> Response:
    """GET /taxonomy: the project's taxonomy for the link search, readable from the
    annotators' browser (CORS), cached by it for ten minutes."""
    if config.auth_enabled and not hmac.compare_digest(key.encode(), search_key(config).encode()):
        response = jsonify(error="the taxonomy needs the key written into the task's URL")
        response.status_code = 401
    elif s.linker is None or s.linker.search_body is None:
        message = s.linker.error if s.linker is not None and s.linker.error else None
        response = jsonify(error=message or "the linker is not loaded yet; retry shortly")
        response.status_code = 503 if s.linker is not None and s.linker.enabled else 404
    else:
        plain, packed = s.linker.search_body
        response = make_response(packed if accepts_gzip else plain)
        response.mimetype = "application/json"
        if accepts_gzip:
            response.headers["Content-Encoding"] = "gzip"
        response.headers["Vary"] = "Accept-Encoding"
        response.headers["Cache-Control"] = "private, max-age=600"
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response
