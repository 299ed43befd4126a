"""Taxonomy links in Label Studio, both ways: a span's link out to the editor (each span's
candidates as task data, the chosen entry as a per-region choice) and back from an
annotation into the span's link fields (training.text.Span, docs/studio.md).

The link controls (labeling.studio.config.link_control_xml) are a per-region `<Choices
value="$link_choices">` of candidates, a per-region `<Taxonomy apiUrl="$link_search">`
searching the whole taxonomy and a per-region `<TextArea name="link_new">` for a new entry.
Label Studio 1.23's editor takes dynamic choices from the task's data, not per region, so
the task carries every span's own candidates (one option per span and candidate, never
merged across spans), each marked with its region's id, and the first option carries a
`<style>` that shows only the selected region's:

    task data:  "link_choices": [{"value": "<preferred label> · <region id>",
                                  "alias": "<label> [<entry id>] for “<span>” at <start>",
                                  "html": "<span class=\"skl-link skl-r-<region id>\">..."}]
    result:     {"id": <the labels region's id>, "from_name": "link", "type": "choices",
                 "value": {"start", "end", "text", "choices": [<the option's alias> | "no match"]}}

The alias is what the editor writes into the result and shows in the region's details:
the entry's label with its id in brackets and the span it is a candidate of
(`choice_value`, read back by `entry_id_of`; a bare id, as older annotations hold, reads
too).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from labeling.studio.config import NO_MATCH, LabelingConfig
from training.taxonomy import new_entry_id
from training.text import Span

if TYPE_CHECKING:
    from training.linker import Link
    from training.taxonomy import Taxonomy

LINK_SCORE_DIGITS = 4
CHOICE_VALUE = re.compile(
    r"^(?P<label>.*) \[(?P<id>[^\[\]]+)\](?: for \u201c.*\u201d at \d+)?$", re.DOTALL
)
CSS_SAFE_ID = re.compile(r"^[\w-]+$")


def choice_value(label: str | None, entry_id: str, region: Mapping | None = None) -> str:
    """How a link is written into a result: "<label> [<id>]" (a bare id without label or
    region), and for a region's candidate "<label> [<id>] for “<its text>” at <its
    start>": each region's options must differ from every other region's, or the editor
    ticks an entry in every region that offers it (and then refuses to submit: one choice
    only)."""
    value = f"{label or entry_id} [{entry_id}]" if label or region is not None else entry_id
    if region is not None:
        where = region["value"]
        value += f" for \u201c{where['text']}\u201d at {where['start']}"
    return value


def entry_id_of(value: str) -> str:
    """The entry id of a result's value (`choice_value`'s, or a bare id)."""
    match = CHOICE_VALUE.match(value)
    return match.group("id") if match else value


def label_of(value: str) -> str | None:
    match = CHOICE_VALUE.match(value)
    return match.group("label") if match else None


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


def link_options(
    links: Sequence[Link], regions: Sequence[Mapping | None], style: bool = True
) -> list[dict]:
    """The task data field the link control reads: every span's own candidates, best
    first, each with its own score, for the span's labels region (`regions`, one per
    link, `span_regions`; None: the span has no region and offers nothing). The first
    option carries the post's `<style>`, showing only the selected region's candidates.
    "no match" is the control's own static choice, not an option here."""
    options: list[dict] = []
    shown: list[str] = []
    for link, region in zip(links, regions, strict=True):
        region_id = region.get("id") if region is not None else None
        if not isinstance(region_id, str) or not CSS_SAFE_ID.match(region_id):
            continue
        shown.append(region_id)
        for rank, candidate in enumerate(link.candidates, 1):
            via = candidate.matched_label
            details = f"{candidate.score:.2f}"
            if via and via != candidate.label:
                details += f" \u00b7 as \u201c{via}\u201d"
            options.append(
                {
                    # unique per region: the editor names each radio button after its
                    # value, and a browser checks one radio of a name at a time
                    "value": f"{candidate.label} \u00b7 {region_id}",
                    "alias": choice_value(candidate.label, candidate.id, region),
                    "html": f'<span class="skl-link skl-r-{region_id}">'
                    f"{html.escape(candidate.label)}</span> <small>{html.escape(details)} "
                    f"\u00b7 {html.escape(candidate.id)}</small>",
                    "hint": f"{candidate.label} ({candidate.id}): candidate {rank}, "
                    f"score {candidate.score:.2f}",
                }
            )
    if options and style:
        options[0]["html"] = region_style(shown) + options[0]["html"]
    return options


def span_regions(
    spans: Sequence[Span], regions: Sequence[Mapping], config: LabelingConfig
) -> list[Mapping | None]:
    """Each span's labels region in `regions` (tasks.spans_to_regions), found by offsets;
    None for a span left out (a label the config lacks)."""
    found = {
        (r["value"]["start"], r["value"]["end"]): r
        for r in regions
        if r.get("from_name") == config.from_name
    }
    return [found.get((span.start, span.end)) for span in spans]


def taxonomy_items(taxonomy: Taxonomy) -> list[dict]:
    """The whole taxonomy as the link search's Taxonomy control loads it from its apiUrl:
    an item per entry (its preferred label shown, `choice_value` stored), its alternative
    labels as children, so typing any label finds the entry; sorted by label."""
    items = []
    for entry in sorted(taxonomy.entries, key=lambda e: (e.preferred_label.casefold(), e.id)):
        item: dict = {
            "value": entry.preferred_label,
            "alias": choice_value(entry.preferred_label, entry.id),
        }
        if entry.labels[1:]:
            item["children"] = [{"value": label} for label in entry.labels[1:]]
        items.append(item)
    return items


