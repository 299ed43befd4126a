"""The `skillloop` command as a data lead runs it: the installed entry point, from a
folder outside the checkout, with wrong folders, wrong arguments and closed pipes. Every
mistake is one line on stderr and exit code 2, never a traceback; a folder that holds no
state of the project is refused, not reported as an empty project."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from test_report import three_rounds

from labeling.state import ProjectState
from labeling.store import AnnotationRecord

NAME = "linkedin-skills"
ENTRY_POINT = Path(sys.executable).with_name("skillloop")


def skillloop(
    cwd: Path, *argv: str, env: dict | None = None, **popen
) -> subprocess.CompletedProcess:
    """The installed `skillloop` script, run in `cwd` with this test run's PYTHONPATH (so
    the code under test runs) and none of the SKILLLOOP_* settings of the caller."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SKILLLOOP_")}
    return subprocess.run(
        [str(ENTRY_POINT), *argv],
        cwd=cwd,
        env={**clean, **(env or {})},
        text=True,
        timeout=120,
        **({"capture_output": True} | popen),
    )


def one_line_error(done: subprocess.CompletedProcess) -> str:
    """The error line of a refused command, after checking that it is the only output."""
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("skillloop: error: "), done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert not done.stdout
    return done.stderr.strip()


def real_state(base: Path, annotations: int = 0, rounds: bool = False) -> Path:
    """A project state as the service makes it (its folder and annotation store), with
    some annotations and three recorded rounds when asked."""
    state = ProjectState(base / NAME)
    state.root.mkdir(parents=True)
    with state.store() as store:
        for aid in range(1, annotations + 1):
            text = f"Post {aid}: Python and Airflow."
            store.annotations.upsert(
                AnnotationRecord(aid, aid, "1", text, [], annotator="ann@example.com")
            )
    if rounds:
        three_rounds(state.models)
    return base


