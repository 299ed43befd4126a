"""Label layers (training.layers): a layered tiny model trains, saves, loads and predicts
overlapping spans of two layers; evaluation is per layer against the full gold."""

import pytest
import torch

from labeling.curation.export import gold_posts, snap
from labeling.curation.formats import write_format
from training import checkpoint
from training.checkpoint import read_metadata
from training.datasets import all_spans, read_conll, read_jsonl, write_conll, write_jsonl
from training.evaluate import evaluate
from training.finetune import train
from training.layers import (
    HEADS_FILE,
    LayeredTokenClassifier,
    layer_documents,
    pack_targets,
    unpack_targets,
)
from training.tagger import Tagger
from training.text import Document, Span, check_layers
from training.train_config import TrainConfig
from training.windows import WindowConfig

LABELS = ["Skill", "Knowledge"]
LAYERS = [["Skill"], ["Knowledge"]]


def nested(text: str, skill: str, knowledge: str) -> Document:
    """A post whose Knowledge span lies inside its Skill span."""
    s, k = text.index(skill), text.index(knowledge)
    return Document(
        text, [Span(s, s + len(skill), "Skill"), Span(k, k + len(knowledge), "Knowledge")]
    )


def corpus() -> list[Document]:
    return [
        nested("we need data analysis in python and sql", "data analysis in python", "python"),
        nested("experience with machine learning in java", "machine learning in java", "java"),
        nested("the team work on docker and kubernetes", "work on docker", "docker"),
        Document("a senior data engineer for the team", []),
    ]


FAST = TrainConfig(
    epochs=25,
    learning_rate=5e-3,
    batch_size=2,
    window=WindowConfig(16, 4),
    warmup_ratio=0.0,
    patience=50,
    layers=LAYERS,
)


def test_layers_must_hold_every_label_once():
    assert check_layers(LAYERS, LABELS) == LAYERS
    with pytest.raises(ValueError, match="exactly once"):
        check_layers([["Skill"], ["Skill", "Knowledge"]], LABELS)
    with pytest.raises(ValueError, match="exactly once"):
        check_layers([["Skill"]], LABELS)
    with pytest.raises(ValueError, match="no labels"):
        check_layers([["Skill", "Knowledge"], []], LABELS)


def test_targets_pack_one_tag_per_layer_and_unpack():
    packed = pack_targets([[-100, 0, 1, 2], [-100, 2, 0, 1]], [3, 3])
    assert packed == [-100, 6, 1, 5]
    skill, knowledge = unpack_targets(torch.tensor([packed]), [3, 3])
    assert skill.tolist() == [[-100, 0, 1, 2]] and knowledge.tolist() == [[-100, 2, 0, 1]]


def test_a_flattened_document_keeps_both_layers_for_training(tmp_path):
    # reading flattens (a longer Skill span wins); each layer still sees its full gold
    path = tmp_path / "docs.jsonl"
    write_jsonl(corpus(), path)
    doc = read_jsonl(path)[0]
    assert [s.label for s in doc.spans] == ["Skill"]  # the nested Knowledge span dropped ...
    knowledge = layer_documents([doc], ["Knowledge"])[0]
    assert [(s.text or doc.text[s.start : s.end]) for s in knowledge.spans] == ["python"]
    assert len(all_spans(doc)) == 2  # ... but kept in meta


@pytest.fixture(scope="module")
def layered_model(tiny_encoder, tmp_path_factory):
    out = tmp_path_factory.mktemp("layered") / "model"
    docs = corpus()
    result = train(tiny_encoder, docs, LABELS, out, dev_docs=docs, config=FAST, progress=False)
    return out, result


