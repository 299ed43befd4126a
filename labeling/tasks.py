"""Label Studio tasks, annotations and prediction regions <-> skillloop documents and spans.

Label Studio's editor measures text offsets in JavaScript string indices (UTF-16 code
units); Python indexes code points. They differ only after a character outside the
Basic Multilingual Plane (emoji, some CJK), and this module is the one place that
converts, so every span that leaves or enters skillloop indexes the text exactly.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import replace

from labeling.config import LabelingConfig
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


def _python_to_utf16(text: str, offset: int) -> int:
    return offset + sum(1 for char in text[:offset] if ord(char) > 0xFFFF)


def _is_astral_free(text: str) -> bool:
    return all(ord(char) <= 0xFFFF for char in text)


def regions_to_spans(result: Iterable[Mapping], config: LabelingConfig, text: str) -> list[Span]:
    """Spans from an annotation's or prediction's `result` list.

    Regions of other tags (relations, choices, other label sets) are ignored. Offsets are
    read as UTF-16 units unless the region's own `text` shows they are Python offsets.
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
        if table is not None and text[start:end] != value.get("text"):
            if not 0 <= start <= end < len(table):
                raise TaskError(f"region [{start}, {end}) lies outside the text")
            start, end = table[start], table[end]
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
    astral_free = _is_astral_free(text)
    regions = []
    for span in spans:
        label = (label_names or {}).get(span.label, span.label)
        if label not in allowed:
            continue
        start, end = span.start, span.end
        if not astral_free:
            start, end = _python_to_utf16(text, start), _python_to_utf16(text, end)
        region = {
            "id": uuid.uuid4().hex[:10],
            "from_name": config.from_name,
            "to_name": config.to_name,
            "type": "labels",
            "value": {
                "start": start,
                "end": end,
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
