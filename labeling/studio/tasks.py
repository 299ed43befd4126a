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


def regions_to_spans(result: Iterable[Mapping], config: LabelingConfig, text: str) -> list[Span]:
    """Spans from an annotation's or prediction's `result` list.

    Regions of other tags (relations, choices, other label sets) are ignored. Offsets are
    code points; a region whose `text` only matches its UTF-16 reading is read as UTF-16.
    """
    astral_free = _is_astral_free(text)
    table = None if astral_free else _utf16_to_python(text)
    spans = []
    for region in result or []:
        if not isinstance(region, Mapping) or region.get("from_name") != config.from_name:
            continue
        value = region.get("value") or {}
        labels = value.get("labels") or []
        start, end = value.get("start"), value.get("end")
        if not labels or not isinstance(start, int) or not isinstance(end, int):
            continue
        if table is not None:
            start, end = _read_legacy_utf16(text, table, start, end, value.get("text"))
        if not 0 <= start < end <= len(text):
            raise TaskError(f"region [{start}, {end}) lies outside a text of {len(text)} chars")
        score = region.get("score")
        spans.append(Span(start, end, str(labels[0]), text[start:end], score))
    return sorted(spans, key=lambda s: (s.start, s.end))


def spans_to_regions(
    spans: Iterable[Span],
    config: LabelingConfig,
    text: str,
    label_names: Mapping[str, str] | None = None,
) -> list[dict]:
    """Prediction regions for Label Studio, names and labels taken from the config.

    `label_names` maps the model's labels to the config's label values; spans with a
    label the config does not have are left out rather than sent as invalid regions.
    """
    allowed = set(config.label_values)
    regions = []
    for span in spans:
        label = (label_names or {}).get(span.label, span.label)
        if label not in allowed:
            continue
        region = {
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
    return regions


def annotation_to_document(task: Mapping, annotation: Mapping, config: LabelingConfig) -> Document:
    """The gold document one annotation of one task describes."""
    text = task_text(task, config)
    spans = regions_to_spans(annotation.get("result") or [], config, text)
    return Document(text, spans, id=str(task.get("id")) if task.get("id") is not None else None)


def relabel(spans: Iterable[Span], label_names: Mapping[str, str]) -> list[Span]:
    """Spans with labels renamed through `label_names` (labels not in it unchanged)."""
    return [replace(s, label=label_names.get(s.label, s.label)) for s in spans]
