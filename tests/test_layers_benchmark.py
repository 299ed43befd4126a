"""benchmarks/layers_skillspan.py's options and its count of nested spans recovered."""

from __future__ import annotations

from types import SimpleNamespace

from benchmarks.layers_skillspan import LAYERS, build_parser, nested_recovered, train_config
from training.text import Document, Span


def test_the_short_schedule_flags_reach_the_train_config():
    args = build_parser().parse_args(["--epochs", "4", "--lr", "3e-4", "--no-dev-every-epoch"])
    config = train_config(args, LAYERS)
    assert (config.epochs, config.learning_rate, config.dev_every_epoch) == (4, 3e-4, False)
    assert config.layers == LAYERS and config.seed == 13


def test_without_flags_both_taggers_train_with_the_defaults():
    from training.train_config import TrainConfig

    config = train_config(build_parser().parse_args([]), [])
    assert config == TrainConfig(seed=13, num_threads=2, layers=[])
    assert config.dev_every_epoch is True


def test_one_of_the_two_taggers_can_be_run_alone():
    assert build_parser().parse_args([]).taggers == ["flat", "layered"]
    assert build_parser().parse_args(["--taggers", "layered"]).taggers == ["layered"]


def test_nested_recovered_counts_exact_predictions_of_dropped_spans():
    text = "build data pipelines in Python and SQL"
    doc = Document(
        text=text,
        spans=[Span(0, 38, "Skill")],
        meta={
            "dropped": [
                {"start": 24, "end": 30, "label": "Knowledge"},
                {"start": 35, "end": 38, "label": "Knowledge"},
            ]
        },
    )
    predicted = SimpleNamespace(
        spans=[Span(0, 38, "Skill"), Span(24, 30, "Knowledge"), Span(34, 38, "Knowledge")]
    )
    assert nested_recovered([doc], [predicted]) == {"Knowledge": {"nested": 2, "recovered": 1}}
