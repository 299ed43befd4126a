"""What the parent hands the child process that trains a round: a `RoundSpec`, kept as
`spec.json` in the round folder (the child reads it, and so do recovery after a kill and
`skillloop status`), written and read by one pair of functions, `write_spec` / `read_spec`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from training.tagger_spec import TaggerSpec
from training.train_config import TrainConfig
from training.windows import WINDOWS, WindowConfig

SPEC_FILE = "spec.json"


@dataclass(frozen=True)
class Baseline:
    """The model a round's candidate must beat, scored on the same held-out posts."""

    version: str  # a registry version, or "base" (the project's base model)
    path: str | None
    label_map: dict[str, str] | None = None  # the base model's tag types -> project labels


@dataclass(frozen=True)
class RoundSpec:
    folder: Path  # the round folder: train.jsonl and heldout.jsonl in, result.json out
    base: str | None  # the checkpoint training starts from (None: the backbone)
    labels: list[str]
    out_dir: Path  # where the candidate checkpoint is saved
    label_map: dict[str, str] | None = None  # the base's tag types -> project labels
    config: TrainConfig = field(default_factory=TrainConfig)  # how the candidate trains
    window: WindowConfig = WINDOWS  # how the candidate and the baseline cut long posts
    quantize: bool | None = None  # how they load to be scored (None: the tagger's default)
    baseline: Baseline | None = None
    num_threads: int = 1
    nice: int = 10  # the child's nice value: the service's requests come first
    parent_pid: int | None = None  # the child exits when this process dies

    def tagger(self, source: str | Path | None, label_map=None) -> TaggerSpec:
        """How the candidate (`source`: `out_dir`) or the baseline loads to be scored."""
        path = None if source is None else str(source)
        return TaggerSpec(path, list(self.labels), label_map, self.window, quantize=self.quantize)


def write_spec(spec: RoundSpec) -> Path:
    """`spec.json` in the spec's round folder, replaced atomically."""
    raw = {
        "folder": str(spec.folder),
        "base": spec.base,
        "label_map": spec.label_map,
        "labels": list(spec.labels),
        "config": spec.config.to_json(),
        "tagger": _tagger_keys(spec),
        "out_dir": str(spec.out_dir),
        "baseline": None if spec.baseline is None else vars(spec.baseline),
        "num_threads": spec.num_threads,
        "nice": spec.nice,
        "parent_pid": spec.parent_pid,
    }
    path = Path(spec.folder) / SPEC_FILE
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    os.replace(temp, path)
    return path


def _tagger_keys(spec: RoundSpec) -> dict:
    """How spec.json keeps the tagger options: the window's flat keys, and `quantize`."""
    keys: dict = spec.window.as_keys()
    if spec.quantize is not None:
        keys["quantize"] = spec.quantize
    return keys


def read_spec(path: Path) -> RoundSpec:
    """The spec `write_spec` wrote (OSError, ValueError, KeyError or TypeError when it
    cannot be read)."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    baseline = raw.get("baseline")
    tagger = dict(raw.get("tagger") or {})
    return RoundSpec(
        folder=Path(raw["folder"]),
        base=raw["base"],
        labels=list(raw["labels"]),
        out_dir=Path(raw["out_dir"]),
        label_map=raw.get("label_map"),
        config=TrainConfig.from_json(raw.get("config") or {}),
        window=WindowConfig.take_keys(tagger),
        quantize=tagger.get("quantize"),
        baseline=Baseline(**baseline) if baseline else None,
        num_threads=int(raw.get("num_threads", 1)),
        nice=int(raw.get("nice", 10)),
        parent_pid=raw.get("parent_pid"),
    )
