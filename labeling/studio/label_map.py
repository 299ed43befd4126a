"""Label names between a Label Studio labeling config and a project: the model's labels ->
the config's label values (`label_names`), and back (`project_labels`). A config whose
labels the project cannot map raises ConfigError (the HTTP layer answers 422)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from labeling.studio.config import ConfigError, LabelingConfig, map_model_labels

if TYPE_CHECKING:
    from labeling.project import Project


def label_names(labeling: LabelingConfig, project: Project) -> dict[str, str]:
    """The model's (project) label -> the request config's label value.

    Configs written for other backends name the checkpoint's tag types instead
    (`predicted_values="BUS"`); those are read through the project's label map.
    """
    labels = [label.value for label in project.labels]
    try:
        return map_model_labels(labeling, labels)
    except ConfigError as first:
        aliases: dict[str, str] = {}
        for label in project.labels:
            for alias in label.predicted_values:
                aliases.setdefault(alias, label.value)
        for tag_type, mapped in project.model.label_map.items():
            aliases.setdefault(tag_type, mapped)
        try:
            by_alias = map_model_labels(labeling, list(aliases))
        except ConfigError:
            raise first from None
        return {aliases[alias]: value for alias, value in by_alias.items()}


def project_labels(labeling: LabelingConfig, project: Project) -> dict[str, str]:
    """The request config's label value -> the project's label: `label_names` read
    backwards, so annotations from a Label Studio project that names its labels (or its
    `<Labels>` tag) differently are stored under the project's labels. ConfigError when
    the config has labels the project does not know."""
    return {value: label for label, value in label_names(labeling, project).items()}
