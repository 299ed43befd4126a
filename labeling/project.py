"""A labeling project: `projects/NAME/project.toml` plus its `labeling_config.xml`.

The project folder is configuration under version control; everything a project
produces at run time (annotations, model versions, reports) lives in its state folder,
`<state base>/<name>` (the base: labeling/state.py), never in the source tree.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from labeling.studio.config import LabelingConfig, LabelSpec, build_config, parse_config
from training.tagger_spec import TaggerSpec
from training.text import Document, check_layers, is_layered
from training.windows import WINDOW_KEYS, WINDOWS, WindowConfig

PROJECT_FILE = "project.toml"
CONFIG_FILE = "labeling_config.xml"
PROJECTS_DIR = Path("projects")
# the checkout skillloop runs from: its projects/ are found from any working directory
REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(slots=True)
class ProjectLabel:
    value: str
    background: str = ""
    predicted_values: list[str] = field(default_factory=list)
    guideline: str = ""
    examples: list[str] = field(default_factory=list)
    counter_examples: list[str] = field(default_factory=list)

    def spec(self) -> LabelSpec:
        return LabelSpec(self.value, self.background, tuple(self.predicted_values))


@dataclass(slots=True)
class ModelSettings:
    base: str = "backbone"  # "backbone", a checkpoint folder (relative to the project) or hub name
    label_map: dict[str, str] = field(default_factory=dict)  # model tag type -> project label
    # how the project's tagger cuts long posts: `max_tokens` (special tokens excluded) and
    # `stride` in project.toml's [model]
    window: WindowConfig = WINDOWS
    # label layers whose spans may overlap, e.g. [["Skill"], ["Knowledge"]]: one encoder,
    # one BIO head (and CRF) per layer (training.layers); [] is one flat layer
    layers: list[list[str]] = field(default_factory=list)


@dataclass(slots=True)
class RetrainSettings:
    every_n_annotations: int = 10  # new or changed annotations that trigger a round (0: never)
    debounce_seconds: float = 30.0  # quiet time after the last change before an auto round
    heldout_share: float = 0.2
    tolerance: float = 0.01  # how much held-out F1 a candidate may lose and still be promoted


@dataclass(slots=True)
class SelectionSettings:
    strategy: str = "mnlp"
    batch_size: int = 10


@dataclass(slots=True)
class LinkingSettings:
    taxonomy: str = ""  # "esco", or a CSV path relative to the project ("" = no linking)
    linker: str = "backbone"  # "backbone", or a linker folder relative to the project
    top_k: int = 5
    # taxonomy type -> project label, for the cold-start dictionary (training.dictionary):
    # e.g. ESCO { K = "Knowledge", S = "Skill", T = "Skill" }; empty: no dictionary
    types: dict[str, str] = field(default_factory=dict)


@dataclass
class Project:
    folder: Path
    name: str
    title: str
    description: str
    labels: list[ProjectLabel]
    labeling_config: str
    config: LabelingConfig
    model: ModelSettings
    training: dict  # TrainConfig keyword arguments
    retrain: RetrainSettings
    selection: SelectionSettings
    data: dict = field(default_factory=dict)  # posts, gold, import: paths relative to folder
    linking: LinkingSettings = field(default_factory=LinkingSettings)

    @property
    def label_values(self) -> list[str]:
        return [label.value for label in self.labels]

    def data_path(self, key: str) -> Path | None:
        """The file `[data] key` names, resolved against the project folder (None if unset)."""
        value = self.data.get(key)
        return None if not value else (self.folder / value).resolve()

    def posts(self) -> list[Document]:
        """The unlabelled posts to annotate (`[data] posts`, JSON lines id/title/text)."""
        from training.datasets import read_jsonl

        path = self.data_path("posts")
        if path is None:
            raise ValueError(f"project {self.name} has no [data] posts file")
        if not path.is_file():
            raise FileNotFoundError(f"project {self.name}: posts file not found: {path}")
        return read_jsonl(path)

    def gold(self) -> list[Document]:
        """Posts annotated outside Label Studio (`[data] gold`): [] while there are none.
        The file is JSONL (`{text, spans}`), CoNLL (a tag column per label layer, as
        SkillSpan ships it) or SkillSpan's JSON, read by `training.datasets.read_documents`.

        Gold posts are seed training data, so a missing file is not an error: a new project
        starts without any.
        """
        from training.datasets import read_documents

        path = self.data_path("gold")
        if path is None or not path.is_file():
            return []
        docs = read_documents(path)
        unknown = sorted({s.label for d in docs for s in d.spans} - set(self.label_values))
        if unknown:
            raise ValueError(f"{path}: labels {unknown} are not project labels")
        return docs

    def model_base(self) -> str | None:
        """`[model] base` as training.checkpoint understands it (a local folder resolved)."""
        base = self.model.base
        if base in ("", "backbone"):
            return None
        local = self.folder / base
        return str(local.resolve()) if local.exists() else base

    def tagger_spec(self, source: str | Path | None = None) -> TaggerSpec:
        """How to load the project's tagger: from `source` (a checkpoint folder: a registry
        version or `--model`), by default from `[model] base` (`model_base`), for the
        project's labels through `[model] label_map`, with its window."""
        return TaggerSpec(
            self.model_base() if source is None else str(source),
            self.label_values,
            dict(self.model.label_map) or None,
            self.model.window,
        )

    def train_config(self, **overrides):
        """The project's TrainConfig (`[training]` plus `[model]` windows), with overrides."""
        from training.train_config import TrainConfig

        known = TrainConfig.json_keys()
        raw = self.model.window.as_keys()
        raw.update({k: v for k, v in self.training.items() if k in known})
        if is_layered(self.model.layers):
            raw["layers"] = self.model.layers
        raw.update(overrides)
        return TrainConfig.from_json(raw)


