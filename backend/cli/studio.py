"""`skillloop studio start|stop|status` (a local Label Studio) and
`skillloop project create|import|connect` (a project folder in Label Studio; idempotent)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from backend.service.config import auth_from_env
from labeling.state import STATE_BASE_DEFAULT
from labeling.studio.client import StudioClient
from labeling.studio.queue import rank_tab
from labeling.studio.server import StudioSettings, is_up, start, status, stop


def register(subparsers) -> None:
    studio = subparsers.add_parser("studio", help="run a local Label Studio")
    studio_sub = studio.add_subparsers(dest="studio_command", metavar="ACTION", required=True)
    for name, handler, text in (
        ("start", _studio_start, "start it in the background (reuses a running one)"),
        ("stop", _studio_stop, "stop the one this state dir started"),
        ("status", _studio_status, "print whether it runs, its URL and data dir"),
    ):
        parser = studio_sub.add_parser(name, help=text)
        _studio_options(parser)
        parser.set_defaults(func=handler)

    project = subparsers.add_parser("project", help="set a project folder up in Label Studio")
    project_sub = project.add_subparsers(dest="project_command", metavar="ACTION", required=True)
    create = project_sub.add_parser("create", help="create (or find) the Label Studio project")
    imp = project_sub.add_parser("import", help="import the project's posts (skips known ones)")
    imp.add_argument("--file", type=Path, help="a .jsonl of posts instead of the project's own")
    connect = project_sub.add_parser("connect", help="connect the skillloop backend")
    connect.add_argument(
        "--backend-url",
        default=os.environ.get("SKILLLOOP_BACKEND_URL", "http://127.0.0.1:9090"),
        help="where `skillloop serve` answers (default %(default)s)",
    )
    connect.add_argument("--title", default="skillloop", help="the backend's name in Label Studio")
    connect.add_argument("--predict", action="store_true", help="then fetch predictions for all")
    for parser, handler in (
        (create, _project_create),
        (imp, _project_import),
        (connect, _project_connect),
    ):
        parser.add_argument("--project", required=True, help="projects/NAME or NAME")
        _studio_options(parser)
        parser.add_argument("--url", help="Label Studio URL (default: $LABEL_STUDIO_URL or local)")
        parser.add_argument(
            "--api-key",
            help="legacy token or personal access token "
            "(default: $LABEL_STUDIO_API_KEY or the local admin's)",
        )
        parser.set_defaults(func=handler)


def _studio_options(parser) -> None:
    parser.add_argument("--state-dir", type=Path, help=f"default: {STATE_BASE_DEFAULT}")
    parser.add_argument("--port", type=int, help="Label Studio port (default 8081)")


def _settings(args) -> StudioSettings:
    return StudioSettings.from_env(args.state_dir, args.port)


def _studio_start(args) -> int:
    settings = _settings(args)
    info = start(settings)
    print(f"Label Studio: {info['url']}  (login {settings.username} / {settings.password})")
    print(f"API token (legacy): {settings.token}")
    print(f"data: {info['data_dir']}  log: {info['log']}")
    return 0


def _studio_stop(args) -> int:
    print("stopped" if stop(_settings(args)) else "not running")
    return 0


def _studio_status(args) -> int:
    info = status(_settings(args))
    print(json.dumps(info, indent=2))
    return 0 if info["up"] else 1


def studio_client(args) -> StudioClient:
    """A client from --url/--api-key, else $LABEL_STUDIO_URL/_API_KEY, else the local one."""
    settings = _settings(args)
    url = args.url or os.environ.get("LABEL_STUDIO_URL") or settings.url
    key = args.api_key or os.environ.get("LABEL_STUDIO_API_KEY")
    if not key:
        if url.rstrip("/") != settings.url:
            raise ValueError(f"no API key for {url}: pass --api-key or set LABEL_STUDIO_API_KEY")
        key = settings.token
    if not is_up(url.rstrip("/")):
        raise ValueError(f"Label Studio does not answer at {url}; start it: skillloop studio start")
    return StudioClient(url, key)


def _load(args):
    from labeling.project import load_project

    return load_project(args.project)


def _ensure_project(args):
    """The project folder, a client, and its Label Studio project (created when missing)."""
    project = _load(args)
    client = studio_client(args)
    ref = client.ensure_project(project.title, project.labeling_config, project.description)
    return project, client, ref


def _project_create(args) -> int:
    _, _, ref = _ensure_project(args)
    print(f"{'created' if ref.created else 'found'} project {ref.id}: {ref.title}")
    return 0


def _project_import(args) -> int:
    project, client, ref = _ensure_project(args)
    if args.file:
        from training.datasets import read_documents

        docs = read_documents(args.file)
        result = client.import_documents(ref.id, docs, project.config.value_key)
    else:  # the project's posts, its gold posts as completed ground-truth annotations
        result = client.import_project_posts(ref.id, project)
    print(f"project {ref.id}: imported {result.imported} posts, {result.skipped} already there")
    return 0


def _project_connect(args) -> int:
    _, client, ref = _ensure_project(args)
    auth = auth_from_env()
    backend_id = client.connect_backend(ref.id, args.backend_url, args.title, basic_auth=auth)
    print(f"project {ref.id}: backend {args.backend_url} connected (ML backend {backend_id})")
    # the backend publishes its model on /setup when it has Label Studio's URL and key;
    # the tab "Label All Tasks" serves from is made first here whatever it has
    rank_tab(client, ref.id)
    if args.predict:
        client.refresh_predictions(ref.id)
        version = client.latest_prediction_version(ref.id)
        if version:
            client.set_model_version(ref.id, version, sampling=True)
        print(f"project {ref.id}: predictions fetched (model version {version or 'none'})")
    return 0
