"""`skillloop train / predict / evaluate` through `backend.cli.main`, with tiny models."""

import json

import pytest

from backend.cli import main
from training.checkpoint import read_metadata
from training.datasets import write_jsonl
from training.text import Document, Span


def docs() -> list[Document]:
    texts = [
        ("we need python and sql", [(8, 14, "Technology"), (19, 22, "Technology")]),
        ("communication skills", [(0, 20, "Soft")]),
        ("docker and kubernetes", [(0, 6, "Technology"), (11, 21, "Technology")]),
    ]
    return [Document(t, [Span(*s) for s in spans], id=str(n)) for n, (t, spans) in enumerate(texts)]


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "train.jsonl"
    write_jsonl(docs(), path)
    return path


FAST = ["--epochs", "2", "--lr", "3e-3", "--batch-size", "2", "--max-tokens", "16", "--no-progress"]


@pytest.fixture
def trained(tiny_encoder, data, tmp_path, capsys):
    out = tmp_path / "model"
    code = main(
        [
            "train",
            "--data",
            str(data),
            "--dev",
            str(data),
            "--out",
            str(out),
            "--base",
            str(tiny_encoder),
            *FAST,
        ]
    )
    assert code == 0
    assert "saved" in capsys.readouterr().out
    return out


def test_train_writes_a_checkpoint_with_labels_from_the_data(trained):
    meta = read_metadata(trained)
    assert meta["labels"] == ["Technology", "Soft"]
    assert meta["config"]["epochs"] == 2 and meta["config"]["learning_rate"] == 3e-3
    # --max-tokens builds the window at the edge; the default stride goes with it
    assert (meta["config"]["max_tokens"], meta["config"]["stride"]) == (16, 32)
    # a CRF is trained by default; its scores travel in skillloop.json
    assert meta["config"]["crf"] is True and len(meta["crf"]["transitions"]) == 5


def test_train_encoder_layers_writes_a_smaller_student(tiny_encoder, data, tmp_path, capsys):
    out = tmp_path / "student"
    args = ["train", "--data", str(data), "--out", str(out), "--base", str(tiny_encoder)]
    assert main([*args, "--encoder-layers", "1", *FAST]) == 0
    assert read_metadata(out)["config"]["encoder_layers"] == 1
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 1
    source, predicted = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text('{"text": "we need python"}\n')
    predict = ["predict", "--model", str(out), "--input", str(source), "--output", str(predicted)]
    assert main([*predict, "--no-progress", "--fp32"]) == 0
    assert json.loads(predicted.read_text())["text"] == "we need python"
    capsys.readouterr()
    assert main([*args, "--encoder-layers", "-1", *FAST]) == 2
    assert "encoder_layers" in capsys.readouterr().err


def test_train_fits_a_temperature_on_the_dev_posts(trained, capsys):
    fit = read_metadata(trained)["calibration"]
    assert fit["documents"] == 3 and fit["temperature"] > 0  # the 3 --dev posts


def test_train_without_dev_holds_out_training_posts_to_calibrate(tiny_encoder, tmp_path, capsys):
    many = [
        Document(f"we need python and sql, post {n}", [Span(8, 14, "Technology")], id=str(n))
        for n in range(20)
    ]
    write_jsonl(many, tmp_path / "many.jsonl")
    out = tmp_path / "calibrated"
    args = ["train", "--data", str(tmp_path / "many.jsonl"), "--out", str(out)]
    assert main([*args, "--base", str(tiny_encoder), "--calibration-share", "0.25", *FAST]) == 0
    assert "span scores calibrated on 5 training posts held out" in capsys.readouterr().out
    assert read_metadata(out)["calibration"]["documents"] == 5
    # too few posts to hold out any: said, not silently uncalibrated
    small = tmp_path / "small"
    few = ["train", "--data", str(tmp_path / "many.jsonl"), "--out", str(small)]
    assert main([*few, "--base", str(tiny_encoder), "--calibration-share", "0", *FAST]) == 0
    assert "span scores not calibrated" in capsys.readouterr().out
    assert "calibration" not in read_metadata(small)
    assert main([*few, "--base", str(tiny_encoder), "--calibration-share", "1.5", *FAST]) == 2
    assert "--calibration-share must be in [0, 1)" in capsys.readouterr().err


