"""Label Studio labeling configs: reading the Labels/Text pair a project tags with, mapping
the model's labels onto the config's, and writing a config from a project's labels.

Names (from_name, to_name, the text field, label values) always come from the config,
never from the model: Label Studio stores whatever it is sent without validating it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import quoteattr


class ConfigError(ValueError):
    """A labeling config skillloop cannot tag with."""


@dataclass(frozen=True, slots=True)
class LabelSpec:
    """One `<Label>`: its value, colour and the model label names it stands for."""

    value: str
    background: str = ""
    predicted_values: tuple[str, ...] = ()


@dataclass(slots=True)
class LabelingConfig:
    from_name: str  # the <Labels> tag's name
    to_name: str  # the <Text> tag's name
    value_key: str  # the task data field holding the text ("text" for value="$text")
    labels: list[LabelSpec] = field(default_factory=list)
    # every control tag's name (tags with a toName): a region naming none of them is not
    # from this config, while one naming another tag (a Choices, a relation) is ignored
    control_names: tuple[str, ...] = ()
    # the per-region link control (a `<Choices perRegion="true" value="$field">` on the
    # text, docs/studio.md): its name and the task data field its candidates come from;
    # "" when the config has none (links are then neither sent nor read)
    link_from_name: str = ""
    link_choices_key: str = ""
    # the link control's companions (link_control_xml): a per-region `<Taxonomy
    # apiUrl="$field">` searching the whole taxonomy (the task data field holding its URL)
    # and a per-region `<TextArea name="<link>_new">` for an entry the taxonomy lacks
    link_search_name: str = ""
    link_search_key: str = ""
    link_new_name: str = ""

    @property
    def links(self) -> bool:
        return bool(self.link_from_name)

    @property
    def label_values(self) -> list[str]:
        return [label.value for label in self.labels]


def parse_config(xml: str) -> LabelingConfig:
    """The first `<Labels>` whose `toName` is a `<Text>` tag, with its labels."""
    if not isinstance(xml, str) or not xml.strip():
        raise ConfigError("the labeling config is empty")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as err:
        raise ConfigError(f"the labeling config is not valid XML: {err}") from err
    except UnicodeEncodeError:  # a lone surrogate: JSON can carry one, XML text cannot
        raise ConfigError("the labeling config is not valid XML: a lone surrogate") from None
    texts = {
        el.get("name"): el.get("value", "")
        for el in root.iter()
        if el.tag in ("Text", "HyperText") and el.get("name")
    }
    for el in root.iter("Labels"):
        to_name = el.get("toName", "")
        if to_name in texts and el.get("name"):
            value = texts[to_name]
            if not value.startswith("$") or len(value) < 2:
                raise ConfigError(f'<Text name="{to_name}"> needs value="$field", got {value!r}')
            labels = [_label_spec(label) for label in el.iter("Label")]
            labels = [label for label in labels if label.value]
            if not labels:
                raise ConfigError(f'<Labels name="{el.get("name")}"> has no <Label> values')
            controls = tuple(
                name for c in root.iter() if c.get("toName") and (name := c.get("name"))
            )
            link_name, link_key = _link_control(root, to_name)
            search_name, search_key = _link_search(root, to_name) if link_name else ("", "")
            new_name = f"{link_name}{NEW_SUFFIX}" if link_name else ""
            if not any(t.get("name") == new_name for t in root.iter("TextArea")):
                new_name = ""
            return LabelingConfig(
                el.get("name") or "",
                to_name,
                value[1:],
                labels,
                controls,
                link_name,
                link_key,
                search_name,
                search_key,
                new_name,
            )
    raise ConfigError("the labeling config has no <Labels> bound to a <Text> tag (toName)")


def _link_control(root: ET.Element, to_name: str) -> tuple[str, str]:
    """(name, data field) of the first per-region Choices on the text whose options come
    from the task's data (`value="$field"`): the control links are shown and read with."""
    for el in root.iter("Choices"):
        value = el.get("value", "")
        per_region = el.get("perRegion", el.get("perregion", "")).lower() == "true"
        if per_region and el.get("toName") == to_name and value.startswith("$") and el.get("name"):
            if len(value) < 2:
                raise ConfigError(f'<Choices name="{el.get("name")}"> needs value="$field"')
            return el.get("name") or "", value[1:]
    return "", ""


def _link_search(root: ET.Element, to_name: str) -> tuple[str, str]:
    """(name, data field) of the first per-region Taxonomy on the text whose items come
    from a URL in the task's data (`apiUrl="$field"`): the search of the whole taxonomy."""
    for el in root.iter("Taxonomy"):
        url = el.get("apiUrl", el.get("apiurl", ""))
        per_region = el.get("perRegion", el.get("perregion", "")).lower() == "true"
        if per_region and el.get("toName") == to_name and url.startswith("$") and len(url) > 1:
            return el.get("name") or "", url[1:]
    return "", ""


