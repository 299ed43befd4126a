"""The trainer's speed options: frozen weights stay as loaded, the rest still learns."""

import pytest
import torch
from test_finetune import FAST, LABELS, corpus

from training import checkpoint
from training.finetune import train
from training.freezing import is_frozen
from training.train_config import TrainConfig


def test_which_weights_a_setting_freezes():
    settings = TrainConfig(freeze_embeddings=True, freeze_layers=2, freeze_epochs=1)
    word = "bert.embeddings.word_embeddings.weight"
    position = "bert.embeddings.position_embeddings.weight"
    low, high = (
        "bert.encoder.layer.1.output.dense.weight",
        "bert.encoder.layer.2.output.dense.weight",
    )
    assert [is_frozen(n, settings, 1) for n in (word, position, low, high)] == [
        True,
        True,
        True,
        False,
    ]
    # after the frozen epochs only the word embeddings stay fixed
    assert [is_frozen(n, settings, 2) for n in (word, position, low, high)] == [
        True,
        False,
        False,
        False,
    ]
    assert not is_frozen("distilbert.transformer.layer.0.ffn.lin1.weight", TrainConfig(), 1)
    assert is_frozen("distilbert.transformer.layer.0.ffn.lin1.weight", settings, 1)
    assert not is_frozen("classifier.weight", settings, 1)


def weights(folder) -> dict[str, torch.Tensor]:
    return checkpoint.load(folder, LABELS, allow_new_labels=True).model.state_dict()


def test_frozen_weights_are_saved_as_loaded_and_the_rest_learns(tiny_encoder, tmp_path):
    config = TrainConfig(
        **{**FAST.__dict__, "epochs": 2, "freeze_embeddings": True, "freeze_layers": 1}
    )
    config.freeze_epochs = 2  # the lowest block stays fixed for the whole (2-epoch) run
    result = train(tiny_encoder, corpus(), LABELS, tmp_path / "m", config=config, progress=False)
    assert result.losses[-1] < result.losses[0]
    before, after = weights(tiny_encoder), weights(tmp_path / "m")
    word = next(k for k in before if "word_embeddings" in k)
    low = next(k for k in before if ".layer.0." in k and k.endswith("dense.weight"))
    high = next(k for k in before if ".layer.1." in k and k.endswith("dense.weight"))
    assert torch.equal(before[word], after[word])
    assert torch.equal(before[low], after[low])
    assert not torch.equal(before[high], after[high])


def test_layers_thaw_after_the_frozen_epochs(tiny_encoder, tmp_path):
    config = TrainConfig(**{**FAST.__dict__, "epochs": 2, "freeze_layers": 1, "freeze_epochs": 1})
    train(tiny_encoder, corpus(), LABELS, tmp_path / "m", config=config, progress=False)
    before, after = weights(tiny_encoder), weights(tmp_path / "m")
    low = next(k for k in before if ".layer.0." in k and k.endswith("dense.weight"))
    assert not torch.equal(before[low], after[low])


def test_cosine_schedule_learns_and_unknown_schedules_are_refused(tiny_encoder, tmp_path):
    config = TrainConfig(**{**FAST.__dict__, "schedule": "cosine"})
    result = train(tiny_encoder, corpus(), LABELS, tmp_path / "m", config=config, progress=False)
    assert result.losses[-1] < result.losses[0]
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="step")
