"""Unit-level checks of the Label Studio helpers that need no server (the real server is
exercised in test_studio_e2e.py)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from labeling.studio.client import POST_ID_KEY, StudioClient, post_task
from labeling.studio.server import StudioSettings, is_up, start, status, stop
from training.text import Document


def test_post_task_carries_the_text_field_the_stable_id_and_the_title():
    doc = Document("We need Python.", id="post-7", meta={"title": "Data engineer"})
    assert post_task(doc) == {
        "text": "We need Python.",
        POST_ID_KEY: "post-7",
        "title": "Data engineer",
    }
    assert post_task(Document("x", id="a"), text_key="body") == {"body": "x", POST_ID_KEY: "a"}


def test_client_needs_url_and_key():
    with pytest.raises(ValueError, match="URL and an API key"):
        StudioClient("", "token")
    with pytest.raises(ValueError, match="URL and an API key"):
        StudioClient("http://127.0.0.1:1", "")


def test_settings_from_env_and_the_server_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SKILLLOOP_STUDIO_PORT", "8999")
    monkeypatch.setenv("SKILLLOOP_STUDIO_PASSWORD", "pw-123456")
    monkeypatch.setenv("VIRTUAL_ENV", "/somewhere/.venv")
    settings = StudioSettings.from_env(tmp_path)
    assert settings.url == "http://127.0.0.1:8999"
    assert settings.data_dir == tmp_path.resolve() / "label-studio" / "data"
    env = settings.environment()
    assert env["LABEL_STUDIO_PASSWORD"] == "pw-123456"
    # a backend on 127.0.0.1 and webhooks to it are refused without these
    assert env["LABEL_STUDIO_ML_BLOCK_LOCAL_IP"] == "false"
    assert env["LABEL_STUDIO_SSRF_PROTECTION_ENABLED"] == "false"
    assert env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    assert "VIRTUAL_ENV" not in env
    assert StudioSettings.from_env(tmp_path, port=7000).port == 7000


def test_short_tokens_are_refused(tmp_path):
    settings = StudioSettings(root=tmp_path, token="abc")
    with pytest.raises(ValueError, match="at least 6"):
        settings.environment()


def test_status_and_stop_without_a_server(tmp_path):
    settings = StudioSettings(root=tmp_path, port=9)  # discard port: nothing answers
    info = status(settings)
    assert info["running"] is False and info["up"] is False and info["pid"] is None
    assert stop(settings) is False
    assert not is_up("http://127.0.0.1:9", timeout=0.5)


def test_a_stale_pid_file_is_not_trusted(tmp_path):
    # a pid that is alive but not a Label Studio (this test process) must not be killed
    settings = StudioSettings(root=tmp_path, port=9)
    tmp_path.mkdir(exist_ok=True)
    settings.pid_file.write_text(f"{os.getpid()}\n")
    assert status(settings)["running"] is False
    assert stop(settings) is False
    assert not settings.pid_file.exists()


def test_start_without_label_studio_installed_says_how_to_install(tmp_path):
    settings = StudioSettings(root=tmp_path, venv=tmp_path / "no-venv")
    with pytest.raises(FileNotFoundError, match="make studio-install"):
        start(settings)


def test_cli_registers_studio_and_project_commands():
    from backend.cli import studio as commands_studio

    parser = argparse.ArgumentParser()
    commands_studio.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "project",
            "connect",
            "--project",
            "projects/linkedin-skills",
            "--backend-url",
            "http://127.0.0.1:9191",
        ]
    )
    assert args.backend_url == "http://127.0.0.1:9191" and callable(args.func)
    args = parser.parse_args(["studio", "status", "--port", "8123"])
    assert args.port == 8123


def test_cli_reports_a_missing_label_studio_as_a_user_error(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "backend.cli",
            "project",
            "create",
            "--project",
            "projects/linkedin-skills",
            "--url",
            "http://127.0.0.1:9",
            "--api-key",
            "whatever",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Label Studio does not answer at http://127.0.0.1:9" in result.stderr