@pytest.fixture
def elsewhere(tmp_path) -> Path:
    """A working directory outside the checkout, with no ./state."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    return folder


READ_ONLY = [
    ["status"],
    ["rounds"],
    ["rounds", "--json"],
    ["report"],
    ["select"],
    ["rollback", "v0001"],
    ["export", "--format", "jsonl", "--out", "out"],
    ["export", "--format", "jsonl", "--out", "out", "--include-gold"],
    ["quality", "--model", "none"],
    ["link-versions"],
    ["link-rollback", "v0001"],
]


@pytest.mark.parametrize("command", READ_ONLY, ids=" ".join)
def test_a_working_directory_without_state_is_refused_naming_where_it_looked(elsewhere, command):
    message = one_line_error(skillloop(elsewhere, *command, "--project", NAME))
    assert f"no state of project {NAME} in {elsewhere / 'state' / NAME}" in message
    assert "./state of the working directory" in message and "annotations.sqlite" in message
    assert not (elsewhere / "state").exists() and not (elsewhere / "out").exists()


def test_the_gold_file_alone_is_exported_without_any_state(elsewhere):
    argv = ["export", "--project", NAME, "--format", "jsonl", "--out", "gold", "--gold-only"]
    done = skillloop(elsewhere, *argv)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("36 posts") and "from 0 annotations" in done.stdout
    assert (
        f"the gold file of project {NAME} (36 posts)" in (elsewhere / "gold/README.md").read_text()
    )
    assert not (elsewhere / "state").exists()


def test_a_folder_that_does_not_exist_is_refused(elsewhere, tmp_path):
    missing = tmp_path / "no-such-folder"
    for command in (["status"], ["rounds"]):
        done = skillloop(elsewhere, *command, "--project", NAME, "--state-dir", str(missing))
        assert f"in {missing / NAME} (state base from --state-dir" in one_line_error(done)
    done = skillloop(
        elsewhere, "status", "--project", NAME, env={"SKILLLOOP_STATE_DIR": str(missing)}
    )
    assert "state base from $SKILLLOOP_STATE_DIR" in one_line_error(done)


def test_the_projects_own_folder_as_state_dir_suggests_its_parent(elsewhere, tmp_path):
    base = real_state(tmp_path / "state", annotations=2)
    for command in (["status"], ["rounds"]):
        done = skillloop(elsewhere, *command, "--project", NAME, "--state-dir", str(base / NAME))
        message = one_line_error(done)
        assert f"in {base / NAME / NAME}" in message
        assert message.endswith(f"did you mean --state-dir {base}?")


def test_a_folder_above_the_state_base_suggests_the_base_inside_it(elsewhere, tmp_path):
    base = real_state(tmp_path / "demo" / "state", annotations=1)
    done = skillloop(elsewhere, "status", "--project", NAME, "--state-dir", str(tmp_path / "demo"))
    assert one_line_error(done).endswith(f"did you mean --state-dir {base}?")


def test_status_says_where_the_state_it_read_lives(elsewhere, tmp_path):
    base = real_state(tmp_path / "state", annotations=3, rounds=True)
    done = skillloop(elsewhere, "status", "--project", NAME, "--state-dir", str(base))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"project {NAME} (state: {base / NAME})\n")
    assert "annotations: 3 on 3 posts" in done.stdout
    done = skillloop(
        elsewhere, "status", "--project", NAME, "--json", env={"SKILLLOOP_STATE_DIR": str(base)}
    )
    figures = json.loads(done.stdout)
    assert figures["state"] == str(base / NAME)
    assert figures["store"] == str(base / NAME / "annotations.sqlite")


def test_a_state_just_made_by_the_service_is_an_empty_project_not_an_error(elsewhere, tmp_path):
    base = real_state(tmp_path / "state")  # the folder and its store, nothing in it yet
    status = skillloop(elsewhere, "status", "--project", NAME, "--state-dir", str(base))
    assert status.returncode == 0, status.stderr
    assert "annotations: 0" in status.stdout and "no trained version yet" in status.stdout
    rounds = skillloop(elsewhere, "rounds", "--project", NAME, "--state-dir", str(base))
    assert (rounds.returncode, rounds.stdout) == (0, f"project {NAME}: no rounds yet\n")
    out = tmp_path / "gold-only"
    export = skillloop(
        elsewhere, "export", "--project", NAME, "--state-dir", str(base),
        "--format", "jsonl", "--out", str(out), "--include-gold",
    )  # fmt: skip
    assert export.returncode == 0, export.stderr
    assert (out / "README.md").is_file()


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["report", "--out", "a-folder"], "--out a-folder is a folder"),
        (["report", "--out", "a-file/report.html"], "file exists: a-file"),
        (["quality", "--model", "none", "--json", "a-folder"], "is a directory: a-folder"),
        (["quality", "--model", "none", "--json", "a-file/q.json"], "file exists: a-file"),
        (["export", "--format", "jsonl", "--out", "a-file"], "a-file"),
    ],
)
def test_an_output_path_that_cannot_be_written_is_one_line(elsewhere, tmp_path, argv, shown):
    base = real_state(tmp_path / "state", annotations=2, rounds=True)
    (elsewhere / "a-folder").mkdir()
    (elsewhere / "a-file").write_text("mine\n")
    done = skillloop(elsewhere, *argv, "--project", NAME, "--state-dir", str(base))
    assert shown in one_line_error(done)
    assert (elsewhere / "a-file").read_text() == "mine\n"
    assert not any((elsewhere / "a-folder").iterdir())
    assert sorted(p.name for p in elsewhere.iterdir()) == ["a-file", "a-folder"]  # no PNGs


def test_unreadable_input_is_one_line(elsewhere):
    (elsewhere / "export.json").mkdir()  # a folder where a file was expected
    (elsewhere / "binary.json").write_bytes(b"\xff\xfe\x00garbage")
    argv = ["export", "--project", NAME, "--format", "jsonl", "--out", "o", "--from-studio-export"]
    for name in ("export.json", "binary.json", "missing.json"):
        assert name in one_line_error(skillloop(elsewhere, *argv, name))
    assert not (elsewhere / "o").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["status", "--project", NAME, "--bogus"], "unrecognized arguments: --bogus"),
        (["rounds", "--project"], "expected one argument"),
        (["rollback", "--project", NAME], "the following arguments are required: version"),
        (["select", "--project", NAME, "-n", "many"], "invalid int value"),
        ([], "the following arguments are required: COMMAND"),
        (["no-such-command"], "invalid choice"),
    ],
)
def test_bad_arguments_are_one_line(elsewhere, argv, message):
    error = one_line_error(skillloop(elsewhere, *argv))
    assert message in error and "--help" in error


def test_rounds_json_into_a_closed_pipe_is_one_line(elsewhere, tmp_path):
    """`skillloop rounds --json | head -0`: the reader is gone before anything is written
    (closed first, so the write fails every time, not only when the reader wins a race)."""
    base = real_state(tmp_path / "state", rounds=True)
    reader, writer = os.pipe()
    os.close(reader)
    try:
        done = skillloop(
            elsewhere, "rounds", "--project", NAME, "--state-dir", str(base), "--json",
            stdout=writer, stderr=subprocess.PIPE, capture_output=False,
        )  # fmt: skip
    finally:
        os.close(writer)
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        "skillloop: error: the output was closed before everything was written (broken pipe)\n"
    )


def test_a_bug_still_shows_its_traceback(monkeypatch):
    """Only user mistakes become one line: an unexpected exception is not swallowed."""
    import backend.cli.rounds
    from backend.cli import main

    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setattr(backend.cli.rounds, "rounds_command", broken)
    with pytest.raises(KeyError, match="a bug"):
        main(["rounds", "--project", NAME])


class FakeStudioUsers(BaseHTTPRequestHandler):
    """Label Studio's GET /api/users/ for one organization (what 1.23.2 answers: id, e-mail
    and names per user); every other path is a 404."""

    def do_GET(self):  # (http.server's name)
        users = [{"id": 1, "email": "admin@example.com", "first_name": "", "last_name": ""}]
        found = self.path == "/api/users/"
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps(users if found else {}).encode())

    def log_message(self, *args):
        pass


def test_status_names_annotators_by_e_mail(elsewhere, tmp_path):
    """Label Studio 1.23.2's webhooks carry `completed_by` as the user id alone, so the
    store holds "1"; status asks Label Studio for the e-mail when it knows where it is."""
    base = real_state(tmp_path / "state", annotations=1)  # one stored with its e-mail
    with ProjectState(base / NAME).store() as store:
        for aid in (7, 8):  # as a real webhook leaves them: the user id
            store.annotations.upsert(
                AnnotationRecord(aid, aid, "1", f"Post {aid}: SQL.", [], annotator="1")
            )
        store.annotations.upsert(AnnotationRecord(9, 9, "1", "Post 9: Go.", [], annotator="5"))
    argv = ["status", "--project", NAME, "--state-dir", str(base)]
    offline = skillloop(elsewhere, *argv)
    assert offline.returncode == 0, offline.stderr
    assert "  Label Studio user 1: 2\n" in offline.stdout
    assert "  ann@example.com: 1\n" in offline.stdout
    assert "LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY" in offline.stdout

    server = HTTPServer(("127.0.0.1", 0), FakeStudioUsers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    studio = {
        "LABEL_STUDIO_URL": f"http://127.0.0.1:{server.server_port}",
        "LABEL_STUDIO_API_KEY": "a-legacy-token",
    }
    try:
        online = skillloop(elsewhere, *argv, "--json", env=studio)
    finally:
        server.shutdown()
        server.server_close()
    assert online.returncode == 0, online.stderr
    assert json.loads(online.stdout)["annotations"]["by_annotator"] == {
        "admin@example.com": 2,
        "ann@example.com": 1,
        "Label Studio user 5": 1,  # not a user of that Label Studio (any more)
    }
    gone = skillloop(elsewhere, *argv, env=studio)  # the server is closed now
    assert gone.returncode == 0 and "  Label Studio user 1: 2\n" in gone.stdout
    assert gone.stderr.startswith("skillloop: warning: annotators' e-mails not read: ")
    assert gone.stderr.count("\n") == 1 and "Traceback" not in gone.stderr


def test_with_a_shared_database_the_state_is_its_rows(elsewhere, tmp_path, monkeypatch):
    """Another host's CLI has no state folder: the database's rows under the project's key
    are its state, and a key with none is refused like an empty folder."""
    database = {"SKILLLOOP_DATABASE_URL": f"sqlite:///{tmp_path / 'shared.sqlite'}"}
    argv = ["status", "--project", NAME, "--state-dir", str(tmp_path / "here")]
    refused = skillloop(elsewhere, *argv, env=database)
    assert f"no state of project {NAME}" in one_line_error(refused)
    monkeypatch.setenv("SKILLLOOP_DATABASE_URL", database["SKILLLOOP_DATABASE_URL"])
    with ProjectState(tmp_path / "service-host" / NAME).store() as store:  # same key
        store.annotations.upsert(
            AnnotationRecord(1, 1, "1", "Post 1: Rust.", [], annotator="a@b.org")
        )
    done = skillloop(elsewhere, *argv, env=database)
    assert done.returncode == 0, done.stderr
    assert "annotations: 1 on 1 posts" in done.stdout and "; annotations: sqlite" in done.stdout
