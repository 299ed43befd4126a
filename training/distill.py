"""Distillation: train several teachers, then the one student that serves, on the
teachers' averaged per-word tag probabilities mixed with the gold tags.

`train` is `training.finetune.train` when the config names no teachers; otherwise it
trains `config.teachers` models from the same base with seeds `seed+1`, `seed+2`, ...,
one model from each of `config.teacher_bases` (another backbone or checkpoint: a hub
name such as a JobBERT for a user who is online), takes `config.teacher_checkpoints` as
they are, reads every training document with each teacher
(`training.soft_targets.teacher_marginals`) and trains the student from the base with
the soft loss at `config.distil_weight`. Teachers trained here are kept beside the
student, in `<out_dir>-teachers/` (`teacher_dir`), and the student's `skillloop.json`
names them with their dev F1 under "distillation" (a round trains them in its round
folder and removes them after the student: `keep_teachers`). Flat models only: label layers are
refused before any work.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from training import checkpoint
from training import finetune as fit  # fit.train looked up at call time (tests patch it)
from training.finetune import StepCallback, TrainResult
from training.layers import saved_layers
from training.soft_targets import teacher_marginals
from training.text import Document, tag_names
from training.train_config import TrainConfig

LAYERS_REFUSED = "distillation supports flat models only: drop the label layers or the teachers"


def distils(config: TrainConfig) -> bool:
    """Whether `config` asks for teachers."""
    return bool(config.teachers or config.teacher_bases or config.teacher_checkpoints)


def check_distillation(config: TrainConfig) -> None:
    """ValueError (one line) for what distillation cannot do, before any training."""
    if not distils(config):
        return
    if len(config.layers) > 1:
        raise ValueError(LAYERS_REFUSED)
    from transformers import AutoConfig

    for path in config.teacher_checkpoints:
        if not Path(path).is_dir():
            raise ValueError(f"teacher checkpoint {path} is not a folder")
        if saved_layers(AutoConfig.from_pretrained(path)):
            raise ValueError(f"teacher {path} is layered: {LAYERS_REFUSED}")


def teacher_dir(out_dir: str | Path) -> Path:
    """Where the teachers trained for the student at `out_dir` are kept."""
    out_dir = Path(out_dir)
    return out_dir.with_name(f"{out_dir.name}-teachers")


def teacher_plan(base: str | Path | None, config: TrainConfig) -> list[tuple[str | None, int]]:
    """(base, seed) of each teacher to train: the seeds first, then the other bases."""
    seeds = [
        (None if base is None else str(base), config.seed + k + 1) for k in range(config.teachers)
    ]
    return seeds + [(other, config.seed) for other in config.teacher_bases]


def train(
    base: str | Path | None,
    train_docs: Sequence[Document],
    labels: Sequence[str],
    out_dir: str | Path,
    dev_docs: Sequence[Document] | None = None,
    config: TrainConfig | None = None,
    label_map: Mapping[str, str] | None = None,
    progress: bool = True,
    on_step: StepCallback | None = None,
    teachers_in: Path | None = None,
    keep_teachers: bool = True,
    **options,
) -> TrainResult:
    """`training.finetune.train`, with teachers when `config` names them (module doc).

    Teachers are trained into `teachers_in` (None: `teacher_dir(out_dir)`) and, unless
    `keep_teachers`, removed once the student is saved (a round keeps only its candidate).
    """
    config = config or TrainConfig()
    if not distils(config):
        return fit.train(
            base, train_docs, labels, out_dir, dev_docs, config, label_map, progress,
            on_step=on_step, **options,
        )  # fmt: skip
    check_distillation(config)
    plan = teacher_plan(base, config)
    n_models = len(plan) + 1  # progress: every model's steps count alike

    def stage(k: int) -> StepCallback | None:
        if on_step is None:
            return None
        return lambda done, total: on_step(k * total + done, n_models * total)

    # teachers keep every encoder layer: `encoder_layers` makes the student smaller
    plain = replace(config, teachers=0, teacher_bases=[], teacher_checkpoints=[], encoder_layers=0)
    trained: list[dict] = []
    for k, (teacher_base, seed) in enumerate(plan):
        folder = (teachers_in or teacher_dir(out_dir)) / f"teacher-{k + 1}"
        result = fit.train(
            teacher_base, train_docs, labels, folder, dev_docs, replace(plain, seed=seed),
            label_map, progress, on_step=stage(k),
        )  # fmt: skip
        trained.append(
            {"path": str(folder), "base": teacher_base, "seed": seed, "dev_f1": result.best_dev_f1}
        )
    teachers = [t["path"] for t in trained] + list(config.teacher_checkpoints)
    # every teacher predicts the labels as they are (a given checkpoint must hold them)
    soft = teacher_marginals(teachers, train_docs, list(labels), tag_names(list(labels)))
    result = fit.train(
        base, train_docs, labels, out_dir, dev_docs, config, label_map, progress,
        on_step=stage(n_models - 1), soft_targets=soft, **options,
    )  # fmt: skip
    result.teachers = trained + [{"path": str(p)} for p in config.teacher_checkpoints]
    if not keep_teachers:
        shutil.rmtree(teachers_in or teacher_dir(out_dir), ignore_errors=True)
    record = {"teachers": result.teachers, "weight": config.distil_weight}
    note_teachers(result.path, {**record, "teachers_kept": keep_teachers})
    return result


def note_teachers(folder: Path, record: dict) -> None:
    """Add the teachers to the student's `skillloop.json` (under "distillation")."""
    path = Path(folder) / checkpoint.METADATA_FILE
    if not path.is_file():  # a data-parallel helper process saves nothing
        return
    metadata = json.loads(path.read_text(encoding="utf-8"))
    metadata["distillation"] = record
    path.write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
