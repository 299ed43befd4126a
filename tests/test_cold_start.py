"""Cold start: /predict pre-annotates with the taxonomy dictionary until the first model,
and `skillloop bootstrap` registers a first model trained on dictionary-labelled posts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from service_helpers import LABELS, predict_body, write_project

from backend.loop.cold_start import bootstrap
from labeling.project import load_project
from labeling.state import ProjectState
from training.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
TAXONOMY_CSV = """id,preferred_label,alt_labels,type,description
py,python,python programming,tool,
ml,machine learning,ml,method,
talk,communication,communication skills,soft,
"""
LINKING = (
    '\n[linking]\ntaxonomy = "skills.csv"\n'
    'types = { tool = "Technology", method = "Technical", soft = "Soft" }\n'
)
POSTS = [
    "we need python and machine learning",
    "communication skills and python",
    "a data engineer with spark",
    "machine learning in the cloud",
    "python or java for the team",
    "senior analyst with communication skills",
]


def with_dictionary(folder: Path) -> Path:
    (folder / "skills.csv").write_text(TAXONOMY_CSV, encoding="utf-8")
    with open(folder / "project.toml", "a", encoding="utf-8") as handle:
        handle.write(LINKING + '\n[data]\nposts = "posts.jsonl"\n')
    rows = [json.dumps({"id": str(i), "text": text}) for i, text in enumerate(POSTS)]
    (folder / "posts.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def test_predict_serves_dictionary_matches_until_the_first_model(
    tmp_path, tiny_encoder, spanful_model
):
    with_dictionary(write_project(tmp_path / "project", tiny_encoder))  # no head: no model
    app = make_dictionary_app(tmp_path)
    services = app.extensions["skillloop"]
    try:
        client = app.test_client()
        health = client.get("/health").get_json()
        assert health["model_loaded"] is False and health["model_version"] == "dictionary-skills"
        reply = client.post(
            "/predict", json=predict_body(["we need Python and machine learning", "zzz"])
        ).get_json()
        first, second = reply["results"]
        assert first["model_version"] == "dictionary-skills"
        regions = [(r["value"]["text"], r["value"]["labels"], r["score"]) for r in first["result"]]
        assert regions == [
            ("Python", ["Technology"], 0.5),
            ("machine learning", ["Technical"], 0.5),
        ]
        assert second["result"] == [] and "score" in second

        # once a model is promoted, it takes over
        registry = Registry(services.state.models)
        shutil.copytree(spanful_model, registry.root / ".incoming" / "a")
        version = registry.add(registry.root / ".incoming" / "a", labels=LABELS)
        registry.promote(version.version, "test")
        services.holder.promoted(registry.get(version.version))
        reply = client.post("/predict", json=predict_body(["python"])).get_json()
        assert reply["results"][0]["model_version"] == version.version
        # the dictionary's task scores are low (lower is served first): a model's surer
        # predictions rank after the dictionary-annotated tasks
        assert first["score"] < reply["results"][0]["score"]
        assert client.get("/health").get_json()["model_loaded"] is True
    finally:
        services.close()


def make_dictionary_app(folder: Path):
    from backend.service.app import create_app
    from backend.service.config import ServiceConfig

    config = ServiceConfig(
        project=str(folder / "project"),
        state_dir=folder / "state",
        background_load=False,
        watch_interval=0.1,
    )
    app = create_app(config)
    app.testing = True
    return app


def test_bootstrap_registers_a_first_version_trained_on_dictionary_labels(tmp_path, tiny_encoder):
    project = load_project(with_dictionary(write_project(tmp_path / "project", tiny_encoder)))
    state = ProjectState.of(project, tmp_path / "state")
    state_dir = state.root
    started = time.time()
    outcome, version = bootstrap(project, state)
    assert time.time() - started < 300
    assert outcome.status == "promoted" and outcome.trigger == "bootstrap"
    assert version is not None and version.trigger == "bootstrap"
    registry = Registry(state_dir / "models")
    serving = registry.serving()
    assert serving is not None and serving.version == version.version
    snapshot = serving.snapshot
    assert snapshot["documents"] + snapshot["heldout_documents"] == len(POSTS)
    assert snapshot["dictionary_documents"] == snapshot["documents"]
    rounds = [json.loads(line) for line in (state_dir / "rounds.jsonl").read_text().splitlines()]
    assert [r["trigger"] for r in rounds] == ["bootstrap"]
    # a second bootstrap would replace a model people may have improved: refused
    try:
        bootstrap(project, state)
    except ValueError as err:
        assert "already serves" in str(err)
    else:
        raise AssertionError("a second bootstrap was not refused")


def test_bootstrap_without_a_dictionary_is_a_clear_error(tmp_path, tiny_encoder):
    folder = write_project(tmp_path / "project", tiny_encoder)
    result = subprocess.run(
        [sys.executable, "-m", "backend.cli", "bootstrap", "--project", str(folder)]
        + ["--state-dir", str(tmp_path / "state")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 2
    assert "sets no dictionary" in result.stderr and "Traceback" not in result.stderr