def test_train_without_a_crf(tiny_encoder, data, tmp_path):
    out = tmp_path / "plain"
    code = main(
        [
            "train",
            "--data",
            str(data),
            "--out",
            str(out),
            "--base",
            str(tiny_encoder),
            "--no-crf",
            *FAST,
        ]
    )
    assert code == 0
    meta = read_metadata(out)
    assert meta["config"]["crf"] is False and "crf" not in meta


def test_predict_jsonl_in_and_out(trained, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "a", "text": "we need python"}\n\n{"text": "sql and docker"}\n')
    out = tmp_path / "out.jsonl"
    args = ["predict", "--model", str(trained), "--input", str(source), "--output", str(out)]
    assert main([*args, "--no-progress", "--fp32", "--max-tokens", "8"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r.get("id") for r in rows] == ["a", None]
    assert rows[1]["text"] == "sql and docker"
    for row in rows:
        for span in row["spans"]:
            assert row["text"][span["start"] : span["end"]] == span["text"]
            assert span["label"] in ("Technology", "Soft") and 0 < span["score"] <= 1


def test_evaluate_prints_a_table_and_writes_json(trained, data, tmp_path, capsys):
    report = tmp_path / "report.json"
    code = main(
        [
            "evaluate",
            "--model",
            str(trained),
            "--data",
            str(data),
            "--json",
            str(report),
            "--no-progress",
        ]
    )
    assert code == 0
    figures = json.loads(report.read_text())
    assert figures["documents"] == 3
    assert figures["char_span"]["Technology"]["support"] == 4
    assert figures["entity_strict"]["overall"]["support"] == 5
    printed = capsys.readouterr().out
    assert "Technology" in printed and "overall" in printed


def test_user_mistakes_get_one_line_and_exit_2(trained, tiny_encoder, data, tmp_path, capsys):
    cases = [
        (
            ["train", "--data", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "m")],
            "not found",
        ),
        (
            ["train", "--data", str(data), "--out", str(tmp_path / "m"), "--labels", "Soft"],
            "not in ['Soft']",
        ),
        (["evaluate", "--model", str(tmp_path / "nope"), "--data", str(data)], "not found"),
        (["predict", "--model", str(trained), "--input", str(tmp_path / "no.jsonl")], "not found"),
        (
            ["evaluate", "--model", str(trained), "--data", str(data), "--labels", "Other"],
            "does not predict ['Other']",
        ),
        (
            ["train", "--data", str(data), "--out", str(tmp_path / "m"), "--label-map", "BUS"],
            "TAG=LABEL",
        ),
    ]
    (tmp_path / "data.xml").write_text("<x/>")
    cases.append(
        (
            ["evaluate", "--model", str(trained), "--data", str(tmp_path / "data.xml")],
            "unknown data format",
        )
    )
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("skillloop: error:") and message in err, (argv, err)
        assert len(err.splitlines()) == 1


def test_predict_with_a_reference_model_and_label_map(tiny_reference_model, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "python"}\n')
    out = tmp_path / "out.jsonl"
    code = main(
        [
            "predict",
            "--model",
            str(tiny_reference_model),
            "--input",
            str(source),
            "--output",
            str(out),
            "--label-map",
            "BUS=Business",
            "TECHNOLOGY=Technology",
            "TECHNICAL=Technical",
            "SOFT=Soft",
            "--no-progress",
        ]
    )
    assert code == 0
    row = json.loads(out.read_text())
    assert {s["label"] for s in row["spans"]} <= {"Business", "Technology", "Technical", "Soft"}


