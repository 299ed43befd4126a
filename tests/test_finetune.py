"""Fine-tuning the tiny model: loss goes down, the checkpoint loads back, runs repeat."""

import json
import math

import pytest
import torch

from training import checkpoint
from training.checkpoint import read_metadata
from training.finetune import METADATA_FILE, TrainingCancelled, train
from training.tagger import Tagger
from training.text import Document, Span
from training.train_config import TrainConfig
from training.train_examples import batches, make_examples
from training.windows import WindowConfig

LABELS = ["Technology", "Soft"]


def corpus() -> list[Document]:
    lines = [
        ("we need python and sql", [("python", "Technology"), ("sql", "Technology")]),
        ("communication skills and team work", [("communication skills", "Soft")]),
        (
            "experience with docker and kubernetes",
            [("docker", "Technology"), ("kubernetes", "Technology")],
        ),
        ("a senior data engineer for the team", []),
        ("java or scala on cloud", [("java", "Technology"), ("scala", "Technology")]),
    ]
    docs = []
    for text, found in lines:
        spans = [Span(text.index(w), text.index(w) + len(w), label) for w, label in found]
        docs.append(Document(text, spans, id=text[:10]))
    return docs


# a long document so that windows (max_tokens 16) must be used in training
LONG = Document(
    " ".join(["we need python and sql for the team"] * 6),
    [Span(8 + 36 * k, 14 + 36 * k, "Technology") for k in range(6)],
)

FAST = TrainConfig(
    epochs=4,
    learning_rate=3e-3,
    batch_size=4,
    window=WindowConfig(16, 4),
    warmup_ratio=0.0,
    patience=10,
)


def test_examples_label_first_subwords_through_windows(tiny_encoder):
    tokenizer = checkpoint.load(tiny_encoder, LABELS, allow_new_labels=True).tokenizer
    examples = make_examples(tokenizer, [LONG], LABELS, WindowConfig(16, 4))
    assert len(examples) > 1 and all(len(e.input_ids) <= 18 for e in examples)
    python_id = tokenizer.convert_tokens_to_ids("python")
    for e in examples:
        for token, target in zip(e.input_ids, e.labels, strict=True):
            if token == python_id:
                assert target == 1  # B-Technology
    # every word is trained at least once: no word is cut away
    labelled = sum(sum(t != -100 for t in e.labels) for e in examples)
    assert labelled >= 48


def test_batches_group_similar_lengths_and_cover_everything():
    import random

    from training.train_examples import Example

    examples = [Example([0] * n, [0] * n) for n in range(1, 41)]
    out = batches(examples, 4, random.Random(0))
    assert sorted(i for b in out for i in b) == list(range(40))
    assert all(max(b) - min(b) == 3 for b in out)  # sorted within the pool


def test_training_lowers_loss_and_writes_a_loadable_checkpoint(tiny_encoder, tmp_path):
    docs = corpus() + [LONG]
    out = tmp_path / "model"
    result = train(tiny_encoder, docs, LABELS, out, dev_docs=docs, config=FAST, progress=False)
    assert result.losses[-1] < result.losses[0]
    assert result.epochs_run == 4 and 1 <= result.best_epoch <= 4
    assert result.best_dev_f1 == max(result.dev_f1)
    meta = read_metadata(out)
    assert meta["labels"] == LABELS and meta["config"]["max_tokens"] == 16
    assert TrainConfig.from_json(meta["config"]) == FAST  # the window kept as flat keys
    assert meta["metrics"]["best_dev_f1"] == pytest.approx(result.best_dev_f1)
    assert json.loads((out / METADATA_FILE).read_text())["windows"] == result.n_windows
    loaded = checkpoint.load(out, LABELS)
    assert loaded.new_tags == []
    tagger = Tagger.load(out, LABELS, quantize=False)
    assert len(tagger.predict(["we need python"])[0].words) == 3


def test_plain_cross_entropy_training_learns_and_saves_no_crf(tiny_encoder, tmp_path):
    # FAST inherits crf=True: this is the --no-crf path, the per-subword cross-entropy loss
    docs = corpus() + [LONG]
    config = TrainConfig(**{**FAST.__dict__, "crf": False, "epochs": 12})
    out = tmp_path / "ce"
    result = train(tiny_encoder, docs, LABELS, out, dev_docs=docs, config=config, progress=False)
    # cross-entropy starts near log(5 tags) per word, and falls well below it
    assert result.losses[0] == pytest.approx(math.log(5), abs=0.5)
    assert result.losses[-1] < 0.5 * result.losses[0]
    assert "crf" not in read_metadata(out)
    assert checkpoint.load(out, LABELS).transitions is None
    tagger = Tagger.load(out, LABELS, quantize=False)
    assert tagger.transitions is None
    assert result.best_dev_f1 > 0.5  # it learned the training posts' skills