def find_project_folder(folder_or_name: str | Path) -> Path:
    """The project folder for a path (absolute, or relative to the working directory, or
    to the repository as the README writes it: `projects/NAME`), a folder's project.toml,
    or a bare NAME under ./projects or the repository's projects/. So `--project
    linkedin-skills` works from any working directory."""
    path = Path(folder_or_name).expanduser()
    if path.name == PROJECT_FILE:
        path = path.parent
    candidates = [path]
    if not path.is_absolute():
        if len(path.parts) == 1:
            candidates += [PROJECTS_DIR / path, REPO_ROOT / PROJECTS_DIR / path]
        candidates.append(REPO_ROOT / path)
    for candidate in candidates:
        if (candidate / PROJECT_FILE).is_file():
            return candidate
    raise FileNotFoundError(
        f"project not found: {folder_or_name} (expected a folder with {PROJECT_FILE}, "
        f"or a name under ./{PROJECTS_DIR}/ or {REPO_ROOT / PROJECTS_DIR}/)"
    )


def load_project(folder_or_name: str | Path) -> Project:
    """Read and check a project folder. ValueError/FileNotFoundError name what is wrong."""
    folder = find_project_folder(folder_or_name).resolve()
    toml_path = folder / PROJECT_FILE
    try:
        raw = tomllib.loads(toml_path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{toml_path}: invalid TOML: {err}") from err
    head = raw.get("project") or {}
    name = head.get("name") or folder.name
    labels = [_label(entry, toml_path, n) for n, entry in enumerate(raw.get("labels") or [], 1)]
    if not labels:
        raise ValueError(f"{toml_path}: no [[labels]]")
    values = [label.value for label in labels]
    if len(set(values)) != len(values):
        raise ValueError(f"{toml_path}: duplicate label values {values}")

    config_path = folder / CONFIG_FILE
    if config_path.is_file():
        xml = config_path.read_text(encoding="utf-8")
    else:
        xml = build_config([label.spec() for label in labels])
    try:
        config = parse_config(xml)
    except ValueError as err:
        raise ValueError(f"{config_path}: {err}") from err
    if config.label_values != values:
        raise ValueError(
            f"{config_path} labels {config.label_values} differ from {PROJECT_FILE} "
            f"labels {values}: keep them the same, in the same order"
        )
    retrain = _section(RetrainSettings, raw.get("retrain"), toml_path, "retrain")
    model = _model_settings(raw.get("model"), toml_path)
    if model.layers:
        try:
            model.layers = check_layers(model.layers, values)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{toml_path}: [model] {err}") from None
    linking = _section(LinkingSettings, raw.get("linking"), toml_path, "linking")
    unknown_types = sorted(set(linking.types.values()) - set(values))
    if unknown_types:
        raise ValueError(f"{toml_path}: [linking] types maps to unknown labels {unknown_types}")
    return Project(
        folder=folder,
        name=name,
        title=head.get("title", name),
        description=head.get("description", ""),
        labels=labels,
        labeling_config=xml,
        config=config,
        model=model,
        training=dict(raw.get("training") or {}),
        retrain=_checked_retrain(retrain, toml_path),
        selection=_section(SelectionSettings, raw.get("selection"), toml_path, "selection"),
        data=dict(raw.get("data") or {}),
        linking=linking,
    )


def _label(entry: dict, path: Path, n: int) -> ProjectLabel:
    if not isinstance(entry, dict) or not str(entry.get("value", "")).strip():
        raise ValueError(f"{path}: label {n} needs a value")
    known = {f.name for f in fields(ProjectLabel)}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise ValueError(f"{path}: label {entry['value']!r} has unknown keys {unknown}")
    return ProjectLabel(**entry)


def _section(cls, values: dict | None, path: Path, name: str):
    values = dict(values or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{path}: [{name}] has unknown keys {unknown}; known: {sorted(known)}")
    return cls(**values)


def _model_settings(values: dict | None, path: Path) -> ModelSettings:
    """`[model]`, whose `max_tokens` and `stride` make the project's WindowConfig."""
    values = dict(values or {})
    known = {f.name for f in fields(ModelSettings)} - {"window"} | set(WINDOW_KEYS)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{path}: [model] has unknown keys {unknown}; known: {sorted(known)}")
    try:
        window = WindowConfig.take_keys(values)
    except ValueError as err:
        raise ValueError(f"{path}: [model] {err}") from err
    return ModelSettings(**values, window=window)


def _checked_retrain(retrain: RetrainSettings, path: Path) -> RetrainSettings:
    if not 0.0 <= retrain.heldout_share < 1.0:
        raise ValueError(f"{path}: [retrain] heldout_share must be in [0, 1)")
    if retrain.every_n_annotations < 0 or retrain.debounce_seconds < 0:
        raise ValueError(f"{path}: [retrain] every_n_annotations and debounce_seconds >= 0")
    return retrain
