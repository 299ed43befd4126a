"""A curated post: what an export is made of, whichever way it was chosen."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from training.text import Span


@dataclass
class CuratedPost:
    """A post with its one chosen annotation and where it came from."""

    id: str
    text: str
    spans: list[Span]
    provenance: dict = field(default_factory=dict)

    @property
    def labels(self) -> set[str]:
        return {s.label for s in self.spans}
