"""Loading checkpoints: tags mapped onto the project's labels, clear errors otherwise."""

import pytest

from training.checkpoint import CheckpointError, load


def test_reference_tags_map_to_project_labels_in_project_order(
    tiny_reference_model, reference_label_map
):
    loaded = load(tiny_reference_model, ["Soft", "Technology"], reference_label_map)
    assert loaded.model.config.id2label == {
        0: "O",
        1: "B-Soft",
        2: "I-Soft",
        3: "B-Technology",
        4: "I-Technology",
    }
    assert loaded.new_tags == []


def test_labels_the_model_does_not_know_are_named(tiny_reference_model):
    with pytest.raises(CheckpointError, match=r"does not know the labels \['Skill'\]"):
        load(tiny_reference_model, ["Skill"])


def test_a_bare_encoder_needs_training_before_it_can_predict(tiny_encoder):
    with pytest.raises(CheckpointError, match="no BIO tagging head"):
        load(tiny_encoder, ["Skill"])
    assert load(tiny_encoder, ["Skill"], allow_new_labels=True).new_tags == [
        "O",
        "B-Skill",
        "I-Skill",
    ]


def test_missing_folders_get_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load("./no/such/model", ["Skill"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        load(tmp_path / "empty", ["Skill"])
