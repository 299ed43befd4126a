"""Which tagger to load, and how: a `TaggerSpec`, the one value that says it.

A project builds its own (`labeling.project.Project.tagger_spec`: its base model or a
checkpoint of its registry, its labels and `[model] label_map`, its window), the CLI one
from its flags, a round one per model it scores; bulk prediction pickles one to its
worker processes. `load` is the one call into `training.tagger.Tagger.load`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from training.windows import WINDOWS, WindowConfig

if TYPE_CHECKING:
    from training.tagger import Tagger


@dataclass(frozen=True)
class TaggerSpec:
    """What `Tagger.load` takes, as a plain (picklable) value."""

    source: str | None  # a checkpoint folder or hub name; None: the offline backbone
    labels: list[str]
    label_map: dict[str, str] | None = None  # the checkpoint's tag types -> labels
    window: WindowConfig = WINDOWS  # how long posts are cut
    precision: str = "auto"  # training.precision.PRECISIONS
    quantize: bool | None = None  # False: fp32, True: "auto" (Tagger.load)

    def load(self, **options) -> Tagger:
        """The tagger; `options` are Tagger.load's others (num_threads, decoding, ...).
        Raises `training.checkpoint.CheckpointError` when the model cannot serve the labels."""
        from training.tagger import Tagger

        return Tagger.load(
            self.source,
            self.labels,
            self.label_map,
            window=self.window,
            precision=self.precision,
            quantize=self.quantize,
            **options,
        )

    def at(self, source: str | Path | None) -> TaggerSpec:
        """The same labels, mapping, window and precision for another checkpoint."""
        return replace(self, source=None if source is None else str(source))