def test_a_layered_model_trains_saves_loads_and_predicts_overlapping_spans(layered_model):
    out, result = layered_model
    assert result.losses[-1] < 0.5 * result.losses[0]
    assert (out / HEADS_FILE).is_file() and "crf" not in read_metadata(out)
    assert read_metadata(out)["config"]["layers"] == LAYERS
    loaded = checkpoint.load(out, LABELS)
    assert loaded.layers == LAYERS and loaded.new_tags == []
    assert isinstance(loaded.model, LayeredTokenClassifier) and loaded.model.crfs is not None
    assert all(t is not None for t in loaded.layer_transitions or [])
    tagger = Tagger.load(out, LABELS, quantize=False)
    assert tagger.layered is not None and tagger.layered.layers == LAYERS
    text = corpus()[0].text
    prediction = tagger.predict([text])[0]
    found = {(text[s.start : s.end], s.label) for s in prediction.spans}
    assert ("data analysis in python", "Skill") in found
    assert ("python", "Knowledge") in found
    assert all(0.0 < s.score <= 1.0 for s in prediction.spans)
    assert prediction.probs.shape == (len(prediction.words), 5)
    assert prediction.probs.sum(axis=1) == pytest.approx(1.0, abs=1e-4)
    hidden = tagger.predict([text], hidden=True)[0].hidden
    assert hidden is not None and hidden.shape == (len(prediction.words), 32)


@pytest.mark.parametrize("precision", ["bf16", "int8", "onnx-int8", "onnx-fused-int8"])
def test_a_layered_model_serves_in_other_precisions(layered_model, precision):
    out, _ = layered_model
    tagger = Tagger.load(out, LABELS, precision=precision)
    assert tagger.layered is not None and tagger.precision == precision
    assert (tagger.runtime is not None) == precision.startswith("onnx")
    text = corpus()[0].text
    labels = {s.label for s in tagger.predict([text])[0].spans}
    assert labels == {"Skill", "Knowledge"}


@pytest.mark.parametrize("precision", ["onnx", "onnx-fused"])
def test_a_layered_model_in_onnx_runtime_predicts_as_in_torch(layered_model, precision):
    # the exported graph's logits are both heads side by side; each layer's softmax, CRF
    # decoding and scores are the torch model's
    out, _ = layered_model
    torch_tagger = Tagger.load(out, LABELS, quantize=False)
    onnx_tagger = Tagger.load(out, LABELS, precision=precision)
    assert onnx_tagger.runtime is not None and onnx_tagger.precision == precision
    texts = [d.text for d in corpus()]
    assert onnx_tagger.layered is not None and torch_tagger.layered is not None
    got = onnx_tagger.layered.predict_layers(texts, hidden=True)
    want = torch_tagger.layered.predict_layers(texts, hidden=True)
    for layer_got, layer_want in zip(got, want, strict=True):
        for g, w in zip(layer_got, layer_want, strict=True):
            assert g.tags == w.tags and g.word_tags == w.word_tags
            assert g.probs == pytest.approx(w.probs, abs=1e-4)
            assert g.hidden == pytest.approx(w.hidden, abs=1e-3)
            assert [s.key() for s in g.spans] == [s.key() for s in w.spans]
            assert [s.score for s in g.spans] == pytest.approx([s.score for s in w.spans], abs=1e-4)
    merged = onnx_tagger.predict(texts)
    assert [[s.key() for s in p.spans] for p in merged] == [
        [s.key() for s in p.spans] for p in torch_tagger.predict(texts)
    ]
    assert any(s.label == "Knowledge" for s in merged[0].spans)


def test_layered_evaluation_scores_each_layer_against_the_full_gold(layered_model):
    out, result = layered_model
    tagger = Tagger.load(out, LABELS, quantize=False)
    report = evaluate(tagger, corpus())
    assert report.layer_names == ["layer Skill", "layer Knowledge"]
    # the nested Knowledge spans count as gold: 3 of them, though flattening drops them
    assert report.entity["Knowledge"].support == 3
    assert report.entity["Skill"].support == 3
    assert report.f1 == pytest.approx(result.best_dev_f1)
    assert report.entity["Knowledge"].f1 == 1.0 and report.entity["Skill"].f1 == 1.0
    assert "layer Knowledge" in report.table()


