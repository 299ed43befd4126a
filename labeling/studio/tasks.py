"""Label Studio tasks, annotations and prediction regions <-> skillloop documents and spans.

Label Studio 1.23's editor counts region offsets in Unicode code points, the same as
Python string indices: it converts a selection "to code points count instead of chars
count" and draws a region as `[...text].slice(start, end)` (libs/editor's
selection-tools.js). So spans leave and enter skillloop with Python offsets, unchanged.

Regions written by older skillloop versions (and by other tools) in JavaScript's UTF-16
units differ from code points after a character outside the Basic Multilingual Plane
(emoji, some CJK). They are still read, but only where the region's own `text` proves it:
the code-point slice does not match that text and the UTF-16 reading does.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import replace

from labeling.studio.config import LabelingConfig
from labeling.studio.links import LinkChoices, link_result
from training.text import Document, Span


class TaskError(ValueError):
    """A task or annotation skillloop cannot read."""


def task_text(task: Mapping, config: LabelingConfig) -> str:
    """The text a task asks to tag, from the data field the config names."""
    if not isinstance(task, Mapping):
        raise TaskError(f"a task must be a JSON object, got {type(task).__name__}")
    data = task.get("data", task)
    if not isinstance(data, Mapping) or config.value_key not in data:
        raise TaskError(f"task {task.get('id', '?')} has no data field {config.value_key!r}")
    text = data[config.value_key]
    if not isinstance(text, str):
        raise TaskError(f"task {task.get('id', '?')}: {config.value_key!r} must be a string")
    return text


def lone_surrogates(text: str) -> int:
    """How many lone UTF-16 surrogates (`"\\ud800"` in JSON) `text` holds: JSON lets a client
    send them, but no tokenizer or UTF-8 store can take them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return sum(1 for char in text if 0xD800 <= ord(char) <= 0xDFFF)
    return 0


def replace_surrogates(text: str) -> str:
    """`text` with each lone surrogate replaced by U+FFFD: one code point for one, so every
    region offset into the text still points at the same characters."""
    if not lone_surrogates(text):
        return text
    return "".join("\ufffd" if 0xD800 <= ord(char) <= 0xDFFF else char for char in text)


def _utf16_to_python(text: str) -> list[int]:
    """For each UTF-16 offset 0..len16, the Python offset (astral chars take 2 units)."""
    table = []
    for i, char in enumerate(text):
        table.append(i)
        if ord(char) > 0xFFFF:
            table.append(i + 1)  # the second half of a surrogate pair rounds forward
    table.append(len(text))
    return table


def _read_legacy_utf16(
    text: str, table: list[int], start: int, end: int, claimed: object
) -> tuple[int, int]:
    """`(start, end)` in code points: a UTF-16 reading only where the region's text proves it."""
    if not isinstance(claimed, str) or text[start:end] == claimed:
        return start, end
    if 0 <= start <= end < len(table) and text[table[start] : table[end]] == claimed:
        return table[start], table[end]
    return start, end


def _is_astral_free(text: str) -> bool:
    return all(ord(char) <= 0xFFFF for char in text)


def regions_to_spans(
    result: Iterable[Mapping],
    config: LabelingConfig,
    text: str,
    link_labels: Mapping[str, str] | None = None,
) -> list[Span]:
    """Spans from an annotation's or prediction's `result` list, with their links when
    the config has a link control (`link_labels`: entry id -> label, links.option_labels).

    Regions of other tags (relations, choices, other label sets) are ignored. Offsets are
    code points; a region whose `text` only matches its UTF-16 reading is read as UTF-16.
    """
    astral_free = _is_astral_free(text)
    table = None if astral_free else _utf16_to_python(text)
    links = LinkChoices(result, config)
    spans = []
    for region in result or []:
        if not isinstance(region, Mapping) or region.get("from_name") != config.from_name:
            continue
        value = region.get("value")
        if not isinstance(value, Mapping):
            continue
        labels = value.get("labels")
        if not labels or not isinstance(labels, list) or not isinstance(labels[0], str):
            continue
        start, end = value.get("start"), value.get("end")
        if not isinstance(start, int) or not isinstance(end, int):
            continue
        raw = (start, end)
        if table is not None:
            start, end = _read_legacy_utf16(text, table, start, end, value.get("text"))
        if not 0 <= start < end <= len(text):
            raise TaskError(f"region [{start}, {end}) lies outside a text of {len(text)} chars")
        score = region.get("score")
        score = score if isinstance(score, int | float) else None
        span = Span(start, end, labels[0], text[start:end], score)
        spans.append(links.apply(span, region, link_labels or {}, raw))
    return sorted(spans, key=lambda s: (s.start, s.end))


def _region_name(index: int, region: Mapping) -> str:
    region_id = region.get("id")
    return f"region {index}" + (f" (id {region_id!r})" if isinstance(region_id, str) else "")


