"""How a tagger is fine-tuned: the one config `skillloop train`, project.toml's [training],
a round's spec and the trainer (`training.finetune`) share, with its JSON form."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from training.windows import WINDOW_KEYS, WINDOWS, WindowConfig

TRAIN_PRECISIONS = ("auto", "bf16", "fp32")
SCHEDULES = ("linear", "cosine")


@dataclass
class TrainConfig:
    """Defaults are the best recipe measured on SkillSpan (docs/training.md)."""

    epochs: int = 8
    learning_rate: float = 2e-4
    batch_size: int = 4  # windows per step: more, smaller steps beat 16 (docs/training.md)
    window: WindowConfig = WINDOWS  # how long documents are cut into training windows
    seed: int = 13
    patience: int = 2  # epochs without dev improvement before stopping
    # False: dev F1 only after the last epoch (no early stopping; the last epoch is kept),
    # which saves a dev pass per epoch on slow CPUs (docs/training.md)
    dev_every_epoch: bool = True
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    num_threads: int = 2
    max_grad_norm: float = 1.0
    decoding: str = "viterbi"  # how dev predictions are decoded (training.decoding)
    # "auto": bf16 autocast where the CPU computes bf16 natively (weights and optimizer
    # stay fp32; epochs about 2x faster on SkillSpan, docs/training.md), else fp32
    precision: str = "auto"
    # a linear-chain CRF over word tags, trained with the encoder (training.crf): +4.0
    # Skill / +2.0 Knowledge dev F1 on SkillSpan, mean of two seeds (docs/training.md);
    # its transition scores learn at their own rate, as they start from zero
    crf: bool = True
    crf_learning_rate: float = 1e-2
    # speed options for CPUs without native bf16 (training.freezing, docs/training.md)
    freeze_embeddings: bool = False  # word embeddings stay as pretrained, all epochs
    freeze_layers: int = 0  # embeddings and the lowest N blocks stay fixed ...
    freeze_epochs: int = 0  # ... during the first N epochs
    schedule: str = "linear"  # learning-rate decay after warm-up: "linear" or "cosine"
    # where to train (training.devices): "auto" is a CUDA GPU when present; accelerate
    # (also on under a multi-process `accelerate launch`) shares batches over the GPUs
    device: str = "auto"
    accelerate: bool = False
    # label layers whose spans may overlap (training.layers): one head (and CRF) per
    # layer; [] or a single layer is the flat tagger
    layers: list[list[str]] = field(default_factory=list)
    # a smaller student (training.student): only the base's lowest N encoder layers are
    # kept and fine-tuned (MiniLM's lower 3: about 1.6x faster prediction); 0 keeps all
    encoder_layers: int = 0
    # distillation (training.distill): train `teachers` models from the base (seeds
    # seed+1...), one from each of `teacher_bases`, take `teacher_checkpoints` as they
    # are, and mix KL to their averaged per-word probabilities into the loss by
    # `distil_weight` (training.soft_targets); flat models only
    teachers: int = 0
    teacher_bases: list[str] = field(default_factory=list)
    teacher_checkpoints: list[str] = field(default_factory=list)
    distil_weight: float = 0.5

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError("epochs, batch_size and learning_rate must be positive")
        if self.encoder_layers < 0:
            raise ValueError("encoder_layers must be positive (0 keeps every layer)")
        if self.teachers < 0 or not 0.0 <= self.distil_weight <= 1.0:
            raise ValueError("teachers must be at least 0 and distil_weight within [0, 1]")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}: choose one of {SCHEDULES}")
        if self.precision not in TRAIN_PRECISIONS:
            raise ValueError(
                f"unknown precision {self.precision!r}: choose one of {TRAIN_PRECISIONS}"
            )

    def to_json(self) -> dict:
        """The fields, the window as flat `max_tokens` and `stride` keys (as skillloop.json
        and a round's spec.json keep them)."""
        raw = asdict(self)
        del raw["window"]
        return {**raw, **self.window.as_keys()}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> TrainConfig:
        """The config `to_json` wrote, or any of its keys (defaults for the rest);
        TypeError for a key that `json_keys` lacks."""
        raw = dict(raw)
        window = WindowConfig.take_keys(raw)
        return cls(**raw, window=window)

    @classmethod
    def json_keys(cls) -> set[str]:
        """The keys `to_json` writes and `from_json` reads."""
        return {f.name for f in fields(cls)} - {"window"} | set(WINDOW_KEYS)