def test_a_single_layer_is_the_flat_tagger(tiny_encoder, tmp_path):
    config = TrainConfig(**{**FAST.__dict__, "epochs": 1, "layers": [LABELS]})
    out = tmp_path / "flat"
    train(tiny_encoder, corpus(), LABELS, out, config=config, progress=False)
    assert not (out / HEADS_FILE).exists()
    tagger = Tagger.load(out, LABELS, quantize=False)
    assert tagger.layered is None and checkpoint.load(out, LABELS).layers is None


# ---------------------------------------------------------------- CoNLL, one column per layer


def test_conll_with_a_tag_column_per_layer_round_trips_overlaps(tmp_path):
    path = tmp_path / "layers.conll"
    write_conll(corpus(), path, LAYERS)
    lines = path.read_text().splitlines()
    assert "python\tB-Skill\tB-Knowledge" not in lines  # python is inside the Skill span
    assert "python\tI-Skill\tB-Knowledge" in lines
    back = read_conll(path)
    assert [d.text for d in back] == [d.text for d in corpus()]
    assert [[s.key() for s in all_spans(d)] for d in back] == [
        [s.key() for s in all_spans(d)] for d in corpus()
    ]
    with pytest.raises(ValueError, match="none of the layers"):
        write_conll(corpus(), tmp_path / "x.conll", [["Skill"], ["Other"]])


def test_skillspan_two_columns_round_trip(skillspan_dir, tmp_path):
    source = skillspan_dir / "skillspan_tech_dev.conll"
    original = read_conll(source)
    assert any(d.meta.get("dropped") for d in original)  # it has nested spans
    path = tmp_path / "skillspan_tech_dev.conll"
    write_conll(original, path, LAYERS)
    back = read_conll(path)
    # the file's own tokens are written ("<ORGANIZATION>" stays one): same texts, every
    # span of both layers back, and the same rows, column by column
    assert [d.text for d in back] == [d.text for d in original]
    assert [[s.key() for s in all_spans(d)] for d in back] == [
        [s.key() for s in all_spans(d)] for d in original
    ]

    def rows(file):
        lines = file.read_text(encoding="utf-8").splitlines()
        return [line.split() for line in lines if line.strip() and not line.startswith("-DOC")]

    assert rows(path) == rows(source)


def test_export_keeps_overlaps_across_layers_only(tmp_path):
    text = "we need data analysis in python"
    spans = [
        Span(8, 31, "Skill"),
        Span(25, 31, "Knowledge"),
        Span(8, 21, "Skill"),  # inside the other Skill span: the same layer, resolved
    ]
    assert [s.key() for s in snap(text, spans)] == [(8, 31, "Skill")]
    assert [s.key() for s in snap(text, spans, LAYERS)] == [(8, 31, "Skill"), (25, 31, "Knowledge")]
    doc = read_jsonl_one(tmp_path, Document(text, spans[:2]))
    (post,) = gold_posts([doc], LAYERS)
    assert len(post.spans) == 2  # reading dropped the nested span; the layers restore it
    written = write_format({"train": [post]}, tmp_path, "conll", LABELS, LAYERS)
    assert "python\tI-Skill\tB-Knowledge" in written[0].read_text()


def read_jsonl_one(folder, doc: Document) -> Document:
    path = folder / "one.jsonl"
    write_jsonl([doc], path)
    return read_jsonl(path)[0]


# ---------------------------------------------------------------- Label Studio /predict


def biased_layered_model(encoder, folder):
    """A layered tiny model whose Skill head reads every post as one Skill span (I-Skill
    likeliest, and a span must open with B-) and whose Knowledge head tags every word
    B-Knowledge: each Knowledge region lies inside the Skill region."""
    from training.saving import save

    loaded = checkpoint.load(encoder, LABELS, allow_new_labels=True, layers=LAYERS, crf=False)
    skill, knowledge = loaded.model.heads
    with torch.no_grad():
        for head in (skill, knowledge):
            head.weight.zero_()
            head.bias.fill_(-10.0)
        skill.bias[1], skill.bias[2] = 0.0, 5.0  # B-Skill, I-Skill
        knowledge.bias[1] = 10.0  # B-Knowledge
    save(loaded.model, loaded.tokenizer, folder, {"labels": LABELS})
    return folder