def region_style(region_ids: Iterable[str]) -> str:
    """The post's candidates shown only while their region is selected (the highlight of
    a selected region has `__active` and the class `htx-highlight-<region id>-<n>`)."""
    rules = "".join(
        f'body:has(.htx-highlight.__active[class*="htx-highlight-{rid}-"]) '
        f".lsf-choice:has(.skl-r-{rid}){{display:block}}"
        for rid in dict.fromkeys(region_ids)
    )
    return f"<style>{rules}</style>"


def option_labels(task: Mapping, config: LabelingConfig) -> dict[str, str]:
    """Entry id -> preferred label, from the task's link options (empty without them)."""
    data = task.get("data", task) if isinstance(task, Mapping) else {}
    options = data.get(config.link_choices_key) if isinstance(data, Mapping) else None
    labels: dict[str, str] = {}
    for option in options if isinstance(options, list) else []:
        if isinstance(option, Mapping) and isinstance(option.get("alias"), str):
            alias = option["alias"]
            labels[entry_id_of(alias)] = label_of(alias) or str(option.get("value") or alias)
    return labels


def link_result(region: Mapping, span: Span, config: LabelingConfig) -> dict | None:
    """The per-region choice saying which entry `region` (a labels region made from
    `span`) is linked to; None when the config has no link control or the span no link."""
    if not config.links or span.link_status is None:
        return None
    value = region["value"]
    choice = NO_MATCH
    if span.taxonomy_id:  # as its region's option says it
        choice = choice_value(span.taxonomy_label, span.taxonomy_id, region)
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


@dataclass(frozen=True, slots=True)
class Chosen:
    """What one region's link results say: an entry id (or NO_MATCH), its label when the
    result names it, the score, and whether the editor kept it exactly as predicted."""

    choice: str
    label: str | None = None
    score: float | None = None
    kept: bool = False


class LinkChoices:
    """The links of one `result` list, found by region id (how the editor ties a
    per-region result to its region) or, for results without ids, by offsets. Of a
    region's link results the most deliberate wins: a new entry typed in, then an entry
    picked in the search of the whole taxonomy, then the ticked candidate (a prediction
    always ticks one, so only an annotator's action adds the other two)."""

    def __init__(self, result: Iterable[object], config: LabelingConfig):
        self.by_id: dict[str, tuple[int, Chosen]] = {}
        self.by_offsets: dict[tuple[int, int], tuple[int, Chosen]] = {}
        if not config.links:
            return
        for region in result or []:
            if not isinstance(region, Mapping):
                continue
            value = region.get("value")
            if not isinstance(value, Mapping):
                continue
            read = _read_link(region, value, config)
            if read is None:
                continue
            rank, chosen = read
            if isinstance(region.get("id"), str):
                self._keep(self.by_id, region["id"], rank, chosen)
            start, end = value.get("start"), value.get("end")
            if isinstance(start, int) and isinstance(end, int):
                self._keep(self.by_offsets, (start, end), rank, chosen)

    @staticmethod
    def _keep(found: dict, key, rank: int, chosen: Chosen) -> None:
        if key not in found or found[key][0] < rank:
            found[key] = (rank, chosen)

    def apply(
        self,
        span: Span,
        region: Mapping,
        labels: Mapping[str, str],
        raw: tuple[int, int] | None = None,
    ) -> Span:
        """`span` (read from `region`) with its link as the results give it: status
        "no_match", "confirmed" for an annotation's result the editor marks as kept from
        the prediction (`origin: "prediction"`), else "predicted" (annotations settle
        theirs with `settle_link_status`). `raw`: the region's offsets as written."""
        region_id = region.get("id")
        found = self.by_id.get(region_id) if isinstance(region_id, str) else None
        if found is None:
            found = self.by_offsets.get(raw or (span.start, span.end))
        if found is None:
            return span
        chosen = found[1]
        if chosen.choice == NO_MATCH:
            return replace(span, link_status="no_match")
        return replace(
            span,
            taxonomy_id=chosen.choice,
            taxonomy_label=chosen.label or labels.get(chosen.choice),
            link_score=chosen.score,
            link_status="confirmed" if chosen.kept else "predicted",
        )


def _read_link(
    region: Mapping, value: Mapping, config: LabelingConfig
) -> tuple[int, Chosen] | None:
    """(precedence, what it says) of one link result; None for other results or empty ones
    (a link taken off: the span stays unlinked)."""
    name = region.get("from_name")
    if name == config.link_from_name:
        choices = value.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], str):
            return None
        score = region.get("score")
        score = float(score) if isinstance(score, int | float) and score is not True else None
        kept = region.get("origin") == "prediction"  # the editor's mark: kept as predicted
        if choices[0] == NO_MATCH:
            return 0, Chosen(NO_MATCH, None, score, kept)
        return 0, Chosen(entry_id_of(choices[0]), label_of(choices[0]), score, kept)
    if config.link_search_name and name == config.link_search_name:
        paths = value.get("taxonomy")
        path = paths[0] if isinstance(paths, list) and paths else None
        if not isinstance(path, list) or not path or not isinstance(path[0], str):
            return None
        return 1, Chosen(entry_id_of(path[0]), label_of(path[0]))
    if config.link_new_name and name == config.link_new_name:
        texts = value.get("text")
        typed = (
            texts[0].strip()
            if isinstance(texts, list) and texts and isinstance(texts[0], str)
            else ""
        )
        if not typed:
            return None
        return 2, Chosen(new_entry_id(typed), typed)
    return None


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
