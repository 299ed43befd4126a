"""`make demo`'s order of events, with Label Studio, the backend and the first round faked:
the URL and login come first, the first model trains behind them (it never holds the
demo up) once the sample project's links are ready, and the commands it prints find the
demo's state folder."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from backend import demo, demo_links
from backend.service.serving_process import ServeError, settled
from labeling.project import load_project
from labeling.state import ProjectState


class FakeClient:
    def __init__(self, url: str, token: str, events: list[str]):
        self.events = events

    def ensure_project(self, title, config, description=""):
        return SimpleNamespace(id=7, title=title, created=True)

    def import_project_posts(self, project_id, project):
        self.events.append("import")
        return SimpleNamespace(imported=len(project.posts()), skipped=0)

    def connect_backend(self, project_id, url, title, basic_auth=None):
        self.events.append("connect")
        FakeService.connected = url

    def tasks(self, project_id):
        return []


class FakeProcess:
    returncode = 0

    def poll(self):
        return None


class FakeService:
    """The demo's `ServedProcess`: what it was made with, and its /health once started."""

    events: list[str] = []
    made: list[tuple] = []
    reply: dict = {"model_loaded": False}
    fails: str | None = None
    connected: str | None = None

    def __init__(self, project, state, log, **options):
        self.made.append((project, state, log, options))
        self.process, self.log = FakeProcess(), log
        self.url = f"http://127.0.0.1:{options['port']}"

    def start(self):
        if self.fails:
            raise ServeError(self.fails)
        self.events.append("backend up")
        return self

    def health(self):
        return self.reply

    def stop(self):
        self.events.append("backend stopped")


class FakeRound:
    def __init__(self, events: list[str]):
        self.events = events

    def finished(self) -> bool:
        return True

    def report(self, state, since_start: float) -> None:
        self.events.append("first round finished")

    def stop(self) -> None:
        self.events.append("first round stopped")


@pytest.fixture
def faked(monkeypatch, capsys):
    events: list[str] = []
    monkeypatch.setattr(demo, "studio_status", lambda settings: {"running": True})
    monkeypatch.setattr(demo, "start", lambda settings: events.append("studio up"))
    monkeypatch.setattr(demo, "StudioClient", lambda url, token: FakeClient(url, token, events))
    monkeypatch.setattr(demo, "health_at", lambda url: None)  # nothing on the port yet
    monkeypatch.setattr(FakeService, "events", events)
    monkeypatch.setattr(FakeService, "made", [])
    monkeypatch.setattr(FakeService, "connected", None)
    monkeypatch.setattr(demo, "ServedProcess", FakeService)
    monkeypatch.setattr(demo, "wait_predictions", lambda *a: events.append("predictions"))
    ready = {"enabled": True, "ready": True, "loading": False, "embedding": None, "error": None}
    monkeypatch.setattr(demo_links, "linking_state", lambda url: ready)

    def first_round(project, state_root, threads):
        events.append(f"first round started ({threads} threads)")
        return FakeRound(events)

    monkeypatch.setattr(demo.FirstRound, "start", staticmethod(first_round))
    return events


