"""What a logged-in client may see of the machine: no absolute file paths and no server
software versions (issue 22.8). /status, /versions and error messages name a file in the
project's state folder relative to that folder, any other absolute path by its last name."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from werkzeug.serving import WSGIRequestHandler

# The Server header. The server writes it, not the application: Werkzeug and gunicorn both
# add their own to whatever the application sets (two headers). `skillloop serve` runs
# Werkzeug with `NamedHandler`; deploy/gunicorn.conf.py names gunicorn's.
SERVER_NAME = "skillloop"


class NamedHandler(WSGIRequestHandler):
    """Werkzeug's request handler with `Server: skillloop` (Werkzeug's own names its version
    and Python's)."""

    def version_string(self) -> str:
        return SERVER_NAME


# an absolute path: "/" after the start, a space, a quote, "(" "[" "=" or "," (so a URL's
# "//" and "/" inside a relative path are not one), up to a space, quote or ":,;)]"
ABSOLUTE_PATH = re.compile(r"(?:(?<=^)|(?<=[\s'\"(\[=,]))/[^\s'\"(),;:\[\]]*")


def shown(value: Any, root: Path | None = None) -> Any:
    """`value` (JSON-ready: dicts, lists, strings...) with every string's paths made safe
    to show: under `root` relative to it, any other absolute path by its last name."""
    if isinstance(value, dict):
        return {k: shown(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [shown(v, root) for v in value]
    if isinstance(value, str):
        return shown_text(value, root)
    return value


def shown_text(text: str, root: Path | None = None) -> str:
    if "/" not in text:
        return text
    prefixes = []
    if root is not None:
        prefixes = sorted({str(root), str(Path(root).resolve())}, key=len, reverse=True)

    def replace(match: re.Match) -> str:
        path = match.group(0)
        for prefix in prefixes:
            if path == prefix:
                return "."
            if path.startswith(prefix + "/"):
                return path[len(prefix) + 1 :]
        return Path(path).name or path

    return ABSOLUTE_PATH.sub(replace, text)
