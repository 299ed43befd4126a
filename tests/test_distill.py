"""Distillation (training.distill, training.soft_targets): teachers' averaged per-word
probabilities, the soft loss that pulls a student towards them, and its CLI and round
options."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch

from backend.cli import main
from training.checkpoint import read_metadata
from training.crf import CRF
from training.datasets import write_jsonl
from training.distill import teacher_dir, teacher_plan
from training.distill import train as distil
from training.finetune import train
from training.soft_targets import average_marginals, crf_log_marginals, teacher_marginals
from training.tagger import Tagger
from training.text import Document, Span, tag_names
from training.train_config import TrainConfig
from training.windows import WindowConfig

LABELS = ["Technology", "Soft"]
TAGS = tag_names(LABELS)  # O, B-Technology, I-Technology, B-Soft, I-Soft
FAST = TrainConfig(
    epochs=2, learning_rate=3e-3, batch_size=2, window=WindowConfig(16, 4), warmup_ratio=0.0
)


def docs() -> list[Document]:
    texts = [
        ("we need python and sql", [(8, 14, "Technology"), (19, 22, "Technology")]),
        ("communication skills", [(0, 20, "Soft")]),
        ("docker and kubernetes", [(0, 6, "Technology"), (11, 21, "Technology")]),
    ]
    return [Document(t, [Span(*s) for s in spans], id=str(n)) for n, (t, spans) in enumerate(texts)]


def test_teacher_marginals_are_averaged_per_word_in_the_students_tag_order():
    one = np.array([[0.6, 0.4, 0.0, 0.0, 0.0], [0.2, 0.0, 0.8, 0.0, 0.0]])
    # the second teacher's columns come in another order: O, B-Soft, I-Soft, B-Tech, I-Tech
    other_tags = ["O", "B-Soft", "I-Soft", "B-Technology", "I-Technology"]
    two = np.array([[0.2, 0.0, 0.0, 0.8, 0.0], [0.0, 0.5, 0.5, 0.0, 0.0]])
    mean = average_marginals([[one], [two]], [TAGS, other_tags], TAGS)
    expected = np.array([[0.4, 0.6, 0.0, 0.0, 0.0], [0.1, 0.0, 0.4, 0.25, 0.25]])
    np.testing.assert_allclose(mean[0], expected, atol=1e-6)
    with pytest.raises(ValueError, match="different words"):
        average_marginals([[one], [two[:1]]], [TAGS, other_tags], TAGS)
    with pytest.raises(ValueError, match="no tags"):
        average_marginals([[one]], [TAGS[:3]], TAGS)


def test_crf_marginals_in_torch_match_every_path_summed():
    torch.manual_seed(0)
    crf = CRF(TAGS)
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    emissions = torch.randn(2, 3, len(TAGS))
    mask = torch.tensor([[True, True, True], [True, True, False]])
    got = crf_log_marginals(crf, emissions, mask).exp()
    matrix = (crf.matrix + crf.mask).detach()
    start, end = crf.start.detach(), crf.end.detach()
    for row, length in enumerate([3, 2]):
        marginals = np.zeros((length, len(TAGS)))
        for path in itertools.product(range(len(TAGS)), repeat=length):
            score = start[path[0]] + end[path[-1]]
            score = score + sum(emissions[row, w, t] for w, t in enumerate(path))
            score = score + sum(matrix[a, b] for a, b in itertools.pairwise(path))
            for w, t in enumerate(path):
                marginals[w, t] += float(torch.exp(score))
        marginals /= marginals.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(got[row, :length].detach().numpy(), marginals, atol=1e-5)


@pytest.mark.parametrize("crf", [True, False])
def test_a_student_on_teacher_targets_alone_reproduces_their_argmax(tiny_encoder, tmp_path, crf):
    # no gold spans at all: whatever the student learns comes from the soft targets
    text = "we need python and sql"
    wanted = ["O", "O", "B-Technology", "O", "B-Technology"]
    soft = np.full((5, len(TAGS)), 0.025, dtype=np.float32)
    for w, tag in enumerate(wanted):
        soft[w, TAGS.index(tag)] = 0.9
    config = TrainConfig(
        epochs=30, learning_rate=3e-3, batch_size=1, warmup_ratio=0.0, crf=crf, distil_weight=1.0
    )
    out = tmp_path / "student"
    train(tiny_encoder, [Document(text, [])], LABELS, out, config=config, progress=False,
          soft_targets=[soft])  # fmt: skip
    prediction = Tagger.load(out, LABELS, precision="fp32").predict([text])[0]
    assert [TAGS[j] for j in prediction.probs.argmax(axis=1)] == wanted
    assert [s.text for s in prediction.spans] == ["python", "sql"]


def test_distil_trains_teachers_then_the_student_on_their_mean(tiny_encoder, tmp_path):
    config = TrainConfig(**{**vars(FAST), "teachers": 2, "distil_weight": 0.7})
    assert teacher_plan(tiny_encoder, config) == [(str(tiny_encoder), 14), (str(tiny_encoder), 15)]
    out = tmp_path / "student"
    distil(tiny_encoder, docs(), LABELS, out, dev_docs=docs(), config=config, progress=False)
    record = read_metadata(out)["distillation"]
    paths = [t["path"] for t in record["teachers"]]
    assert paths == [str(teacher_dir(out) / f"teacher-{k}") for k in (1, 2)]
    assert [t["seed"] for t in record["teachers"]] == [14, 15] and record["weight"] == 0.7
    assert all(0 <= t["dev_f1"] <= 1 for t in record["teachers"])
    assert read_metadata(out)["config"]["teachers"] == 2
    # the targets are the mean of what the two teachers serve
    texts = [d.text for d in docs()]
    served = [Tagger.load(p, LABELS, precision="fp32").predict(texts) for p in paths]
    mean = teacher_marginals(paths, docs(), LABELS, TAGS)
    for d in range(len(texts)):
        np.testing.assert_allclose(
            mean[d], (served[0][d].probs + served[1][d].probs) / 2, atol=1e-5
        )
    assert not np.allclose(served[0][0].probs, served[1][0].probs)  # the seeds differ


def test_train_config_keeps_the_distillation_options_for_rounds():
    config = TrainConfig(
        teachers=3, teacher_checkpoints=["a"], teacher_bases=["b"], distil_weight=0.2
    )
    assert TrainConfig.from_json(config.to_json()) == config
    assert {"teachers", "teacher_checkpoints", "teacher_bases", "distil_weight"} <= (
        TrainConfig.json_keys()
    )
    with pytest.raises(ValueError, match="distil_weight"):
        TrainConfig(distil_weight=1.5)
    with pytest.raises(ValueError, match="training.distill"):  # not silently without them
        train(None, docs(), LABELS, "unused", config=TrainConfig(teachers=1))


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "train.jsonl"
    write_jsonl(docs(), path)
    return path


CLI_FAST = ["--epochs", "1", "--lr", "3e-3", "--batch-size", "2", "--max-tokens", "16"]


def test_cli_teacher_flags_round_trip(tiny_encoder, data, tmp_path, capsys):
    teacher = tmp_path / "teacher"
    base = ["train", "--data", str(data), "--base", str(tiny_encoder), *CLI_FAST, "--no-progress"]
    assert main([*base, "--out", str(teacher), "--calibration-share", "0"]) == 0
    out = tmp_path / "student"
    args = ["--teachers", "1", "--teacher", str(teacher), "--distil-weight", "0.3"]
    assert main([*base, "--out", str(out), "--calibration-share", "0", *args]) == 0
    printed = capsys.readouterr().out
    assert "teacher 1:" in printed and "teacher 2:" in printed
    meta = read_metadata(out)
    assert meta["config"]["teachers"] == 1 and meta["config"]["distil_weight"] == 0.3
    assert meta["config"]["teacher_checkpoints"] == [str(teacher)]
    assert [t["path"] for t in meta["distillation"]["teachers"]] == [
        str(teacher_dir(out) / "teacher-1"),
        str(teacher),
    ]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--teachers", "1", "--layers", "Technology", "Soft"], "flat models only"),
        (["--teacher", "/nonexistent/model"], "is not a folder"),
        (["--teachers", "1", "--distil-weight", "2"], "distil_weight within [0, 1]"),
        (["--teachers", "-1"], "teachers must be at least 0"),
    ],
)
def test_cli_refuses_what_distillation_cannot_do(
    tiny_encoder, data, tmp_path, capsys, flags, message
):
    out = tmp_path / "student"
    args = ["train", "--data", str(data), "--base", str(tiny_encoder), "--out", str(out)]
    assert main([*args, *CLI_FAST, "--no-progress", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not teacher_dir(out).exists()  # refused before any work


def test_a_round_distils_when_its_spec_asks(tiny_encoder, tmp_path):
    from backend.loop.child import run
    from backend.loop.spec import RoundSpec, read_spec, write_spec

    folder = tmp_path / "round"
    folder.mkdir()
    write_jsonl(docs()[:2], folder / "train.jsonl")
    write_jsonl(docs()[2:], folder / "heldout.jsonl")
    config = replace(FAST, epochs=1, teachers=1, distil_weight=0.5)
    out = tmp_path / "candidate"
    spec = RoundSpec(folder, str(tiny_encoder), LABELS, out, config=config, quantize=False)
    result = run(read_spec(write_spec(spec)))  # as the child reads it
    assert result["candidate"]["f1"] is not None
    record = read_metadata(out)["distillation"]
    assert [t["path"] for t in record["teachers"]] == [str(folder / "teachers" / "teacher-1")]
    assert record["teachers_kept"] is False and not (folder / "teachers").exists()


def test_project_training_section_names_the_teachers(tmp_path):
    from labeling.project import load_project

    (tmp_path / "project.toml").write_text(
        '[project]\nname = "demo"\n\n[[labels]]\nvalue = "Tech"\n\n[model]\nbase = "backbone"\n\n'
        "[training]\nteachers = 2\ndistil_weight = 0.4\n"
    )
    config = load_project(tmp_path).train_config()
    assert (config.teachers, config.distil_weight) == (2, 0.4)