def test_seeded_runs_repeat_and_warm_start_from_a_checkpoint(tiny_encoder, tmp_path):
    docs = corpus()
    config = TrainConfig(epochs=2, learning_rate=3e-3, batch_size=2, window=WindowConfig(16, 4))
    first = train(tiny_encoder, docs, LABELS, tmp_path / "a", config=config, progress=False)
    again = train(tiny_encoder, docs, LABELS, tmp_path / "b", config=config, progress=False)
    assert first.losses == again.losses
    weights_a = checkpoint.load(tmp_path / "a", LABELS).model.state_dict()
    weights_b = checkpoint.load(tmp_path / "b", LABELS).model.state_dict()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    # warm start: continuing from the trained folder begins where it left off
    warm = train(tmp_path / "a", docs, LABELS, tmp_path / "c", config=config, progress=False)
    assert warm.losses[0] < first.losses[0]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_precision_is_recorded_and_both_learn(tiny_encoder, tmp_path, precision):
    config = TrainConfig(**{**FAST.__dict__, "precision": precision})
    result = train(tiny_encoder, corpus(), LABELS, tmp_path / "m", config=config, progress=False)
    assert result.losses[-1] < result.losses[0]
    # weights stay fp32 whatever the step's precision: the saved model is an fp32 model
    assert read_metadata(tmp_path / "m")["timings"]["precision"] == precision
    weights = checkpoint.load(tmp_path / "m", LABELS).model.state_dict()
    assert all(w.dtype == torch.float32 for w in weights.values() if w.is_floating_point())


def test_new_label_on_a_trained_checkpoint_gets_a_head_row(
    tiny_reference_model, reference_label_map, tmp_path
):
    docs = [Document("python and communication", [Span(0, 6, "Technology"), Span(11, 24, "Soft")])]
    labels = ["Technology", "Soft", "Tool"]
    config = TrainConfig(epochs=1, window=WindowConfig(16, 4))
    train(
        tiny_reference_model,
        docs,
        labels,
        tmp_path / "m",
        config=config,
        label_map=reference_label_map,
        progress=False,
    )
    assert checkpoint.load(tmp_path / "m", labels).labels == labels


def test_cancellation_and_bad_input(tiny_encoder, tmp_path):
    with pytest.raises(TrainingCancelled):
        train(
            tiny_encoder,
            corpus(),
            LABELS,
            tmp_path / "x",
            config=FAST,
            progress=False,
            should_stop=lambda: True,
        )
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="not in"):
        train(tiny_encoder, corpus(), ["Technology"], tmp_path / "x", config=FAST, progress=False)
    with pytest.raises(ValueError, match="no training documents"):
        train(tiny_encoder, [], LABELS, tmp_path / "x", config=FAST, progress=False)
    with pytest.raises(ValueError):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp16")


def test_a_checkpoint_is_replaced_in_one_swap(tiny_encoder, tmp_path, monkeypatch):
    """Saving over a checkpoint: the folder always holds a whole model (the new one is
    written beside it and exchanged with it in one rename), and nothing is left over."""
    from training import saving

    out = tmp_path / "model"
    train(tiny_encoder, corpus(), LABELS, out, config=FAST, progress=False)
    first = (out / METADATA_FILE).read_text()
    seen = []
    exchange = saving._exchange

    def watched(a, b):
        seen.append(((b / "config.json").is_file(), (a / "config.json").is_file()))
        swapped = exchange(a, b)
        seen.append(((b / "config.json").is_file(), read_metadata(b)["epochs_run"]))
        return swapped

    monkeypatch.setattr(saving, "_exchange", watched)
    config = TrainConfig(**{**FAST.__dict__, "epochs": 1})
    train(out, corpus(), LABELS, out, config=config, progress=False)
    if seen[-1][1] != 1:  # this file system cannot exchange: the fallback ran
        pytest.skip("renameat2(RENAME_EXCHANGE) is not supported here")
    assert seen == [(True, True), (True, 1)]
    assert (out / METADATA_FILE).read_text() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_training_refuses_to_overwrite_a_folder_that_is_not_a_checkpoint(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "keep.csv").write_text("1,2,3")
    with pytest.raises(ValueError, match="not a skillloop checkpoint"):
        train(None, corpus(), LABELS, folder, config=FAST, progress=False)
    assert (folder / "keep.csv").read_text() == "1,2,3"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        train(None, corpus(), LABELS, tmp_path / "file", config=FAST, progress=False)


