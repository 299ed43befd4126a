"""Taxonomy links in Label Studio, both ways: a span's link out to the editor (the post's
candidates as task data, the chosen entry as a per-region choice) and back from an
annotation into the span's link fields (training.text.Span, docs/studio.md).

The link control is a `<Choices perRegion="true" value="$link_choices">` on the text
(labeling.studio.config.link_control_xml). Label Studio 1.23's open-source editor takes
dynamic choices from the task's data, not per region, so the task carries one option per
candidate entry of the whole post (each naming the span it was ranked for), and every
region's result says which of them, or "no match", it is linked to:

    task data:  "link_choices": [{"value": "<preferred label>", "alias": "<entry id>",
                                  "html": "<label> <small>for "span" 0.93 · id</small>",
                                  "hint": "..."}]
    result:     {"id": <the labels region's id>, "from_name": "link", "type": "choices",
                 "value": {"start", "end", "text", "choices": ["<entry id>" | "no match"]}}

The alias (the entry id) is what the editor writes into the result; the value (the
preferred label) is how the label is read back.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from labeling.studio.config import NO_MATCH, LabelingConfig
from training.text import Span

if TYPE_CHECKING:
    from training.linker import Candidate, Link

LINK_SCORE_DIGITS = 4


def linked_span(span: Span, link: Link) -> Span:
    """`span` with the linker's decision: its best entry, or "no match" below threshold."""
    best = link.best
    if best is None:
        return replace(span, taxonomy_id=None, taxonomy_label=None, link_status="no_match")
    return replace(
        span,
        taxonomy_id=best.id,
        taxonomy_label=best.label,
        link_score=round(best.score, LINK_SCORE_DIGITS),
        link_status="predicted",
    )


def link_options(text: str, spans: Sequence[Span], links: Sequence[Link]) -> list[dict]:
    """The task data field the link control reads: every candidate entry of the post
    once, naming the span it scored best for (in that span's order, best first). "no
    match" is the control's own static choice, not an option here."""
    best: dict[str, tuple[int, Candidate]] = {}
    for index, link in enumerate(links):
        for candidate in link.candidates:
            held = best.get(candidate.id)
            if held is None or candidate.score > held[1].score:
                best[candidate.id] = (index, candidate)
    options: list[dict] = []
    for index, candidate in sorted(best.values(), key=lambda b: (b[0], -b[1].score)):
        span = spans[index]
        phrase = span.text or text[span.start : span.end]
        where = f"for \u201c{phrase}\u201d {candidate.score:.2f}"
        options.append(
            {
                "value": candidate.label,
                "alias": candidate.id,
                "html": f"{html.escape(candidate.label)} <small>{html.escape(where)} "
                f"\u00b7 {html.escape(candidate.id)}</small>",
                "hint": f"{candidate.label} ({candidate.id}), ranked {where}",
            }
        )
    return options


def option_labels(task: Mapping, config: LabelingConfig) -> dict[str, str]:
    """Entry id -> preferred label, from the task's link options (empty without them)."""
    data = task.get("data", task) if isinstance(task, Mapping) else {}
    options = data.get(config.link_choices_key) if isinstance(data, Mapping) else None
    labels: dict[str, str] = {}
    for option in options if isinstance(options, list) else []:
        if isinstance(option, Mapping) and isinstance(option.get("alias"), str):
            labels[option["alias"]] = str(option.get("value") or option["alias"])
    return labels


def link_result(region: Mapping, span: Span, config: LabelingConfig) -> dict | None:
    """The per-region choice saying which entry `region` (a labels region made from
    `span`) is linked to; None when the config has no link control or the span no link."""
    if not config.links or span.link_status is None:
        return None
    choice = span.taxonomy_id if span.taxonomy_id else NO_MATCH
    value = region["value"]
    out: dict = {
        "id": region["id"],
        "from_name": config.link_from_name,
        "to_name": config.to_name,
        "type": "choices",
        "value": {
            "start": value["start"],
            "end": value["end"],
            "text": value["text"],
            "choices": [choice],
        },
    }
    if span.link_score is not None:
        out["score"] = span.link_score
    return out


class LinkChoices:
    """The link choices of one `result` list, found by region id (how the editor ties a
    per-region result to its region) or, for results without ids, by offsets."""

    def __init__(self, result: Iterable[object], config: LabelingConfig):
        self.by_id: dict[str, tuple[str, float | None, bool]] = {}
        self.by_offsets: dict[tuple[int, int], tuple[str, float | None, bool]] = {}
        if not config.links:
            return
        for region in result or []:
            if not isinstance(region, Mapping) or region.get("from_name") != config.link_from_name:
                continue
            value = region.get("value")
            choices = value.get("choices") if isinstance(value, Mapping) else None
            if not isinstance(choices, list) or not choices or not isinstance(choices[0], str):
                continue  # a link choice taken off: the span stays unlinked
            score = region.get("score")
            score = float(score) if isinstance(score, int | float) and score is not True else None
            # the editor marks a result kept exactly as the prediction had it
            chosen = (choices[0], score, region.get("origin") == "prediction")
            if isinstance(region.get("id"), str):
                self.by_id[region["id"]] = chosen
            start, end = value.get("start"), value.get("end")  # type: ignore[union-attr]
            if isinstance(start, int) and isinstance(end, int):
                self.by_offsets[(start, end)] = chosen

    def apply(
        self,
        span: Span,
        region: Mapping,
        labels: Mapping[str, str],
        raw: tuple[int, int] | None = None,
    ) -> Span:
        """`span` (read from `region`) with its link as the result gives it: status
        "no_match", "confirmed" for an annotation's result the editor marks as kept from
        the prediction (`origin: "prediction"`), else "predicted" (annotations settle
        theirs with `settle_link_status`). `raw`: the region's offsets as written."""
        region_id = region.get("id")
        chosen = self.by_id.get(region_id) if isinstance(region_id, str) else None
        if chosen is None:
            chosen = self.by_offsets.get(raw or (span.start, span.end))
        if chosen is None:
            return span
        choice, score, kept = chosen
        if choice == NO_MATCH:
            return replace(span, link_status="no_match")
        return replace(
            span,
            taxonomy_id=choice,
            taxonomy_label=labels.get(choice),
            link_score=score,
            link_status="confirmed" if kept else "predicted",
        )


def settle_link_status(spans: Sequence[Span], predicted: Sequence[Span]) -> list[Span]:
    """An annotation's spans with who decided each link: "confirmed" when the annotator
    kept the entry the prediction linked the same characters to (the editor's `origin:
    "prediction"`, or the same entry in `predicted`: Label Studio's webhooks send the
    annotation's `prediction` empty), "corrected" for any other entry (a span the model
    did not link included), "no_match" when they said so. The score is kept only for a
    confirmed link (it is the linker's score of that entry)."""
    by_offsets = {(p.start, p.end): p for p in predicted if p.link_status is not None}
    out = []
    for span in spans:
        if span.link_status is None:
            out.append(span)
        elif span.link_status == "no_match":
            out.append(replace(span, taxonomy_id=None, taxonomy_label=None, link_score=None))
        elif span.link_status == "confirmed":
            out.append(span)
        else:
            before = by_offsets.get((span.start, span.end))
            confirmed = before is not None and before.taxonomy_id == span.taxonomy_id
            out.append(
                replace(
                    span,
                    taxonomy_label=span.taxonomy_label
                    or (before.taxonomy_label if confirmed and before else None),
                    link_score=before.link_score if confirmed and before else None,
                    link_status="confirmed" if confirmed else "corrected",
                )
            )
    return out
