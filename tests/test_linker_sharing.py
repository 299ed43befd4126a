"""Loaded linkers shared by the projects whose linker is the same (backend/linkers.py
`linker_key`, backend/service/linker_holder.py), as loaded taggers are
(tests/test_model_cache.py): two Label Studio projects of one template load the template's
linker once and both link with it; a project whose linker differs (another folder version,
other settings, entries its annotators added) loads its own; the last project to close
unloads it."""

from __future__ import annotations

import json
import os
import shutil

from service_helpers import predict_body
from test_link_studio import linked_project
from test_multi_project import setup, several

from backend.linkers import linker_key
from backend.service.linker_holder import LinkerHolder
from backend.service.model_cache import ModelCache
from labeling.project import load_project
from labeling.state import ProjectState
from training.taxonomy import TaxonomyEntry


def test_two_projects_of_one_template_share_one_loaded_linker(
    tmp_path, spanful_model, tiny_encoder
):
    template = linked_project(tmp_path, spanful_model, tiny_encoder, name="alpha")
    xml = (template / "labeling_config.xml").read_text()
    app = several(tmp_path, [template], studio_projects="7=alpha,8=alpha")
    try:
        client, projects = app.test_client(), app.extensions["skillloop.projects"]
        for project in ("7.1764079200", "8.1764079200"):
            assert setup(client, project, xml).status_code == 200
        by_id = {s.studio_id: s for s in projects.all()}
        seven, eight = by_id[7].linker, by_id[8].linker
        assert projects.linkers.loads == 1 and len(projects.linkers) == 1
        assert seven.linker is eight.linker is not None and seven.key == eight.key
        status = client.get("/status?project=8").get_json()["linking"]
        assert status["ready"] and status["in_memory"]["loads"] == 1
        for project in ("7.1764079200", "8.1764079200"):  # both link with it
            body = {**predict_body(["python sql"], label_config=xml), "project": project}
            (result,) = client.post("/predict", json=body).get_json()["results"]
            links = {
                r["value"]["text"]: r["value"]["choices"]
                for r in result["result"]
                if r["from_name"] == "link"
            }
            assert links["python"] == ["python [py] for “python” at 0"]
        by_id[8].close()
        assert len(projects.linkers) == 1  # 7 still holds it
        by_id[7].close()
        assert len(projects.linkers) == 0  # no project holds it: unloaded
    finally:
        app.extensions["skillloop"].close()


def test_a_linker_that_differs_in_any_part_of_its_key_loads_its_own(
    tmp_path, spanful_model, tiny_encoder
):
    folder = linked_project(tmp_path, spanful_model, tiny_encoder)
    project = load_project(folder)
    cache = ModelCache()

    def holder(name: str) -> LinkerHolder:
        linked = LinkerHolder(project, ProjectState(tmp_path / "state" / name), cache)
        linked.start(background=False)
        assert linked.error is None and linked.linker is not None
        return linked

    first, same = holder("a"), holder("b")
    assert cache.loads == 1 and first.linker is same.linker
    settings = folder / "linker" / "linker.json"  # other settings: a new linker version
    written = json.loads(settings.read_text())
    settings.write_text(json.dumps({**written, "threshold": 0.5}))
    os.utime(settings, ns=(0, settings.stat().st_mtime_ns + 1_000_000))
    other = holder("c")
    assert cache.loads == 2 and other.linker is not first.linker
    assert other.linker.threshold == 0.5 and first.linker.threshold == 0.999
    shutil.copy(folder / "skills.csv", folder / "more.csv")  # the taxonomy's source
    with open(folder / "more.csv", "a") as handle:
        handle.write("dk,docker,\n")
    toml = (folder / "project.toml").read_text().replace('"skills.csv"', '"more.csv"')
    (folder / "project.toml").write_text(toml)
    assert len(holder_of(folder, tmp_path, cache).linker.taxonomy) == 4 and cache.loads == 3

    state = ProjectState(tmp_path / "state" / "d")
    added = [TaxonomyEntry("new:helm", "helm", [])]
    base = linker_key(project, state, additions=[])
    assert linker_key(project, state, additions=added) != base  # annotators' additions
    assert linker_key(project, state, threshold=0.6) != base
    assert linker_key(project, state, additions=[]) == base  # nothing read changes it


def holder_of(folder, tmp_path, cache: ModelCache) -> LinkerHolder:
    linked = LinkerHolder(load_project(folder), ProjectState(tmp_path / "state" / "e"), cache)
    linked.start(background=False)
    assert linked.error is None, linked.error
    return linked