def test_predict_returns_overlapping_skill_and_knowledge_regions(tiny_encoder, tmp_path):
    from backend.service.app import create_app
    from backend.service.config import ServiceConfig

    model = biased_layered_model(tiny_encoder, tmp_path / "layered")
    project = tmp_path / "project"
    project.mkdir()
    (project / "project.toml").write_text(
        '[project]\nname = "layered"\n\n[[labels]]\nvalue = "Skill"\n\n'
        '[[labels]]\nvalue = "Knowledge"\n\n'
        f'[model]\nbase = "{model}"\nlayers = [["Skill"], ["Knowledge"]]\n'
        "max_tokens = 48\nstride = 8\n\n[retrain]\nevery_n_annotations = 0\n"
    )
    app = create_app(
        ServiceConfig(project=str(project), state_dir=tmp_path / "state", background_load=False)
    )
    app.testing = True
    try:
        text = "data analysis in python"
        body = {"tasks": [{"id": 1, "data": {"text": text}}]}
        reply = app.test_client().post("/predict", json=body)
        assert reply.status_code == 200, reply.get_json()
        (result,) = reply.get_json()["results"]
    finally:
        app.extensions["skillloop"].close()
    regions = [(r["value"]["text"], r["value"]["labels"]) for r in result["result"]]
    assert ("data analysis in python", ["Skill"]) in regions
    knowledge = [t for t, labels in regions if labels == ["Knowledge"]]
    assert knowledge == ["data", "analysis", "in", "python"]  # each inside the Skill region
    assert all(0.0 <= r["score"] <= 1.0 for r in result["result"])


# ---------------------------------------------------------------- the CLI


def test_cli_trains_calibrates_and_evaluates_per_layer(tiny_encoder, tmp_path, capsys):
    from backend.cli import main

    data = tmp_path / "train.jsonl"
    write_jsonl(corpus(), data)
    out = tmp_path / "model"
    fast = ["--epochs", "2", "--lr", "3e-3", "--batch-size", "2", "--max-tokens", "16"]
    args = ["train", "--data", str(data), "--dev", str(data), "--out", str(out), *fast]
    bad = ["--layers", "Skill", "Knowledge+Skill"]
    assert main([*args, "--base", str(tiny_encoder), "--no-progress", *bad]) == 2
    assert "exactly once" in capsys.readouterr().err
    layers = ["--layers", "Skill", "Knowledge"]
    assert main([*args, "--base", str(tiny_encoder), "--no-progress", *layers]) == 0
    printed = capsys.readouterr().out
    assert "calibrated on 4 dev posts: temperature " in printed
    calibration = read_metadata(out)["calibration"]
    assert len(calibration["temperatures"]) == 2 and len(calibration["layers"]) == 2
    assert checkpoint.load(out, LABELS).layer_temperatures == calibration["temperatures"]
    assert main(["evaluate", "--model", str(out), "--data", str(data), "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "label layers [['Skill'], ['Knowledge']]" in table
    knowledge = next(line for line in table.splitlines() if line.startswith("Knowledge"))
    assert knowledge.split()[-1] == "3"  # its support: the nested spans reading dropped


def test_a_flat_checkpoint_is_the_base_of_a_layered_model(tiny_reference_model, tmp_path):
    # a project that turns layers on: its next round starts from the flat model's encoder
    config = TrainConfig(**{**FAST.__dict__, "epochs": 1})
    out = tmp_path / "from-flat"
    train(tiny_reference_model, corpus(), LABELS, out, config=config, progress=False)
    loaded = checkpoint.load(out, LABELS)
    assert loaded.layers == LAYERS and loaded.model.encoder.config.model_type == "distilbert"
    with pytest.raises(checkpoint.CheckpointError, match="exactly once"):
        checkpoint.load(out, ["Skill", "Knowledge", "Soft"])
