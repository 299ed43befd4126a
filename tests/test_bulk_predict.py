"""`skillloop predict --workers N` and `--format label-studio`, with the tiny reference model."""

import json

import pytest

from backend.cli import main
from labeling.studio.config import parse_config

MAP = ["BUS=Business", "TECHNOLOGY=Technology", "TECHNICAL=Technical", "SOFT=Soft"]
WORDS = "team work and communication skills for the analyst , excel or spark python sql"


@pytest.fixture
def posts(tmp_path):
    """70 posts (three chunks of 32), of different lengths, one with an emoji before spans."""
    words = WORDS.split()
    rows = [{"id": f"p{i}", "text": " ".join(words[i % 7 :] * (1 + i % 5))} for i in range(69)]
    rows.append({"id": "emoji", "text": "😀 team work 😀 and communication skills"})
    path = tmp_path / "posts.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path, rows


def predict(model, source, out, *extra) -> int:
    args = ["predict", "--model", str(model), "--input", str(source), "--output", str(out)]
    return main([*args, "--label-map", *MAP, "--no-progress", *extra])


@pytest.mark.slow
def test_workers_keep_input_order_and_give_what_one_process_gives(
    tiny_reference_model, posts, tmp_path, capsys
):
    source, rows = posts
    alone, pooled = tmp_path / "alone.jsonl", tmp_path / "pooled.jsonl"
    assert predict(tiny_reference_model, source, alone, "--precision", "fp32") == 0
    assert (
        predict(tiny_reference_model, source, pooled, "--precision", "fp32", "--workers", "2") == 0
    )
    expected = [json.loads(line) for line in alone.read_text().splitlines()]
    got = [json.loads(line) for line in pooled.read_text().splitlines()]
    assert [r["id"] for r in got] == [r["id"] for r in rows]
    assert sum(len(r["spans"]) for r in got) > 0
    for a, b in zip(expected, got, strict=True):
        assert [(s["start"], s["end"], s["label"]) for s in a["spans"]] == [
            (s["start"], s["end"], s["label"]) for s in b["spans"]
        ]
    err = capsys.readouterr().err
    assert "2 worker process(es), one torch thread each" in err
    assert "predicted 70 texts" in err and "precision fp32" in err


def test_label_studio_format_is_an_import_list_with_predictions(
    tiny_reference_model, posts, tmp_path
):
    source, rows = posts
    out = tmp_path / "tasks.json"
    assert predict(tiny_reference_model, source, out, "--format", "label-studio") == 0
    tasks = json.loads(out.read_text())
    assert [t["data"]["id"] for t in tasks] == [r["id"] for r in rows]
    regions = 0
    for task, row in zip(tasks, rows, strict=True):
        assert task["data"]["text"] == row["text"]
        [prediction] = task["predictions"]
        assert prediction["model_version"].startswith(tiny_reference_model.name + "@")
        assert 0 <= prediction["score"] <= 1
        for region in prediction["result"]:
            value = region["value"]
            # code-point offsets: what Label Studio reads (labeling/studio/tasks.py)
            assert row["text"][value["start"] : value["end"]] == value["text"]
            assert region["from_name"] == "label" and region["to_name"] == "text"
            assert value["labels"][0] in ("Business", "Technology", "Technical", "Soft")
            regions += 1
    assert regions > 0


@pytest.mark.slow
def test_label_studio_format_follows_a_given_labeling_config(tiny_reference_model, posts, tmp_path):
    source, _ = posts
    xml = tmp_path / "config.xml"
    xml.write_text(
        '<View><Labels name="skills" toName="post">'
        '<Label value="Tech" predicted_values="Technology"/><Label value="Soft"/>'
        '</Labels><Text name="post" value="$body"/></View>'
    )
    assert parse_config(xml.read_text()).value_key == "body"
    out = tmp_path / "tasks.json"
    args = ["--format", "label-studio", "--labeling-config", str(xml), "--workers", "1"]
    assert predict(tiny_reference_model, source, out, *args) == 0
    tasks = json.loads(out.read_text())
    assert all("body" in t["data"] and "text" not in t["data"] for t in tasks)
    labels = {r["value"]["labels"][0] for t in tasks for r in t["predictions"][0]["result"]}
    assert labels and labels <= {"Tech", "Soft"}
    assert {r["from_name"] for t in tasks for r in t["predictions"][0]["result"]} == {"skills"}


def test_bad_worker_counts_and_configs_are_clear_errors(
    tiny_reference_model, posts, tmp_path, capsys
):
    source, _ = posts
    out = tmp_path / "out"
    assert predict(tiny_reference_model, source, out, "--workers", "0") == 2
    assert "--workers must be at least 1" in capsys.readouterr().err
    missing = ["--format", "label-studio", "--labeling-config", str(tmp_path / "nope.xml")]
    assert predict(tiny_reference_model, source, out, *missing) == 2
    assert "labeling config not found" in capsys.readouterr().err


@pytest.mark.slow
def test_a_worker_that_cannot_load_the_model_is_a_clear_error(
    tiny_reference_model, posts, tmp_path, capsys
):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_reference_model, broken)
    for weights in broken.glob("*.safetensors"):
        weights.write_bytes(b"not weights")
    source, _ = posts
    assert predict(broken, source, tmp_path / "out", "--workers", "2") == 2
    assert "a worker could not load the model" in capsys.readouterr().err