def _label_spec(el: ET.Element) -> LabelSpec:
    predicted = tuple(v.strip() for v in el.get("predicted_values", "").split(",") if v.strip())
    return LabelSpec(el.get("value", "").strip(), el.get("background", ""), predicted)


def map_model_labels(config: LabelingConfig, model_labels: Sequence[str]) -> dict[str, str]:
    """Model label -> config label value.

    The ecosystem's convention, in order: a Label's `predicted_values`, then an exact name
    match, then a case-insensitive one. Raises ConfigError when a config label has no model
    label: the model cannot pre-annotate it and would silently never suggest it.
    """
    exact = set(model_labels)
    folded = {m.lower(): m for m in model_labels}
    mapping: dict[str, str] = {}
    unknown = []
    for label in config.labels:
        candidates = [*label.predicted_values, label.value]
        match = next((c for c in candidates if c in exact), None)
        match = match or next((folded[c.lower()] for c in candidates if c.lower() in folded), None)
        if match is None:
            unknown.append(label.value)
        else:
            mapping.setdefault(match, label.value)
    if unknown:
        raise ConfigError(
            f"the model does not know the labels {unknown}; it knows {list(model_labels)}. "
            'Add predicted_values="MODEL_LABEL" to those <Label> tags or retrain.'
        )
    return mapping


# The link control's defaults and the choice that says the span has no taxonomy entry.
LINK_NAME = "link"
LINK_CHOICES_KEY = "link_choices"
SEARCH_SUFFIX = "_search"  # the Taxonomy search control: "<link>_search"
NEW_SUFFIX = "_new"  # the new-entry TextArea: "<link>_new"
LINK_SEARCH_KEY = "link_search"  # task data: the URL the search loads the taxonomy from
NO_MATCH = "no match"
# The candidates of every span of a post ride in the task; the per-task <style> that the
# options carry (labeling.studio.links) shows only the selected region's. This part of the
# style is the same for every task: candidates hidden unless their region is selected,
# laid out as a column with "no match" after them.
LINK_STYLE = (
    ".lsf-choices:not(.lsf-choices_hidden):has(.skl-link){display:flex;flex-direction:column}"
    ".lsf-choice:has(.skl-link){display:none}"
    '.lsf-choice:has(input[name="no match"]){order:1}'
)


def link_control_xml(
    to_name: str = "text", name: str = LINK_NAME, key: str = LINK_CHOICES_KEY
) -> str:
    """The per-region link controls, shown when a region is selected: its own candidates
    (task data `key`, written by the backend) best first, then "no match"; a search of
    the whole taxonomy (a per-region Taxonomy whose items the browser loads from the URL
    in task data `link_search`, served by the backend); a new entry typed in.

    Label Studio 1.23's editor takes dynamic choices from the task, not per region
    (`DynamicChildrenMixin`), so every candidate of the post is an option, and a `<style>`
    carried by the options (the editor renders an option's `html` unescaped apart from
    scripts) shows only those of the selected region: the region's highlight has the class
    `htx-highlight-<region id>-<n>` and `__active` while selected (docs/studio.md).
    """
    search, new = f"{name}{SEARCH_SUFFIX}", f"{name}{NEW_SUFFIX}"
    return (
        f"  <Style>{LINK_STYLE}</Style>\n"
        f'  <Header value="Taxonomy link of the selected span" size="6"/>\n'
        f'  <Choices name={quoteattr(name)} toName={quoteattr(to_name)} perRegion="true" '
        f'value="${key}" choice="single-radio">\n'
        f"    <Choice value={quoteattr(NO_MATCH)}/>\n"
        "  </Choices>\n"
        f"  <Taxonomy name={quoteattr(search)} toName={quoteattr(to_name)} "
        f'perRegion="true" apiUrl="${LINK_SEARCH_KEY}" maxUsages="1" '
        'placeholder="Search the whole taxonomy (any of its labels)"/>\n'
        f"  <TextArea name={quoteattr(new)} toName={quoteattr(to_name)} "
        'perRegion="true" maxSubmissions="1" '
        'placeholder="Not in the taxonomy? Type a new entry"/>\n'
    )


def build_config(
    labels: Iterable[LabelSpec], from_name="label", to_name="text", link: bool = False
) -> str:
    """A Labels/Text config for a project's labels (the inverse of `parse_config`), with
    the per-region link control when `link` (the project links spans to a taxonomy)."""
    lines = ["<View>", f"  <Labels name={quoteattr(from_name)} toName={quoteattr(to_name)}>"]
    for label in labels:
        attrs = f"value={quoteattr(label.value)}"
        if label.background:
            attrs += f" background={quoteattr(label.background)}"
        if label.predicted_values:
            attrs += f" predicted_values={quoteattr(', '.join(label.predicted_values))}"
        lines.append(f"    <Label {attrs}/>")
    lines += ["  </Labels>", f'  <Text name={quoteattr(to_name)} value="${to_name}"/>']
    if link:
        lines.append(link_control_xml(to_name).rstrip("\n"))
    lines.append("</View>")
    return "\n".join(lines) + "\n"
