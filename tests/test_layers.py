"""Label layers (training.layers): a layered tiny model trains, saves, loads and predicts
overlapping spans of two layers; evaluation is per layer against the full gold."""

import pytest
import torch

from training import checkpoint
from training.checkpoint import read_metadata
from training.datasets import all_spans, read_jsonl, write_jsonl
from training.evaluate import evaluate
from training.finetune import TrainConfig, train
from training.layers import (
    HEADS_FILE,
    LayeredTokenClassifier,
    check_layers,
    layer_documents,
    pack_targets,
    unpack_targets,
)
from training.tagger import Tagger
from training.text import Document, Span

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
    max_tokens=16,
    stride=4,
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