def test_progress_callbacks_and_crf_gradients_are_clipped(tiny_encoder, tmp_path, monkeypatch):
    """on_step / on_epoch report progress (no tqdm patching), and the gradient clip bounds
    every parameter the optimizer updates, the CRF's transition scores included."""
    clipped = []
    clip = torch.nn.utils.clip_grad_norm_

    def spy(parameters, max_norm, *args, **kwargs):
        parameters = list(parameters)
        clipped.append({id(p) for p in parameters})
        return clip(parameters, max_norm, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    steps, epochs = [], []
    config = TrainConfig(**{**FAST.__dict__, "epochs": 2, "crf": True})
    result = train(
        tiny_encoder,
        corpus(),
        LABELS,
        tmp_path / "m",
        dev_docs=corpus()[:2],
        config=config,
        progress=False,
        on_step=lambda done, total: steps.append((done, total)),
        on_epoch=lambda epoch, loss, f1: epochs.append((epoch, loss, f1)),
    )
    total = steps[-1][1]
    assert steps == [(n, total) for n in range(1, total + 1)] and total == 4  # 5 docs / 4, x2
    assert [e[0] for e in epochs] == [1, 2] and [e[1] for e in epochs] == result.losses
    assert [e[2] for e in epochs] == result.dev_f1

    from training.crf import CRF

    crf_ids = {id(p) for p in CRF(["O", "B-X", "I-X"]).parameters()}
    assert crf_ids and len(clipped) == total
    # each clip saw the model's parameters plus the CRF's (3 tensors: start, transitions, end)
    sizes = {len(c) for c in clipped}
    model_params = len(
        list(checkpoint.load(tiny_encoder, LABELS, allow_new_labels=True).model.parameters())
    )
    assert sizes == {model_params + len(crf_ids)}


def test_early_stopping_keeps_the_best_epoch_and_stops_after_patience():
    from training.early_stopping import EarlyStopping

    model = torch.nn.Linear(2, 1)
    stopping = EarlyStopping(patience=2)
    decisions = []
    for epoch, f1 in enumerate([0.2, 0.5, 0.4, 0.45, 0.9], start=1):
        with torch.no_grad():
            model.weight.fill_(float(epoch))  # the weights of epoch n are all n
        decisions.append(stopping.update(epoch, f1, model, None))
        if decisions[-1]:
            break
    assert decisions == [False, False, False, True]  # two epochs without beating 0.5
    assert (stopping.best_epoch, stopping.best_f1) == (2, 0.5)
    stopping.restore(model)
    assert model.weight.eq(2.0).all()


def test_a_student_keeps_the_lower_encoder_layers_and_loads_with_them(tiny_encoder, tmp_path):
    from dataclasses import replace

    from transformers import AutoConfig

    from training.student import encoder_layers, truncate_encoder

    base = checkpoint.load(tiny_encoder, LABELS, allow_new_labels=True).model
    lowest = encoder_layers(base)[0]
    assert truncate_encoder(base, 0) == 2 and truncate_encoder(base, 5) == 2
    assert truncate_encoder(base, 1) == 1 and base.config.num_hidden_layers == 1
    assert list(encoder_layers(base)) == [lowest]  # the lowest block, as it was
    out = tmp_path / "student"
    config = replace(FAST, encoder_layers=1)
    result = train(tiny_encoder, corpus(), LABELS, out, dev_docs=corpus(), config=config)
    assert result.losses[-1] < result.losses[0]
    assert AutoConfig.from_pretrained(out).num_hidden_layers == 1
    assert read_metadata(out)["config"]["encoder_layers"] == 1
    loaded = checkpoint.load(out, LABELS)
    assert len(encoder_layers(loaded.model)) == 1
    tagger = Tagger.load(out, LABELS, quantize=False)
    assert len(tagger.predict(["we need python and sql"])[0].words) == 5
    with pytest.raises(ValueError, match="encoder_layers"):
        TrainConfig(encoder_layers=-1)


def test_a_distilled_student_is_cut_but_its_teachers_keep_every_layer(tiny_encoder, tmp_path):
    from dataclasses import replace

    from transformers import AutoConfig

    from training.distill import train as distil

    config = replace(FAST, epochs=1, teachers=1, encoder_layers=1)
    out = tmp_path / "student"
    distil(tiny_encoder, corpus(), LABELS, out, dev_docs=corpus(), config=config, progress=False)
    [teacher] = read_metadata(out)["distillation"]["teachers"]
    assert AutoConfig.from_pretrained(teacher["path"]).num_hidden_layers == 2
    assert AutoConfig.from_pretrained(out).num_hidden_layers == 1


def test_dev_only_after_the_last_epoch_keeps_the_last_epoch(tiny_encoder, tmp_path, monkeypatch):
    """dev_every_epoch=False: one dev pass, after the last epoch, whatever the patience."""
    from training import finetune

    passes = []
    real = finetune.dev_f1
    monkeypatch.setattr(finetune, "dev_f1", lambda run, docs: passes.append(1) or real(run, docs))
    epochs = []
    config = TrainConfig(**{**FAST.__dict__, "epochs": 3, "patience": 1, "dev_every_epoch": False})
    result = train(
        tiny_encoder, corpus(), LABELS, tmp_path / "m", dev_docs=corpus()[:2], config=config,
        progress=False, on_epoch=lambda epoch, loss, f1: epochs.append((epoch, f1)),
    )  # fmt: skip
    assert len(passes) == 1 and [e[0] for e in epochs] == [1, 2, 3]
    assert [e[1] is None for e in epochs] == [True, True, False]
    assert result.epochs_run == 3 and result.best_epoch == 3
    assert result.dev_f1 == [epochs[-1][1]] and result.best_dev_f1 == epochs[-1][1]
    assert read_metadata(tmp_path / "m")["config"]["dev_every_epoch"] is False
