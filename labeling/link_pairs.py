"""Annotator-decided links out of a project's store: the (span, context, entry) pairs the
linker's next round trains on (`skillloop link-train` hands them to
training/linker_round.py as `extra_pairs`).

Also the entries annotators added to the taxonomy ("new entry" in the editor): the
linker embeds them beside the taxonomy's own (`taxonomy_additions`).

Only links an annotator confirmed or corrected count; "no match" and links nobody looked
at (a prediction left as it was is stored as confirmed only once its annotation is
submitted) do not. Cancelled and deleted annotations are left out, as in training.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from training.linker import sentence_around

if TYPE_CHECKING:
    from labeling.state import ProjectState
    from labeling.store import AnnotationRecord
    from training.taxonomy import TaxonomyEntry

ANNOTATED = ("confirmed", "corrected")


@dataclass(frozen=True, slots=True)
class LinkPair:
    span: str  # the span's text
    context: str  # its sentence (training.linker.sentence_around), for context-mixed linkers
    taxonomy_id: str
    status: str  # "confirmed" or "corrected"
    annotation_id: int

    def pair(self) -> tuple[str, str]:
        """(span text, entry id): what `train_linker_round`'s `extra_pairs` take."""
        return (self.span, self.taxonomy_id)


def link_pairs(records: Iterable[AnnotationRecord]) -> Iterator[LinkPair]:
    """The confirmed and corrected links of `records`, each (span, context, entry) once."""
    seen: set[tuple[str, str, str]] = set()
    for record in records:
        for span in record.spans:
            if span.link_status not in ANNOTATED or not span.taxonomy_id:
                continue
            text = span.text or record.text[span.start : span.end]
            context = sentence_around(record.text, span.start, span.end)
            key = (text, context, span.taxonomy_id)
            if key in seen:
                continue
            seen.add(key)
            yield LinkPair(text, context, span.taxonomy_id, span.link_status, record.annotation_id)


def project_link_pairs(state: ProjectState) -> list[LinkPair]:
    """The linker's next round's pairs from a project's annotation store."""
    store = state.store()
    try:
        return list(link_pairs(store.annotations.records()))
    finally:
        store.close()


def taxonomy_additions(records: Iterable[AnnotationRecord]) -> list[TaxonomyEntry]:
    """The entries annotators added ("new entry" in the editor: ids with
    training.taxonomy.NEW_ENTRY_PREFIX), each once, in the order first added; the label
    is the one first typed, and other spellings of it become alternative labels."""
    from training.taxonomy import NEW_ENTRY_PREFIX, TaxonomyEntry

    found: dict[str, TaxonomyEntry] = {}
    for record in records:
        for span in record.spans:
            entry_id = span.taxonomy_id or ""
            if span.link_status not in ANNOTATED or not entry_id.startswith(NEW_ENTRY_PREFIX):
                continue
            label = (span.taxonomy_label or entry_id.removeprefix(NEW_ENTRY_PREFIX)).strip()
            entry = found.setdefault(entry_id, TaxonomyEntry(entry_id, label, type="added"))
            if label not in entry.labels:
                entry.alt_labels.append(label)
    return list(found.values())


def project_taxonomy_additions(state: ProjectState) -> list[TaxonomyEntry]:
    """A project's taxonomy additions, from its annotation store (none without one)."""
    if not state.has_store():
        return []
    store = state.store()
    try:
        return taxonomy_additions(store.annotations.records())
    finally:
        store.close()
