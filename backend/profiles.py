"""Linked skills out of the loop: `skillloop export --format profiles` (one row per post
with its set of linked skills) and the rounds report's most frequent skills. Spans keep the
link stored with their annotation; the others are linked with the project's `[linking]`
linker (backend.cli.link), built only when some span needs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from backend.linkers import project_linker
from backend.loop.rounds import annotated_documents

if TYPE_CHECKING:
    from labeling.curation.export import ExportResult
    from labeling.curation.export_profiles import Profile, SkillSummary
    from labeling.project import Project
    from labeling.state import ProjectState
    from training.linker import Linker
    from training.text import Document

REPORT_ROWS = 20


class ProjectLinks:
    """The `LinkFn` of labeling.curation.export_profiles over the project's linker, opened
    on first use (embedding a taxonomy's labels the first time takes minutes)."""

    def __init__(self, project: Project, state: ProjectState):
        self.project, self.state = project, state
        self.linker: Linker | None = None
        self.top_k = 5

    def __call__(self, docs: Sequence[Document]) -> list[list[tuple[str, str] | None]]:
        from training.linker import link_spans

        if self.linker is None:
            self.linker, self.top_k = project_linker(self.project, self.state)
        found = link_spans(self.linker, docs, self.top_k)
        return [[(b.id, b.label) if (b := one.best) else None for one in row] for row in found]

    def taxonomy(self) -> tuple[str, str]:
        """(name, attribution) of the taxonomy the links come from."""
        if self.linker is not None:
            return self.linker.taxonomy.name, self.linker.taxonomy.attribution
        from training.taxonomy import ESCO_ATTRIBUTION, ESCO_NAME

        name = self.project.linking.taxonomy or "taxonomy"  # every span carried its link
        return name, ESCO_ATTRIBUTION if name.lower() == ESCO_NAME else ""


def _summary(profiles: list[Profile], links: ProjectLinks, rows: int) -> SkillSummary:
    from labeling.curation.export_profiles import summarize

    name, attribution = links.taxonomy()
    return summarize(
        profiles, Path(name).stem if name.endswith(".csv") else name, attribution, rows
    )


def profiles_export(result: ExportResult, project: Project, state: ProjectState) -> Path:
    """`profiles.jsonl` beside an export (`--format profiles`) and the card's skill counts."""
    from labeling.curation.export_profiles import build_profiles, card_section, write_profiles

    links = ProjectLinks(project, state)
    profiles = build_profiles(result.splits, links)
    path = write_profiles(result.out_dir, profiles)
    summary = _summary(profiles, links, 30)
    with open(Path(result.out_dir) / "README.md", "a", encoding="utf-8") as handle:
        handle.write("\n".join(card_section(summary)) + "\n")
    result.files.append(path)
    return path


def linked_skills(
    project: Project, state: ProjectState, rows: int = REPORT_ROWS
) -> SkillSummary | None:
    """The most frequent linked skills over the project's annotated posts (gold and Label
    Studio), for the rounds report; None when the project names no taxonomy or has no
    annotated posts."""
    from labeling.curation.export_profiles import build_profiles

    if not project.linking.taxonomy:
        return None
    with state.store() as store:
        docs = annotated_documents(project, store.annotations)
    if not docs:
        return None
    links = ProjectLinks(project, state)
    profiles = build_profiles({"annotated": docs}, links)
    return _summary(profiles, links, rows)