def test_the_url_comes_first_and_the_first_model_trains_behind_it(faked, tmp_path, capsys):
    code = demo.main(
        ["--state-dir", str(tmp_path), "--no-wait", "--wait-model", "--train-threads", "1"]
        + ["--backend-port", "9191"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert out.index("login:") < out.index("training one on the gold posts in the background")
    assert faked.index("studio up") < faked.index("import") < faked.index("backend up")
    assert faked.index("backend up") < faked.index("connect")
    # the backend: on the port asked for, its log in the state folder, and connected only
    # once its model has loaded (or failed to): Label Studio's /setup must not time out
    [(folder, state, log, options)] = FakeService.made
    project = load_project("projects/linkedin-skills")
    assert (folder, state) == (project.folder, tmp_path.resolve())
    assert log == ProjectState.of(project, tmp_path.resolve()).backend_log
    assert options["port"] == 9191 and options["ready"] is settled
    assert options["env"]["LABEL_STUDIO_URL"].startswith("http://")
    assert "  backend up on http://127.0.0.1:9191: model ?" in out
    assert FakeService.connected == "http://127.0.0.1:9191"
    assert faked.index("connect") < faked.index("first round started (1 threads)")
    assert faked[-3:] == ["first round finished", "predictions", "backend stopped"]
    # the printed commands look where the demo's state is, and run from the checkout
    assert f".venv/bin/skillloop status --project linkedin-skills --state-dir {tmp_path}" in out
    assert "gold posts, shown as completed ground-truth annotations" in out


def test_a_serving_model_is_published_and_no_round_starts(faked, tmp_path, monkeypatch, capsys):
    serving = SimpleNamespace(version="v0002", heldout_f1=0.6168421052631579)
    monkeypatch.setattr(
        demo.ProjectState, "registry", lambda self: SimpleNamespace(serving=lambda: serving)
    )
    monkeypatch.setattr(FakeService, "reply", {"model_loaded": True, "model_version": "v0002"})
    assert demo.main(["--state-dir", str(tmp_path), "--no-wait"]) == 0
    out = capsys.readouterr().out
    assert "serving model v0002 (held-out F1 0.617)" in out  # rounded where printed
    assert faked.index("connect") < faked.index("predictions")  # the backend publishes it
    assert not any(event.startswith("first round") for event in faked)


def test_a_backend_that_does_not_start_is_one_line_and_exit_2(faked, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(FakeService, "fails", "the service exited (code 1): Traceback:\n  boom")
    assert demo.main(["--state-dir", str(tmp_path), "--no-wait"]) == 2
    err = capsys.readouterr().err
    log = ProjectState.of(load_project("projects/linkedin-skills"), tmp_path).backend_log
    assert err == f"skillloop demo: error: the backend exited (code 1); log: {log}\n"
    assert "connect" not in faked and faked[-1] == "backend stopped"


def test_the_backend_is_skillloop_serve_told_about_label_studio(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    settings = SimpleNamespace(url="http://127.0.0.1:8081", token="t0ken")
    backend = demo.served_backend(Path("projects/linkedin-skills"), tmp_path, 9191, settings)
    backend.port = 9191
    command = backend.command()
    assert command[command.index("serve") :] == [
        *("serve", "--project", "projects/linkedin-skills"),
        *("--state-dir", str(tmp_path), "--port", "9191"),
    ]  # no --threads: the service's own default, as before
    env = backend.environment()
    assert env["LABEL_STUDIO_URL"] == settings.url and env["LABEL_STUDIO_API_KEY"] == "t0ken"
    assert env["HF_HUB_OFFLINE"] == "1"  # no model hub


def test_f1_for_people():
    assert demo.f1(0.58139534) == "0.581" and demo.f1(None) == "n/a"


def test_commands_leave_out_the_default_state_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("SKILLLOOP_STATE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    commands = demo.Commands("linkedin-skills", Path("state").resolve())
    assert commands.status == ".venv/bin/skillloop status --project linkedin-skills"


def linking_states(monkeypatch, events: list[str], states: list[dict]) -> None:
    """/status's linking object answers `states` in turn (the last one from then on)."""
    answers = iter(states)

    def linking_state(url):
        state = next(answers, states[-1])
        events.append("links ready" if state.get("ready") else "links asked")
        return state

    monkeypatch.setattr(demo_links, "linking_state", linking_state)
    monkeypatch.setattr(demo_links, "POLL_S", 0.0)
    monkeypatch.setattr(demo_links, "PROGRESS_EVERY_S", 0.0)


def test_the_first_model_trains_once_links_are_ready_and_the_demo_says_so(
    faked, tmp_path, monkeypatch, capsys
):
    embedding = {"done": 24064, "total": 96135, "seconds": 41, "seconds_left": 130}
    loading = {"enabled": True, "ready": False, "loading": True, "embedding": embedding}
    ready = {"enabled": True, "ready": True, "loading": False, "embedding": None}
    linking_states(monkeypatch, faked, [loading, loading, ready])
    assert demo.main(["--state-dir", str(tmp_path), "--no-wait", "--wait-model"]) == 0
    out = capsys.readouterr().out
    assert "links: each span is linked to esco" in out  # the sample project links to ESCO
    assert "one trains on the gold posts once links are ready" in out
    assert "links: embedding esco's labels: 24,064 of 96,135 (25%), about 2 min left" in out
    assert out.index("embedding esco's labels") < out.index("== links ready after")
    assert out.index("== links ready after") < out.index("training one on the gold posts")
    assert faked.index("links ready") < faked.index("first round started (1 threads)")
    assert faked.count("links ready") == 1  # asked no more once ready


def test_a_linker_that_fails_does_not_hold_the_first_model_up(faked, tmp_path, monkeypatch, capsys):
    failed = {"enabled": True, "ready": False, "loading": False, "error": "OSError: disk full"}
    linking_states(monkeypatch, faked, [failed])
    assert demo.main(["--state-dir", str(tmp_path), "--no-wait", "--wait-model"]) == 0
    out = capsys.readouterr().out
    assert "== no links: OSError: disk full (see the backend log)" in out
    assert "first round started (1 threads)" in faked


def test_progress_line():
    assert demo_links.progress_line(None, "esco") == "loading the esco linker"
    done = {"done": 100, "total": 400, "seconds_left": 20}
    assert demo_links.progress_line(done, "esco") == (
        "embedding esco's labels: 100 of 400 (25%), about 1 min left"
    )
