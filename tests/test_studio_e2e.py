"""The whole loop against a real Label Studio (from .venv-studio, started here on a temp
data dir) and a real `skillloop serve` subprocess with a tiny model: project, import,
connect, predictions stored with the right labels and offsets, annotations through the
API, Start Training, a new model version whose predictions reach Label Studio, the
lowest-score task served first, and Label Studio's CoNLL export matching the annotations.

Takes a few minutes (Label Studio's first start runs its migrations).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from sample_project import PLAIN_CONFIG, unlinked_copy
from studio_helpers import get_json, post_json, serve_backend, wait_for, wait_published

from labeling.state import ProjectState

pytestmark = [pytest.mark.studio, pytest.mark.slow]

LABELS = ["Technology", "Technical", "Business", "Soft"]
# Short posts in the tiny model's vocabulary; gold spans as (phrase, label).
POSTS = [
    (
        "p1",
        "we need python and sql experience for the data team",
        [("python", "Technology"), ("sql", "Technology")],
    ),
    (
        "p2",
        "senior data engineer with spark and aws in the cloud",
        [("spark", "Technology"), ("aws", "Technology")],
    ),
    ("p3", "communication skills and work with the team", [("communication skills", "Soft")]),
    (
        "p4",
        "machine learning experience with python or scala",
        [("machine learning", "Technical"), ("python", "Technology"), ("scala", "Technology")],
    ),
    (
        "p5",
        "junior analyst for excel analysis",
        [("excel", "Technology"), ("analysis", "Technical")],
    ),
    (
        "p6",
        "docker and kubernetes for the data scientist team with java",
        [("docker", "Technology"), ("kubernetes", "Technology"), ("java", "Technology")],
    ),
    (
        "p7",
        "we need react and node js in the cloud team",
        [("react", "Technology"), ("node js", "Technology")],
    ),
    (
        "p8",
        "a data scientist with communication skills and machine learning",
        [("communication skills", "Soft"), ("machine learning", "Technical")],
    ),
]


def _spans(text: str, phrases) -> list[dict]:
    spans = []
    for phrase, label in phrases:
        match = re.search(rf"\b{re.escape(phrase)}\b", text)
        spans.append({"start": match.start(), "end": match.end(), "label": label})
    return spans


@pytest.fixture
def project_dir(tmp_path, tiny_reference_model) -> Path:
    """A project folder like projects/linkedin-skills, on the tiny model, trained quickly,
    promoting any round (this test checks the plumbing, not the model's quality)."""
    folder = tmp_path / "e2e-skills"
    folder.mkdir()
    (folder / "labeling_config.xml").write_text(PLAIN_CONFIG)
    label_lines = "\n".join(
        f'[[labels]]\nvalue = "{label}"\npredicted_values = ["{tag}"]\n'
        for label, tag in zip(LABELS, ["TECHNOLOGY", "TECHNICAL", "BUS", "SOFT"], strict=True)
    )
    label_map = (
        '{ TECHNOLOGY = "Technology", TECHNICAL = "Technical", BUS = "Business", SOFT = "Soft" }'
    )
    (folder / "project.toml").write_text(f"""
[project]
name = "e2e-skills"
title = "skillloop e2e {os.getpid()}"
description = "end-to-end test"

{label_lines}
[model]
base = "{tiny_reference_model}"
label_map = {label_map}
max_tokens = 48
stride = 8

[training]
epochs = 2
learning_rate = 1e-3
batch_size = 4
seed = 13
patience = 2

[retrain]
every_n_annotations = 0
debounce_seconds = 0
heldout_share = 0.25
tolerance = 1.0

[selection]
strategy = "mnlp"
batch_size = 4

[data]
posts = "posts.jsonl"
gold = "gold.jsonl"
""")
    with (folder / "posts.jsonl").open("w") as out:
        for post_id, text, _ in POSTS:
            out.write(json.dumps({"id": post_id, "title": post_id, "text": text}) + "\n")
    with (folder / "gold.jsonl").open("w") as out:
        for post_id, text, phrases in POSTS[-2:]:
            out.write(
                json.dumps({"id": f"gold-{post_id}", "text": text, "spans": _spans(text, phrases)})
                + "\n"
            )
    return folder


@pytest.fixture
def backend(project_dir, tmp_path, studio):
    """`skillloop serve` for the test project (the test's own client uses the legacy token,
    the backend a personal access token: both kinds)."""
    state = tmp_path / "state"
    with serve_backend(project_dir, state, studio) as url:
        yield url, state / "e2e-skills"


def _check_regions(task: dict, prediction: dict) -> None:
    text = task["data"]["text"]
    for region in prediction["result"]:
        value = region["value"]
        assert region["from_name"] == "label" and region["to_name"] == "text"
        assert region["type"] == "labels"
        assert value["labels"][0] in LABELS
        assert 0 <= value["start"] < value["end"] <= len(text)
        assert text[value["start"] : value["end"]] == value["text"]
        # spans cover whole words: the tagger works on words
        assert value["start"] == 0 or not text[value["start"] - 1].isalnum()
        assert value["end"] == len(text) or not text[value["end"]].isalnum()


def _conll_entities(conll: str) -> dict[tuple[str, ...], list[tuple[str, str]]]:
    """Per exported document (its tokens), the (phrase, label) entities of its BIO tags."""
    documents: dict[tuple[str, ...], list[tuple[str, str]]] = {}
    for block in re.split(r"\n\s*\n", conll):  # a blank line ends a document
        lines = block.strip().splitlines()
        rows = [line.split(" ") for line in lines if line.strip() and "-DOCSTART-" not in line]
        tokens = tuple(row[0] for row in rows)
        if not tokens:
            continue
        entities, current = [], None
        for token, *_, tag in rows:
            if tag.startswith("B-") or (tag.startswith("I-") and current is None):
                current = [[token], tag[2:]]
                entities.append(current)
            elif tag.startswith("I-") and current is not None:
                current[0].append(token)
            else:
                current = None
        documents[tokens] = [(" ".join(words), label) for words, label in entities]
    return documents


def test_the_whole_loop_on_a_real_label_studio(studio, project_dir, backend):
    from labeling.project import load_project
    from labeling.studio.client import StudioClient

    backend_url, state = backend
    project = load_project(project_dir)
    client = StudioClient(studio.url, studio.token)  # the legacy token

    # create + import are idempotent
    ref = client.ensure_project(project.title, project.labeling_config, project.description)
    assert ref.created
    first = client.import_documents(ref.id, project.posts())
    assert (first.imported, first.skipped) == (len(POSTS), 0)
    again = client.import_documents(ref.id, project.posts())
    assert (again.imported, again.skipped) == (0, len(POSTS))
    assert client.ensure_project(project.title, project.labeling_config).id == ref.id

    # connect (twice: one ML backend) and fetch predictions from the initial model
    backend_id = client.connect_backend(ref.id, backend_url, "skillloop")
    wait_published(backend_url)  # on /setup the backend publishes its model
    assert client.connect_backend(ref.id, backend_url, "skillloop") == backend_id
    assert len(client.backends(ref.id)) == 1
    initial = get_json(f"{backend_url}/health")["model_version"]
    client.refresh_predictions(ref.id)
    tasks = client.tasks(ref.id)
    assert len(tasks) == len(POSTS)
    for task in tasks:
        predictions = [p for p in task["predictions"] if p["model_version"] == initial]
        assert len(predictions) == 1, f"task {task['id']}: {task['predictions']}"
        _check_regions(task, predictions[0])
        # Label Studio stored exactly what the backend answers for this task
        body = {
            "tasks": [{"id": task["id"], "data": task["data"]}],
            "label_config": project.labeling_config,
        }
        direct = post_json(f"{backend_url}/predict", body)
        assert _region_keys(direct["results"][0]["result"]) == _region_keys(
            predictions[0]["result"]
        )
        assert predictions[0]["score"] == pytest.approx(direct["results"][0]["score"], abs=1e-4)

    # annotate four posts through the API (the webhook stores them in the backend)
    by_post = {t["data"]["post_id"]: t for t in tasks}
    annotated = {}
    for post_id, text, phrases in POSTS[:4]:
        regions = [
            {
                "from_name": "label",
                "to_name": "text",
                "type": "labels",
                "value": {
                    "start": s["start"],
                    "end": s["end"],
                    "text": text[s["start"] : s["end"]],
                    "labels": [s["label"]],
                },
            }
            for s in _spans(text, phrases)
        ]
        client.annotate(by_post[post_id]["id"], regions, lead_time=3.5)
        annotated[post_id] = [(phrase, label) for phrase, label in phrases]

    from labeling.store import Store

    store = Store(state / "annotations.sqlite")
    wait_for(
        "the webhook's annotations in the store", lambda: len(store.annotations.records()) >= 4, 30
    )

    # Start Training: a new model version, promoted, whose predictions reach Label Studio
    client.train(ref.id)

    def promoted():
        versions = get_json(f"{backend_url}/versions") or {}
        serving = versions.get("serving")
        return serving if serving and serving != initial else None

    version = wait_for("a promoted model version", promoted, 300, every=2)

    def refreshed():
        current = client.tasks(ref.id)
        done = all(any(p["model_version"] == version for p in t["predictions"]) for t in current)
        info = client.project(ref.id)
        return current if done and info["model_version"] == version else None

    tasks = wait_for(f"Label Studio's predictions from {version}", refreshed, 180, every=2)
    assert client.project(ref.id)["sampling"] == "Uncertainty sampling"

    def one_suggestion():  # the swap hook's last step: older versions' predictions removed
        current = client.tasks(ref.id)
        pending = [t for t in current if not t["annotations"] and len(t["predictions"]) > 1]
        return current if not pending else None

    tasks = wait_for("one suggestion per unannotated task", one_suggestion, 60, every=2)
    for task in tasks:
        kept = sorted(p["model_version"] for p in task["predictions"])
        assert kept == ([initial, version] if task["annotations"] else [version]), task["id"]
    for task in tasks:
        (prediction,) = [p for p in task["predictions"] if p["model_version"] == version]
        _check_regions(task, prediction)

    # the next task served is the unannotated one with the lowest score of that version
    scores = {
        t["id"]: next(p["score"] for p in t["predictions"] if p["model_version"] == version)
        for t in tasks
        if not t["annotations"]
    }
    assert len(set(scores.values())) > 1, f"scores do not rank the tasks: {scores}"
    served = client.next_task(ref.id)
    assert served is not None
    assert scores[served["id"]] == pytest.approx(min(scores.values())), (served["id"], scores)

    # Label Studio's own CoNLL export holds what was annotated
    exported = _conll_entities(client.export(ref.id, "CONLL2003").decode())
    assert len(exported) == len(annotated)
    for post_id, expected in annotated.items():
        text = by_post[post_id]["data"]["text"]
        tokens = tuple(text.split())
        assert sorted(exported[tokens]) == sorted(expected), post_id


def _region_keys(result: list[dict]) -> list[tuple]:
    return sorted((r["value"]["start"], r["value"]["end"], r["value"]["labels"][0]) for r in result)


def test_gold_posts_arrive_completed_and_the_unlabelled_pool_is_selects(studio, tmp_path):
    """The sample project in a real Label Studio: the gold posts as completed ground-truth
    annotations (also over an older import that had them as plain tasks), the posts left
    to annotate exactly the ones `skillloop select` ranks."""
    from backend.cli.select import _labelled_documents, _unlabelled_posts
    from labeling.project import load_project
    from labeling.studio.client import StudioClient

    # the sample project as it was before linking: its first import sent plain documents
    project = load_project(unlinked_copy(tmp_path / "linkedin-skills"))
    client = StudioClient(studio.url, studio.token)
    ref = client.ensure_project("gold " + project.title, project.labeling_config)
    client.import_documents(ref.id, project.posts()[:40])  # as the demo did before
    first = client.import_project_posts(ref.id, project)
    assert (first.imported, first.skipped) == (len(project.posts()) - 4, 4)
    again = client.import_project_posts(ref.id, project)
    assert (again.imported, again.skipped) == (0, len(project.posts()))

    tasks = client.tasks(ref.id)
    assert len(tasks) == len(project.posts())
    gold = {doc.id: doc for doc in project.gold()}
    for task in tasks:
        post_id = task["data"]["post_id"]
        if post_id not in gold:
            assert task["annotations"] == [], post_id
            continue
        (annotation,) = task["annotations"]
        assert annotation["ground_truth"] and not annotation["was_cancelled"]
        doc = gold[post_id]
        stored = sorted(
            (r["value"]["start"], r["value"]["end"], r["value"]["labels"][0])
            for r in annotation["result"]
        )
        assert stored == sorted(s.key() for s in doc.spans), post_id
    in_studio = {t["data"]["post_id"] for t in tasks if not t["annotations"]}
    labelled = _labelled_documents(project, ProjectState(tmp_path / "state" / project.name))
    in_select = {post.id for post in _unlabelled_posts(project.posts(), labelled)}
    assert in_studio == in_select and len(in_studio) >= 60


def test_a_published_model_leaves_one_suggestion_on_unannotated_tasks(studio):
    """publish_model's last step on a real Label Studio: older versions' predictions go
    from tasks nobody annotated once the new version's are stored; annotated tasks, and a
    task the new version has not answered for, keep theirs."""
    from labeling.studio.client import StudioClient

    client = StudioClient(studio.url, studio.token)
    ref = client.ensure_project("suggestions", PLAIN_CONFIG)
    texts = ["python and sql", "docker for data", "excel reports", "aws and spark"]
    ids = client.import_tasks(ref.id, [{"text": t} for t in texts]).task_ids
    region = {
        "from_name": "label",
        "to_name": "text",
        "type": "labels",
        "value": {"start": 0, "end": 2, "text": texts[0][:2], "labels": ["Technology"]},
    }
    for version in ("v0001", "v0002", "v0003"):
        for task_id in ids[:3] if version == "v0003" else ids:
            client.ls.predictions.create(
                task=task_id, result=[region], score=0.5, model_version=version
            )
    client.annotate(ids[1], [region])

    assert client.remove_older_predictions(ref.id, "v0003") == 4
    versions = {
        t["id"]: sorted(p["model_version"] for p in t["predictions"]) for t in client.tasks(ref.id)
    }
    assert versions[ids[0]] == versions[ids[2]] == ["v0003"]
    assert versions[ids[1]] == ["v0001", "v0002", "v0003"]  # annotated: what was shown stays
    assert versions[ids[3]] == ["v0001", "v0002"]  # v0003 has not answered for it yet
    assert client.remove_older_predictions(ref.id, "v0003") == 0
