"""`skillloop status / rounds / report / export / quality` end to end on a temp state dir,
and their user errors: exit code 2 and one line on stderr."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
from sample_project import unlinked_copy
from test_report import three_rounds

from backend.cli import main
from backend.loop.spec import RoundSpec, write_spec
from backend.loop.status_figures import changes_since_last_round
from labeling.state import ProjectState
from labeling.store import AnnotationRecord, Store
from training.registry import Registry
from training.text import Document, Span

PROJECT = str(Path(__file__).resolve().parents[1] / "projects" / "linkedin-skills")
NAME = "linkedin-skills"


@pytest.fixture(scope="module")
def unlinked(tmp_path_factory) -> str:
    """The sample project with linking off: its report and profiles would embed ESCO."""
    return str(unlinked_copy(tmp_path_factory.mktemp("sample") / NAME))


def record(aid: int, who: str, task: int | None = None, **extra) -> AnnotationRecord:
    text = f"Post {task or aid}: we use Python and Airflow daily, and value mentoring {aid % 3}."
    spans = [
        Span(text.index("Python"), text.index("Python") + 6, "Technology", "Python"),
        Span(text.index("mentoring"), text.index("mentoring") + 9, "Soft", "mentoring"),
    ]
    at = f"2026-01-01T10:{aid // 60:02d}:{aid % 60:02d}"
    return AnnotationRecord(
        aid, task or aid, "1", text, spans, annotator=who, created_at=at, updated_at=at, **extra
    )


@pytest.fixture
def state(tmp_path, monkeypatch) -> Path:
    """A state dir with 16 annotations (ids 95-110; rounds trained on ids up to 100) and
    three recorded rounds."""
    monkeypatch.delenv("SKILLLOOP_PROJECT", raising=False)
    monkeypatch.delenv("SKILLLOOP_STATE_DIR", raising=False)
    folder = tmp_path / "state" / NAME
    folder.mkdir(parents=True)
    store = Store(folder / "annotations.sqlite")
    for aid in range(95, 111):
        store.annotations.upsert(record(aid, "ann" if aid % 2 else "bob"))
    store.annotations.upsert(record(111, "cat", task=95))  # a second opinion on post 95
    store.annotations.upsert(record(112, "bob", cancelled=True))
    store.close()
    three_rounds(folder / "models")
    return tmp_path / "state"


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_status_json_and_text(state, capsys):
    code, out, _ = run(capsys, "status", "--project", PROJECT, "--state-dir", str(state), "--json")
    assert code == 0
    figures = json.loads(out)
    a = figures["annotations"]
    assert (a["total"], a["posts"], a["skipped"]) == (17, 16, 1)
    assert a["new_since_last_round"] == 11  # ids 101-111 are in no snapshot
    assert a["by_annotator"] == {"ann": 8, "bob": 8, "cat": 1}
    assert figures["serving"]["version"] == "v0002"
    assert figures["serving"]["per_label_f1"]["Technical"] == 0.45
    assert figures["rounds"] == {
        "run": 3,
        "promoted": 2,
        "refused": 1,
        "failed": 0,
        "skipped": 0,
        "interrupted": 0,
        "last": "v0003",
    }
    gate = figures["gate"]
    assert gate == {**gate, "version": "v0003", "status": "refused", "low": -0.031}
    assert figures["training"]["running"] is False
    code, out, _ = run(capsys, "status", "--project", PROJECT, "--state-dir", str(state))
    assert code == 0 and "serving: v0002 held-out F1 0.520" in out
    assert "rounds: 3 run, 2 promoted, 1 refused, 0 failed" in out
    assert "last gate: v0003 refused, gain [80% interval] -0.005 [-0.031, +0.018] on 40" in out
    assert "training: idle, queue unknown" in out


def test_status_sees_a_round_in_progress_and_changes_since_the_snapshot(state, capsys):
    folder = state / NAME
    (folder / "rounds.jsonl").write_text(json.dumps({"round_id": "r1", "status": "failed"}) + "\n")
    for round_id, pid in (("r1", os.getpid()), ("r2", os.getpid())):
        (folder / "rounds" / round_id).mkdir(parents=True)
        round_folder = folder / "rounds" / round_id
        write_spec(RoundSpec(round_folder, None, ["Tech"], round_folder / "out", parent_pid=pid))
    (folder / "rounds" / "r2" / "progress.json").write_text(
        json.dumps({"phase": "training", "progress": 0.4})
    )
    code, out, _ = run(capsys, "status", "--project", PROJECT, "--state-dir", str(state))
    assert code == 0 and "training: running 40% (training)" in out
    assert "rounds: 4 run" not in out and "1 failed" in out
    # the latest snapshot saw 15 changes: the 3 stored after it are new since the round
    latest = SimpleNamespace(snapshot={"change_counter": 15})
    assert changes_since_last_round(ProjectState(folder), [latest]) == 3


def test_status_asks_a_running_service(state, capsys):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # (http.server's name)
            body = json.dumps({"running": True, "progress": 0.25, "queued": True}).encode()
            self.send_response(200 if self.path == "/status" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        code, out, _ = run(
            capsys, "status", "--project", PROJECT, "--state-dir", str(state), "--url", url
        )
    finally:
        server.shutdown()
        server.server_close()
    assert code == 0
    assert "training: running 25%, queue 1" in out
    code, _, err = run(
        capsys, "status", "--project", PROJECT, "--state-dir", str(state), "--url", url
    )
    assert code == 2 and err.startswith("skillloop: error: cannot read")
    assert err.count("\n") == 1


def test_rounds_and_report(state, capsys, tmp_path, unlinked):
    code, out, _ = run(capsys, "rounds", "--project", unlinked, "--state-dir", str(state))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["version", "parent", "annotations", "snapshot"]
    assert "refused" in lines[3] and "tolerance" in lines[3]
    code, out, _ = run(capsys, "rounds", "--project", unlinked, "--state-dir", str(state), "--json")
    assert [r["status"] for r in json.loads(out)] == ["retired", "serving", "refused"]
    code, out, _ = run(
        capsys, "report", "--project", unlinked, "--state-dir", str(state), "--format", "md"
    )
    report = Path(out.strip())
    assert code == 0 and report == state / NAME / "reports" / "report.md"
    assert "## Stopping hint" in report.read_text()
    assert (report.parent / "report-learning-curve.png").is_file()


def test_export_from_store_and_from_studio_file(state, capsys, tmp_path):
    out_dir = tmp_path / "dataset"
    code, out, _ = run(
        capsys,
        "export",
        "--project",
        PROJECT,
        "--state-dir",
        str(state),
        "--format",
        "jsonl",
        "--out",
        str(out_dir),
        "--license",
        "CC-BY-4.0",
    )
    assert code == 0 and "16 posts" in out
    assert "license: CC-BY-4.0" in (out_dir / "README.md").read_text()
    studio = tmp_path / "studio.json"
    studio.write_text(
        json.dumps(
            [
                {
                    "id": 1,
                    "data": {"text": "We want Python."},
                    "annotations": [
                        {
                            "id": 9,
                            "completed_by": 4,
                            "result": [
                                {
                                    "from_name": "label",
                                    "to_name": "text",
                                    "type": "labels",
                                    "value": {
                                        "start": 8,
                                        "end": 14,
                                        "text": "Python",
                                        "labels": ["Technology"],
                                    },
                                }
                            ],
                        }
                    ],
                }
            ]
        )
    )
    code, out, _ = run(
        capsys,
        "export",
        "--project",
        PROJECT,
        "--from-studio-export",
        str(studio),
        "--format",
        "conll",
        "--out",
        str(tmp_path / "c"),
    )
    assert code == 0 and "1 posts" in out
    assert "Python\tB-Technology" in (tmp_path / "c" / "train.conll").read_text()


def test_quality_without_a_model(state, capsys, tmp_path):
    code, out, _ = run(
        capsys,
        "quality",
        "--project",
        PROJECT,
        "--state-dir",
        str(state),
        "--model",
        "none",
        "--json",
        str(tmp_path / "q.json"),
    )
    assert code == 0
    assert "agreement on 1 posts labelled more than once" in out
    figures = json.loads((tmp_path / "q.json").read_text())
    assert figures["agreement"]["span_f1"]["overall"]["exact"] == 1.0
    assert figures["label_errors"] is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["export", "--format", "jsonl", "--out", "x"], "no project"),
        (["export", "--project", PROJECT, "--format", "pdf", "--out", "x"], "--format"),
        (["export", "--project", PROJECT, "--format", "hf"], "--out"),
        (
            ["export", "--project", PROJECT, "--format", "hf", "--out", "x", "--policy", "loud"],
            "--policy",
        ),
        (
            ["export", "--project", PROJECT, "--format", "hf", "--out", "x", "--split", "1,2"],
            "--split",
        ),
        (
            [
                "export",
                "--project",
                PROJECT,
                "--format",
                "hf",
                "--out",
                "x",
                "--from-studio-export",
                "missing.json",
            ],
            "not found",
        ),
        (["status", "--project", "no-such-project"], "project not found"),
        (["report", "--project", PROJECT, "--format", "pdf"], "html or md"),
        (["quality", "--project", PROJECT, "--threshold", "2"], "--threshold"),
        (["quality", "--project", PROJECT, "--model", "v0042"], "unknown model version"),
    ],
)
def test_user_errors_are_one_line_exit_2(state, capsys, monkeypatch, argv, message):
    monkeypatch.setenv("SKILLLOOP_STATE_DIR", str(state))
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith("skillloop: error: ") and message in err
    assert err.count("\n") == 1 and not out


def test_empty_state_is_reported_not_crashed(tmp_path, capsys, monkeypatch, unlinked):
    """A state the service just made (its folder and an empty store) is an empty project;
    a folder with no state at all is refused (tests/test_cli_shell.py)."""
    monkeypatch.delenv("SKILLLOOP_PROJECT", raising=False)
    empty = tmp_path / "empty"
    with ProjectState(empty / NAME).store():
        pass
    code, out, _ = run(capsys, "status", "--project", unlinked, "--state-dir", str(empty))
    assert code == 0 and "annotations: 0" in out and "no trained version yet" in out
    code, _, err = run(capsys, "status", "--project", unlinked, "--state-dir", str(tmp_path / "x"))
    assert code == 2 and "no state of project linkedin-skills" in err
    code, _, err = run(capsys, "report", "--project", unlinked, "--state-dir", str(empty))
    assert code == 2 and "no recorded rounds" in err
    code, _, err = run(
        capsys,
        "export",
        "--project",
        unlinked,
        "--state-dir",
        str(empty),
        "--format",
        "jsonl",
        "--out",
        str(tmp_path / "o"),
    )
    assert code == 2 and "nothing to export" in err
    code, out, _ = run(
        capsys,
        "export",
        "--project",
        unlinked,
        "--state-dir",
        str(empty),
        "--format",
        "jsonl",
        "--out",
        str(tmp_path / "g"),
        "--include-gold",
    )
    gold = [line for line in (Path(unlinked) / "gold.jsonl").read_text().splitlines() if line]
    assert code == 0 and out.startswith(f"{len(gold)} posts")
    assert "gold file" in (tmp_path / "g" / "README.md").read_text()
    assert not Registry(empty / NAME / "models").versions()


def test_quality_lists_label_errors_with_a_real_tagger(
    state, capsys, tmp_path, tiny_reference_model
):
    # a random tiny model is unsure of everything: a low threshold still finds disagreements
    code, out, _ = run(
        capsys,
        "quality",
        "--project",
        PROJECT,
        "--state-dir",
        str(state),
        "--model",
        str(tiny_reference_model),
        "--threshold",
        "0.05",
        "--json",
        str(tmp_path / "q.json"),
    )
    assert code == 0
    errors = json.loads((tmp_path / "q.json").read_text())["label_errors"]
    assert errors["posts_checked"] == 16 and errors["threshold"] == 0.05
    assert errors["issues"] and {i["kind"] for i in errors["issues"]} <= {"disputed", "missing"}
    assert f"likely label errors: {len(errors['issues'])} in 16 posts" in out
    code, out, _ = run(
        capsys,
        "quality",
        "--project",
        PROJECT,
        "--state-dir",
        str(state),
        "--model",
        str(tiny_reference_model),
        "--threshold",
        "1.0",
    )
    assert code == 0 and "likely label errors: 0 in 16 posts" in out


def test_quality_checks_gold_posts_the_store_does_not_hold():
    from test_quality import FakeTagger

    from backend.quality_view import quality_figures
    from labeling.project import load_project

    project = load_project(PROJECT)
    gold = project.gold()
    store_post = record(1, "ann")
    gold.append(Document(store_post.text, [], id="dup"))  # annotated in the store too
    figures = quality_figures(project, [store_post], FakeTagger({}), 0.9, gold)
    errors = figures["label_errors"]
    assert errors["posts_checked"] == len(gold)  # the store's version replaces "dup"
    ids = {issue["doc_id"] for issue in errors["issues"]}
    assert "gold-dup" not in ids and any(i.startswith("gold-") for i in ids)


def test_a_failed_export_leaves_nothing_behind(state, capsys, tmp_path, unlinked):
    out_dir = tmp_path / "exports" / "profiles"
    argv = ["export", "--project", unlinked, "--state-dir", str(state), "--out", str(out_dir)]
    code, _, err = run(capsys, *argv, "--format", "profiles")  # the project names no taxonomy
    assert code == 2 and "taxonomy" in err
    assert not (tmp_path / "exports").exists()  # no card, no export.json, no stage folder

    assert run(capsys, *argv, "--format", "conll")[0] == 0
    assert run(capsys, *argv, "--format", "profiles")[0] == 2
    assert sorted(p.name for p in out_dir.parent.iterdir()) == ["profiles"]
    assert (out_dir / "train.conll").is_file()  # the previous export stands untouched

    code, out, _ = run(capsys, *argv, "--format", "jsonl")
    assert code == 0 and out.rstrip().endswith(f"-> {out_dir}")
    assert (out_dir / "train.jsonl").is_file() and not (out_dir / "train.conll").exists()
    assert json.loads((out_dir / "export.json").read_text())["format"] == "jsonl"


def test_export_refuses_a_folder_holding_other_files(state, capsys, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    argv = ["export", "--project", PROJECT, "--state-dir", str(state), "--format", "jsonl"]
    code, _, err = run(capsys, *argv, "--out", str(notes))
    assert code == 2 and "not an export" in err
    assert [p.name for p in notes.iterdir()] == ["todo.txt"]
    code, _, err = run(capsys, *argv, "--out", str(notes / "todo.txt"))
    assert code == 2 and "is a file" in err and (notes / "todo.txt").read_text() == "mine"


def test_export_force_replaces_a_folder_holding_other_files(state, capsys, tmp_path, unlinked):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    argv = ["export", "--project", unlinked, "--state-dir", str(state), "--out", str(notes)]
    code, _, err = run(capsys, *argv, "--format", "profiles", "--force")  # fails: no taxonomy
    assert code == 2 and "taxonomy" in err
    assert [p.name for p in notes.iterdir()] == ["todo.txt"]  # a failed export: untouched
    argv = [*argv[:-2], "--format", "jsonl"]
    code, out, _ = run(capsys, *argv, "--out", str(notes), "--force")
    assert code == 0 and out.rstrip().endswith(f"-> {notes}")
    assert not (notes / "todo.txt").exists() and (notes / "export.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".notes")) == []
    code, _, err = run(capsys, *argv, "--out", str(notes / "train.jsonl"), "--force")
    assert code == 2 and "is a file" in err