def _offset(value: Mapping, key: str, where: str) -> int:
    offset = value.get(key)
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise TaskError(f"{where}: value.{key} must be an integer, got {offset!r}")
    return offset


def read_annotation_regions(
    result: object,
    config: LabelingConfig,
    text: str,
    label_names: Mapping[str, str] | None = None,
    link_labels: Mapping[str, str] | None = None,
) -> list[Span]:
    """Spans of an annotator's `result`, every region checked: unlike `regions_to_spans`
    (lenient, for predictions and exports), anything Label Studio could not have sent for
    this config raises TaskError naming the region, so nothing is half-read.

    `label_names` maps the config's label values to the project's labels (a Label Studio
    project that names its labels differently); without it the config's values are kept.
    Regions of the config's other tags (choices, relations) are ignored, except the link
    control's: each span carries the entry its region was linked to (status "predicted"
    or "no_match" here; links.settle_link_status says who decided).
    """
    if result is None:
        return []
    if not isinstance(result, list):
        raise TaskError(f"result must be a list of regions, got {type(result).__name__}")
    names = dict(label_names) if label_names is not None else {v: v for v in config.label_values}
    astral_free = _is_astral_free(text)
    table = None if astral_free else _utf16_to_python(text)
    links = LinkChoices(result, config)
    spans = []
    for index, region in enumerate(result):
        if not isinstance(region, Mapping):
            raise TaskError(f"region {index} must be a JSON object, got {type(region).__name__}")
        where = _region_name(index, region)
        from_name = region.get("from_name")
        if from_name != config.from_name:
            if region.get("type") == "relation" or from_name in config.control_names:
                continue
            raise TaskError(
                f"{where}: from_name {from_name!r} is not a tag of the labeling config "
                f"(its labels tag is {config.from_name!r})"
            )
        value = region.get("value")
        if not isinstance(value, Mapping):
            raise TaskError(f"{where}: value must be a JSON object, got {type(value).__name__}")
        labels = value.get("labels")
        if not isinstance(labels, list) or not all(isinstance(v, str) for v in labels):
            raise TaskError(f"{where}: value.labels must be a list of label names, got {labels!r}")
        unknown = [v for v in labels if v not in names]
        if unknown:
            raise TaskError(
                f"{where}: labels {unknown} are not in the labeling config ({sorted(names)})"
            )
        if not labels:
            continue  # a region whose label was taken off: no span
        start, end = _offset(value, "start", where), _offset(value, "end", where)
        raw = (start, end)
        if table is not None:
            start, end = _read_legacy_utf16(text, table, start, end, value.get("text"))
        if not 0 <= start < end <= len(text):
            raise TaskError(f"{where}: [{start}, {end}) lies outside a text of {len(text)} chars")
        score = region.get("score")
        if isinstance(score, bool) or not isinstance(score, int | float):
            score = None
        span = Span(start, end, names[labels[0]], text[start:end], score)
        spans.append(links.apply(span, region, link_labels or {}, raw))
    return sorted(spans, key=lambda s: (s.start, s.end))


def spans_to_regions(
    spans: Iterable[Span],
    config: LabelingConfig,
    text: str,
    label_names: Mapping[str, str] | None = None,
) -> list[dict]:
    """Prediction regions for Label Studio, names and labels taken from the config.

    `label_names` maps the model's labels to the config's label values; spans with a
    label the config does not have are left out rather than sent as invalid regions. A
    linked span (link fields set) also gets its link control's per-region choice, when the
    config has one (labeling.studio.links).
    """
    allowed = set(config.label_values)
    regions = []
    for span in spans:
        label = (label_names or {}).get(span.label, span.label)
        if label not in allowed:
            continue
        region: dict[str, object] = {
            "id": uuid.uuid4().hex[:10],
            "from_name": config.from_name,
            "to_name": config.to_name,
            "type": "labels",
            "value": {
                "start": span.start,
                "end": span.end,
                "text": text[span.start : span.end],
                "labels": [label],
            },
        }
        if span.score is not None:
            region["score"] = round(float(span.score), 4)
        regions.append(region)
        link = link_result(region, span, config)
        if link is not None:
            regions.append(link)
    return regions


def annotation_to_document(task: Mapping, annotation: Mapping, config: LabelingConfig) -> Document:
    """The gold document one annotation of one task describes."""
    text = task_text(task, config)
    spans = regions_to_spans(annotation.get("result") or [], config, text)
    return Document(text, spans, id=str(task.get("id")) if task.get("id") is not None else None)


def relabel(spans: Iterable[Span], label_names: Mapping[str, str]) -> list[Span]:
    """Spans with labels renamed through `label_names` (labels not in it unchanged)."""
    return [replace(s, label=label_names.get(s.label, s.label)) for s in spans]