def test_train_refuses_an_out_folder_that_is_not_a_checkpoint(trained, data, tmp_path, capsys):
    """`--out` pointing at a folder of other files used to delete the whole folder."""
    precious = tmp_path / "work"
    precious.mkdir()
    (precious / "notes.txt").write_text("a week of notes")
    args = ["train", "--data", str(data), "--out", str(precious), *FAST]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "is not empty and is not a skillloop checkpoint" in err and "Traceback" not in err
    assert (precious / "notes.txt").read_text() == "a week of notes"

    # a skillloop checkpoint is replaced, in place, by the new one
    before = read_metadata(trained)
    base = str(trained)
    out = ["train", "--data", str(data), "--out", str(trained), "--base", base, *FAST]
    assert main([*out, "--epochs", "1"]) == 0
    after = read_metadata(trained)
    assert after["config"]["epochs"] == 1 != before["config"]["epochs"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("model")) == ["model"]


def test_train_never_touches_a_users_partial_or_old_folder(trained, data, tmp_path, capsys):
    mine = [trained.with_name(trained.name + suffix) for suffix in (".partial", ".old")]
    for folder in mine:
        folder.mkdir()
        (folder / "notes.txt").write_text("my own work")
    link = tmp_path / "model-link"
    link.symlink_to(trained, target_is_directory=True)
    base = ["--data", str(data), "--base", str(trained), *FAST]
    assert main(["train", "--out", str(trained), *base]) == 0  # replaces the checkpoint
    assert main(["train", "--out", str(link), *base]) == 0  # saves where the link points
    capsys.readouterr()
    for folder in mine:
        assert (folder / "notes.txt").read_text() == "my own work"
    assert link.is_symlink() and read_metadata(link)["labels"] == ["Technology", "Soft"]
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name or ".old-" in p.name]


def test_predict_refuses_to_write_over_its_input(trained, tmp_path, capsys):
    posts = tmp_path / "posts.jsonl"
    posts.write_text('{"text": "we need python", "meta": {"source": "mine"}}\n')
    before = posts.read_text()
    for output in (str(posts), str(tmp_path / "." / "posts.jsonl")):
        assert (
            main(["predict", "--model", str(trained), "--input", str(posts), "--output", output])
            == 2
        )
        assert "is the --input file" in capsys.readouterr().err
    assert posts.read_text() == before


def test_predict_reads_a_text_up_to_the_services_limit(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SKILLLOOP_MAX_TEXT_CHARS", "40")
    posts, out = tmp_path / "posts.jsonl", tmp_path / "out.jsonl"
    posts.write_text(json.dumps({"text": "python " * 100}) + "\n" + '{"text": "sql"}\n')
    argv = ["predict", "--model", str(trained), "--input", str(posts), "--output", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    assert "1 texts read up to their first 40 characters" in capsys.readouterr().err
    long, short = (json.loads(line) for line in out.read_text().splitlines())
    assert long["text_cut_at"] == 40 and len(long["text"]) == 40 and "text_cut_at" not in short
    assert all(span["end"] <= 40 for span in long["spans"])


def test_predict_names_a_lone_surrogate_instead_of_a_traceback(trained, tmp_path, capsys):
    posts = tmp_path / "posts.jsonl"
    posts.write_text('{"text": "fine"}\n{"text": "broken \\ud800 text"}\n')
    assert main(["predict", "--model", str(trained), "--input", str(posts), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("posts.jsonl:2: the text holds a lone UTF-16 surrogate")
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_train_can_score_dev_only_after_the_last_epoch(tiny_encoder, data, tmp_path):
    out = tmp_path / "once"
    args = ["train", "--data", str(data), "--dev", str(data), "--out", str(out)]
    assert main([*args, "--base", str(tiny_encoder), "--no-dev-every-epoch", *FAST]) == 0
    meta = read_metadata(out)
    assert meta["config"]["dev_every_epoch"] is False and meta["best_epoch"] == 2
    assert len(meta["metrics"]["dev_f1"]) == 1  # one dev pass for the 2 epochs
