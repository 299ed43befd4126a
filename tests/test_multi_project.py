"""One backend, several Label Studio projects: each is served from its own state (config,
labels, store, models), made from a project template chosen by id, title or config.

Two templates with different labeling configs: "alpha" (the linkedin-skills labels) and
"beta" (Skill/Knowledge, a `<Labels name="tags">` on a `$body` field), both on the
tiny model that tags every word as TECHNOLOGY.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from service_helpers import annotation_event, payload, predict_body, write_project

from backend.service.app import create_app
from backend.service.config import ServiceConfig
from labeling.state import ProjectState

BETA_XML = (
    '<View><Labels name="tags" toName="post"><Label value="Skill"/><Label value="Knowledge"/>'
    '</Labels><Text name="post" value="$body"/></View>'
)
ALPHA_XML = payload("setup")["schema"]  # names the checkpoint's tags: fits beta's aliases too


def write_beta(folder: Path, base: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "labeling_config.xml").write_text(BETA_XML)
    (folder / "project.toml").write_text(
        '[project]\nname = "beta"\ntitle = "Beta skills"\n\n'
        '[[labels]]\nvalue = "Skill"\n\n[[labels]]\nvalue = "Knowledge"\n\n'
        f'[model]\nbase = "{base}"\n'
        'label_map = { TECHNOLOGY = "Skill", SOFT = "Skill", TECHNICAL = "Knowledge", '
        'BUS = "Knowledge" }\nmax_tokens = 48\nstride = 8\n\n'
        "[retrain]\nevery_n_annotations = 0\n"
    )
    return folder


@pytest.fixture
def templates(tmp_path, spanful_model) -> tuple[Path, Path]:
    alpha = write_project(tmp_path / "templates/alpha", spanful_model, name="alpha")
    return alpha, write_beta(tmp_path / "templates/beta", spanful_model)


def several(tmp_path, templates, **overrides):
    config = ServiceConfig(
        project="",
        project_templates=",".join(str(t) for t in templates),
        state_dir=tmp_path / "state",
        background_load=False,
        watch_interval=0.1,
        **overrides,
    )
    app = create_app(config)
    app.testing = True
    return app


@pytest.fixture
def app(tmp_path, templates):
    app = several(tmp_path, templates, studio_projects="7=alpha")
    yield app
    app.extensions["skillloop"].close()


def setup(client, project: str, schema: str):
    return client.post("/setup", json={**payload("setup"), "project": project, "schema": schema})


def beta_predict(texts: list[str], project="9.1764079200") -> dict:
    tasks = [{"id": 300 + i, "data": {"body": text}} for i, text in enumerate(texts)]
    return {"tasks": tasks, "project": project, "label_config": BETA_XML}


def beta_annotation(annotation_id: int, text: str, start: int, end: int) -> dict:
    body = annotation_event(annotation_id, 900 + annotation_id, text, [])
    body["task"]["data"] = {"body": text}
    body["annotation"]["result"] = [
        {
            "value": {"start": start, "end": end, "text": text[start:end], "labels": ["Skill"]},
            "from_name": "tags",
            "to_name": "post",
            "type": "labels",
        }
    ]
    body["project"] = {"id": 9, "title": "anything", "label_config": BETA_XML}
    return body


def connect_both(client) -> None:
    assert setup(client, "7.1764079200", ALPHA_XML).status_code == 200  # by the id map
    assert setup(client, "9.1764079200", BETA_XML).status_code == 200  # by its labels


def test_each_project_is_predicted_with_its_own_config_and_labels(app):
    client = app.test_client()
    connect_both(client)
    alpha = client.post("/predict", json=predict_body(["python sql"])).get_json()
    beta = client.post("/predict", json=beta_predict(["python sql"])).get_json()
    (a,) = alpha["results"]
    (b,) = beta["results"]
    assert {r["value"]["labels"][0] for r in a["result"]} == {"Technology"}
    assert {(r["from_name"], r["to_name"]) for r in a["result"]} == {("label", "text")}
    assert {r["value"]["labels"][0] for r in b["result"]} == {"Skill"}
    assert {(r["from_name"], r["to_name"]) for r in b["result"]} == {("tags", "post")}
    assert [r["value"]["text"] for r in b["result"]] == ["python", "sql"]


def test_annotations_land_in_their_own_projects_store(app, tmp_path):
    client = app.test_client()
    connect_both(client)
    text = "we need python and sql"
    alpha_body = annotation_event(501, 101, text, [(8, 14, "Technology")])  # project 7
    assert client.post("/webhook", json=alpha_body).get_json()["status"] == "stored"
    assert client.post("/webhook", json=beta_annotation(601, text, 19, 22)).status_code == 200
    router = app.extensions["skillloop.projects"]
    by_id = {s.studio_id: s for s in router.all()}
    assert [r.annotation_id for r in by_id[7].store.annotations.records()] == [501]
    assert [r.annotation_id for r in by_id[9].store.annotations.records()] == [601]
    (beta_record,) = by_id[9].store.annotations.records()
    assert [(s.start, s.end, s.label) for s in beta_record.spans] == [(19, 22, "Skill")]
    # two state folders, two SQLite files, two registries: nothing shared
    state = tmp_path / "state"
    assert by_id[7].state.root == state / "studio-7" and by_id[9].state.root == state / "studio-9"
    assert ProjectState(state / "studio-9").store_path.is_file()
    assert by_id[7].registry.root != by_id[9].registry.root
    assert by_id[7].holder is not by_id[9].holder
    assert by_id[7].project.label_values != by_id[9].project.label_values
    connection = json.loads((state / "studio-9/connection.json").read_text())
    assert connection["template_name"] == "beta" and connection["created_ts"] == 1764079200


def test_deletions_and_training_reach_only_their_project(app):
    client = app.test_client()
    connect_both(client)
    client.post("/webhook", json=annotation_event(501, 101, "python", [(0, 6, "Technology")]))
    deleted = payload("annotations_deleted")  # names project 7
    deleted["project"] = {"id": 9}
    assert client.post("/webhook", json=deleted).get_json()["deleted"] == 0  # not 9's
    by_id = {s.studio_id: s for s in app.extensions["skillloop.projects"].all()}
    assert len(by_id[7].store.annotations.records()) == 1
    status = client.get("/status?project=9").get_json()
    assert status["project"] == "beta" and status["studio_project"] == 9
    assert {p["studio_project"] for p in client.get("/status").get_json()["projects"]} == {7, 9}
    health = client.get("/health").get_json()
    assert health["status"] == "UP" and len(health["projects"]) == 2
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'skillloop_model_loaded{studio_project="7"} 1' in metrics
    assert 'skillloop_model_loaded{studio_project="9"} 1' in metrics


def test_a_request_without_a_project_or_for_no_template_is_refused(app, tmp_path):
    client = app.test_client()
    body = predict_body(["python"])
    del body["project"]
    reply = client.post("/predict", json=body)
    assert reply.status_code == 400 and "several Label Studio projects" in reply.get_json()["error"]
    unknown = client.get("/versions?project=12")
    assert unknown.status_code == 404 and "12 is not connected" in unknown.get_json()["error"]
    odd = BETA_XML.replace("Skill", "Weird").replace("Knowledge", "Odd")
    refused = setup(client, "12.1764079200", odd)
    assert refused.status_code == 422
    assert "no project template chosen for Label Studio project 12" in refused.get_json()["error"]
    assert not (tmp_path / "state/studio-12").exists()
    # a settings change in a project never connected is nothing to this backend
    updated = {**payload("project_updated"), "project": {"id": 13, "title": "x"}}
    assert client.post("/webhook", json=updated).get_json()["status"] == "ignored"
    assert not (tmp_path / "state/studio-13").exists()


def test_the_id_map_names_known_templates(tmp_path, templates):
    with pytest.raises(ValueError, match=r"templates \['gamma'\]"):
        several(tmp_path, templates, studio_projects="7=gamma")


def test_a_config_both_templates_serve_needs_the_map_or_a_title(tmp_path, templates):
    app = several(tmp_path, templates)
    client = app.test_client()
    try:
        # the checkpoint-tag config fits alpha by name: chosen over beta's aliases
        assert setup(client, "3.1764079200", ALPHA_XML).status_code == 200
        # a webhook from a project titled after a template sets it up from that template
        body = beta_annotation(701, "python", 0, 6)
        body["project"] = {"id": 4, "title": "Beta skills", "label_config": BETA_XML}
        assert client.post("/webhook", json=body).get_json()["status"] == "stored"
        by_id = {s.studio_id: s for s in app.extensions["skillloop.projects"].all()}
        assert (by_id[3].project.name, by_id[4].project.name) == ("alpha", "beta")
    finally:
        app.extensions["skillloop"].close()


def test_a_restart_serves_each_project_again_and_refuses_a_reused_id(tmp_path, templates):
    first = several(tmp_path, templates, studio_projects="7=alpha")
    client = first.test_client()
    connect_both(client)
    client.post("/webhook", json=beta_annotation(601, "python sql", 0, 6))
    first.extensions["skillloop"].close()

    again = several(tmp_path, templates)  # no id map: the state remembers the template
    client = again.test_client()
    try:
        by_id = {s.studio_id: s for s in again.extensions["skillloop.projects"].all()}
        assert (by_id[7].project.name, by_id[9].project.name) == ("alpha", "beta")
        assert [r.annotation_id for r in by_id[9].store.annotations.records()] == [601]
        # the config /setup sent is remembered: a webhook without one is read with it
        body = beta_annotation(602, "python sql", 7, 10)
        body["project"] = {"id": 9}
        assert client.post("/webhook", json=body).status_code == 200
        reset = setup(client, "9.1799999999", BETA_XML)  # Label Studio reset: same id, new project
        assert reset.status_code == 409 and "reuses ids" in reset.get_json()["error"]
    finally:
        again.extensions["skillloop"].close()


def test_a_big_webhook_is_queued_in_its_own_project(app):
    client = app.test_client()
    connect_both(client)
    text = "python " * 40_000  # past the 256 KiB read in the request
    body = beta_annotation(801, text, 0, 6)
    reply = client.post("/webhook", json=body)
    assert reply.get_json()["status"] == "queued"
    by_id = {s.studio_id: s for s in app.extensions["skillloop.projects"].all()}
    assert by_id[9].inbox_reader is not None and by_id[9].inbox_reader.wait_idle(30)
    assert [r.annotation_id for r in by_id[9].store.annotations.records()] == [801]
    assert by_id[7].store.annotations.records() == []


def test_settings_name_one_mode_and_known_templates():
    with pytest.raises(ValueError, match="not both"):
        ServiceConfig(project="x", project_templates="a").validate()
    with pytest.raises(ValueError, match="ID=TEMPLATE"):
        ServiceConfig(project="", project_templates="a", studio_projects="seven").validate()
    assert ServiceConfig(project="", project_templates="a, b").templates() == ["a", "b"]


def test_each_projects_linker_and_worker_read_its_own_state(app, tmp_path):
    client = app.test_client()
    connect_both(client)
    by_id = {s.studio_id: s for s in app.extensions["skillloop.projects"].all()}
    for studio_id in (7, 9):
        services = by_id[studio_id]
        assert services.state.root == tmp_path / "state" / f"studio-{studio_id}"
        assert services.linker is not None and services.linker.project_state == services.state
        assert services.worker is None or services.worker.state == services.state


def test_commands_find_a_studio_projects_state(app, capsys):
    from backend.cli import main

    client = app.test_client()
    connect_both(client)
    client.post("/webhook", json=beta_annotation(601, "python sql", 0, 6))
    state = str(app.extensions["skillloop.projects"].config.state_dir)
    assert main(["status", "--studio-project", "9", "--state-dir", state, "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["project"] == "beta" and figures["annotations"]["total"] == 1
    assert main(["rounds", "--studio-project", "12", "--state-dir", state]) == 2
    assert "Label Studio project 12 has no state" in capsys.readouterr().err


# --- end to end: two real Label Studio projects, one backend ------------------------------
POSTS = ["we need python and sql", "docker and kubernetes for the team", "java or scala"]


@pytest.mark.studio
@pytest.mark.slow
def test_two_label_studio_projects_on_one_backend(studio, templates, tmp_path):
    """Project "alpha" (chosen by its title) and a second project chosen by its config
    (titled after no template), connected to ONE backend: each gets predictions with its
    own labels and tags, and each one's annotations land in its own state."""
    from studio_helpers import serve_backend, wait_for

    from labeling.store import Store
    from labeling.studio.client import StudioClient
    from training.text import Document

    alpha_xml = (templates[0] / "labeling_config.xml").read_text()
    beta_xml = BETA_XML.replace("$body", "$text")  # the same tasks; other tags and labels
    (templates[1] / "labeling_config.xml").write_text(beta_xml)
    client = StudioClient(studio.url, studio.token)
    a = client.ensure_project("alpha", alpha_xml).id
    b = client.ensure_project("second project", beta_xml).id
    docs = [Document(text=t, id=f"p{i}") for i, t in enumerate(POSTS)]
    for project_id in (a, b):
        client.import_documents(project_id, docs)
    state = tmp_path / "state"
    with serve_backend(None, state, studio, templates=list(templates)) as url:
        for project_id in (a, b):
            client.connect_backend(project_id, url, "skillloop")  # /health, /setup
            client.refresh_predictions(project_id)
        expected = {a: ("Technology", "label", "text"), b: ("Skill", "tags", "post")}
        for project_id, (label, from_name, to_name) in expected.items():

            def predicted(project_id=project_id):
                tasks = client.tasks(project_id)
                return tasks if all(t["predictions"] for t in tasks) else None

            tasks = wait_for(f"predictions in project {project_id}", predicted, 120, every=2)
            regions = [r for t in tasks for p in t["predictions"] for r in p["result"]]
            assert len(regions) >= len(POSTS)  # the tiny model tags every word
            assert {r["value"]["labels"][0] for r in regions} == {label}
            assert {(r["from_name"], r["to_name"]) for r in regions} == {(from_name, to_name)}
            text = tasks[0]["data"]["text"]
            end = text.index(" ")
            client.annotate(
                tasks[0]["id"],
                [
                    {
                        "from_name": from_name,
                        "to_name": to_name,
                        "type": "labels",
                        "value": {"start": 0, "end": end, "text": text[:end], "labels": [label]},
                    }
                ],
            )
        for project_id, (label, _, _) in expected.items():
            store = Store(ProjectState.for_studio(project_id, state).store_path)
            try:
                records = wait_for(
                    f"project {project_id}'s annotation", store.annotations.records, 30
                )
                assert len(records) == 1
                assert [s.label for s in records[0].spans] == [label]
            finally:
                store.close()
        connections = {
            i: ProjectState.for_studio(i, state).read_connection()["template_name"] for i in (a, b)
        }
        assert connections == {a: "alpha", b: "beta"}


def test_projects_are_set_up_by_label_studio_only_and_up_to_the_limit(tmp_path, templates):
    app = several(tmp_path, templates, studio_projects="7=alpha", max_projects=1)
    client = app.test_client()
    try:
        # a /predict naming a project nobody connected sets nothing up
        reply = client.post("/predict", json=predict_body(["python"], project="8.1764079200"))
        assert reply.status_code == 404 and "not connected" in reply.get_json()["error"]
        assert not (tmp_path / "state" / "studio-8").exists()
        assert setup(client, "7.1764079200", ALPHA_XML).status_code == 200
        refused = setup(client, "9.1764079200", BETA_XML)
        assert refused.status_code == 409
        assert "SKILLLOOP_MAX_PROJECTS=1" in refused.get_json()["error"]
        assert not (tmp_path / "state" / "studio-9").exists()
        assert [s.studio_id for s in app.extensions["skillloop.projects"].all()] == [7]
    finally:
        app.extensions["skillloop"].close()
