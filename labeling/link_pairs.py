"""Annotator-decided links out of a project's store: the (span, context, entry) pairs the
linker's next round trains on (training/linker_train.py takes them as `extra_pairs`).

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

ANNOTATED = ("confirmed", "corrected")


@dataclass(frozen=True, slots=True)
class LinkPair:
    span: str  # the span's text
    context: str  # its sentence (training.linker.sentence_around), for context-mixed linkers
    taxonomy_id: str
    status: str  # "confirmed" or "corrected"
    annotation_id: int

    def pair(self) -> tuple[str, str]:
        """(span text, entry id): what linker_train.finetune's `extra_pairs` take."""
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
        return list(link_pairs(store.records()))
    finally:
        store.close()
