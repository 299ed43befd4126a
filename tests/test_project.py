"""Project folders: project.toml + labeling_config.xml."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from labeling.project import load_project
from labeling.state import ProjectState

REPO = Path(__file__).resolve().parents[1]

TOML = """
[project]
name = "demo"
title = "Demo"

[[labels]]
value = "Tech"
predicted_values = ["TECHNOLOGY"]
examples = ["python", "sql"]

[[labels]]
value = "Soft"

[model]
base = "backbone"
max_tokens = 32
stride = 8

[training]
epochs = 2
batch_size = 4

[retrain]
every_n_annotations = 3
heldout_share = 0.3

[data]
posts = "posts.jsonl"
gold = "gold.jsonl"
"""


def test_committed_projects_load():
    project = load_project(REPO / "projects" / "linkedin-skills")
    assert project.name == "linkedin-skills"
    assert project.label_values == ["Technology", "Technical", "Business", "Soft"]
    assert project.config.from_name == "label" and project.model.label_map["BUS"] == "Business"
    assert project.model_base() is None  # the backbone
    config = project.train_config()
    assert (config.window, config.epochs) == (project.model.window, 5)
    assert load_project(REPO / "projects" / "skillspan").label_values == ["Skill", "Knowledge"]


def test_project_folder(tmp_path, monkeypatch):
    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / "project.toml").write_text(TOML)
    (folder / "posts.jsonl").write_text(
        json.dumps({"id": "p1", "title": "Data engineer", "text": "we need python"}) + "\n"
    )
    project = load_project(folder)
    assert '<Label value="Tech"' in project.labeling_config  # built from the labels
    assert project.config.labels[0].predicted_values == ("TECHNOLOGY",)
    assert project.retrain.every_n_annotations == 3 and project.retrain.tolerance == 0.01
    assert project.train_config(epochs=1).epochs == 1
    posts = project.posts()
    assert posts[0].id == "p1" and posts[0].meta["title"] == "Data engineer"
    assert project.gold() == []  # no gold file yet: no seed data
    (folder / "gold.jsonl").write_text(
        json.dumps(
            {
                "id": "g1",
                "text": "we need python",
                "spans": [{"start": 8, "end": 14, "label": "Tech"}],
            }
        )
        + "\n"
    )
    assert [s.key() for s in project.gold()[0].spans] == [(8, 14, "Tech")]

    monkeypatch.setenv("SKILLLOOP_STATE_DIR", str(tmp_path / "st"))
    assert ProjectState.of(project).root == tmp_path / "st" / "demo"
    assert ProjectState.of(project, tmp_path / "other").root == tmp_path / "other" / "demo"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "projects").mkdir()
    (folder).rename(tmp_path / "projects" / "demo")
    assert load_project("demo").name == "demo"  # a bare name under ./projects


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.replace('value = "Soft"', 'value = "Tech"'), "duplicate label"),
        (lambda t: t.replace("max_tokens = 32", "max_token = 32"), r"\[model\] has unknown keys"),
        (lambda t: t.replace("heldout_share = 0.3", "heldout_share = 1.5"), "heldout_share"),
        (lambda t: t.replace("[[labels]]", "[[labels]]\ncolour = 1", 1), "unknown keys"),
        (lambda t: t + "\n[oops", "invalid TOML"),
        (lambda t: t.replace("stride = 8", 'stride = 8\nlayers = [["Tech"]]'), "exactly once"),
        (lambda t: t.replace("stride = 8", 'stride = 8\nlayers = [["Tech"], []]'), "no labels"),
    ],
)
def test_invalid_projects(tmp_path, edit, message):
    (tmp_path / "project.toml").write_text(edit(TOML))
    with pytest.raises(ValueError, match=message):
        load_project(tmp_path)


def test_missing_and_mismatched(tmp_path):
    with pytest.raises(FileNotFoundError, match="project not found"):
        load_project(tmp_path / "nowhere")
    (tmp_path / "project.toml").write_text(TOML)
    (tmp_path / "labeling_config.xml").write_text(
        '<View><Labels name="label" toName="text"><Label value="Tech"/></Labels>'
        '<Text name="text" value="$text"/></View>'
    )
    with pytest.raises(ValueError, match="differ from project.toml"):
        load_project(tmp_path)
    (tmp_path / "labeling_config.xml").unlink()
    with pytest.raises(FileNotFoundError, match="posts file not found"):
        load_project(tmp_path).posts()


@pytest.mark.parametrize(
    "given",
    ["linkedin-skills", "projects/linkedin-skills", "projects/linkedin-skills/project.toml"],
)
def test_the_cli_finds_sample_projects_from_any_working_directory(tmp_path, given):
    """The README's `skillloop ... --project NAME` run from outside the checkout."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    with ProjectState(tmp_path / "st" / "linkedin-skills").store():  # as `serve` leaves it
        pass
    env = {**os.environ, "PYTHONPATH": str(REPO), "SKILLLOOP_STATE_DIR": str(tmp_path / "st")}
    done = subprocess.run(
        [sys.executable, "-m", "backend.cli", "status", "--project", given],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("project linkedin-skills")
    assert not (cwd / "state").exists()  # the state folder setting was honoured


def test_a_project_in_the_working_directory_wins_over_the_sample(tmp_path, monkeypatch):
    (tmp_path / "projects" / "linkedin-skills").mkdir(parents=True)
    (tmp_path / "projects" / "linkedin-skills" / "project.toml").write_text(TOML)
    (tmp_path / "projects" / "linkedin-skills" / "posts.jsonl").write_text("")
    monkeypatch.chdir(tmp_path)
    assert load_project("linkedin-skills").name == "demo"  # the local one, not the repo's
    with pytest.raises(FileNotFoundError, match="project not found: no-such-project"):
        load_project("no-such-project")


def test_the_project_window_reaches_its_tagger_its_training_and_the_round_spec(
    tmp_path, tiny_reference_model
):
    from backend.loop.rounds import plan_round
    from backend.loop.spec import SPEC_FILE, read_spec
    from training.tagger_spec import TaggerSpec
    from training.text import Document, Span
    from training.windows import WindowConfig

    folder = tmp_path / "demo"
    folder.mkdir()
    mapping = 'label_map = { TECHNOLOGY = "Tech", SOFT = "Soft" }'
    toml = TOML.replace('base = "backbone"', f'base = "{tiny_reference_model}"\n{mapping}')
    (folder / "project.toml").write_text(toml)
    project = load_project(folder)
    window = WindowConfig(32, 8)  # [model] max_tokens and stride
    assert project.model.window == window and project.train_config().window == window
    base = project.tagger_spec()
    labels_map = {"TECHNOLOGY": "Tech", "SOFT": "Soft"}
    assert base == TaggerSpec(str(tiny_reference_model), ["Tech", "Soft"], labels_map, window)
    assert base.load().window == window  # within the tiny model's 64 positions: as asked
    version = tmp_path / "models" / "v0001"
    assert project.tagger_spec(version) == base.at(version)
    assert base.at(version).source == str(version) and base.at(version).window == window

    texts = [f"post {n}: we need python and sql" for n in range(12)]
    docs = [Document(t, [Span(t.index("python"), t.index(" and"), "Tech")]) for t in texts]
    plan = plan_round(project, ProjectState(tmp_path / "state"), "test", documents=docs)
    spec = read_spec(plan.folder / SPEC_FILE)  # what the child process reads
    assert spec.window == window and spec.config.window == window
    assert spec.config == project.train_config()  # a TrainConfig, read back whole
    assert (spec.base, spec.label_map) == (base.source, labels_map)
    candidate = TaggerSpec(str(spec.out_dir), ["Tech", "Soft"], None, window)
    assert spec.tagger(spec.out_dir) == candidate
    raw = json.loads((plan.folder / SPEC_FILE).read_text())
    assert raw["tagger"] == {"max_tokens": 32, "stride": 8}  # spec.json as before
    assert (raw["config"]["max_tokens"], raw["config"]["stride"]) == (32, 8)
    assert raw["config"] == project.train_config().to_json()  # its flat keys, as before


def test_label_layers_reach_the_training_config(tmp_path):
    (tmp_path / "project.toml").write_text(
        TOML.replace("stride = 8", 'stride = 8\nlayers = [["Soft"], ["Tech"]]')
    )
    project = load_project(tmp_path)
    assert project.model.layers == [["Soft"], ["Tech"]]
    assert project.train_config().layers == [["Soft"], ["Tech"]]
    (tmp_path / "project.toml").write_text(
        TOML.replace("stride = 8", 'stride = 8\nlayers = [["Soft", "Tech"]]')
    )
    assert load_project(tmp_path).train_config().layers == []  # one layer: the flat tagger
