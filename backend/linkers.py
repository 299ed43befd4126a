"""How a linker is opened: a project's (its `[linking]` section, its serving linker version,
its label-embedding cache) or one named by a taxonomy and a folder. One place for the
service's linker holder, the command line and the exports."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from labeling.link_pairs import project_taxonomy_additions

if TYPE_CHECKING:
    from labeling.project import Project
    from labeling.state import ProjectState
    from training.linker import Linker


def project_linker(
    project: Project,
    state: ProjectState,
    taxonomy: str | None = None,
    linker: str | None = None,
    top_k: int | None = None,
    threshold: float | None = None,
    progress: bool = True,
) -> tuple[Linker, int]:
    """(linker, top_k) from a project's `[linking]` section; label embeddings cached in
    `state`, the project's state (a Label Studio project's `studio-<id>` on a backend
    serving several). The linker: `linker`, else the serving version in the project's linker
    registry (`skillloop link-train`), else `[linking] linker` (the base linker versions
    are trained on), else the plain backbone."""
    settings = project.linking
    spec = taxonomy or settings.taxonomy
    if not spec:
        raise ValueError(
            f'project {project.name} names no taxonomy: add [linking] taxonomy = "esco"'
        )
    if not linker:  # the serving version of `skillloop link-train`, if any
        serving = state.linker_registry().serving()
        if serving is not None:
            linker = str(serving.path)
    if not linker and settings.linker not in ("", "backbone"):
        linker = str(project.folder / settings.linker)
    cache = state.linking_cache
    found, k = open_linker_for(
        spec, project.folder, linker, cache, top_k or settings.top_k, threshold, progress
    )
    added = found.add_entries(project_taxonomy_additions(state))
    if added:
        print(f"{added} entries annotators added, linkable too", file=sys.stderr)
    return found, k


def open_linker_for(
    spec: str,
    base: Path | None,
    folder: str | None,
    cache: Path,
    top_k: int | None,
    threshold: float | None,
    progress: bool,
) -> tuple[Linker, int]:
    from training.linker import Linker
    from training.taxonomy import load_taxonomy

    if top_k is not None and top_k < 1:
        raise ValueError("--top-k must be at least 1")
    taxonomy = load_taxonomy(spec, base)
    print(taxonomy.summary(), file=sys.stderr)
    if taxonomy.attribution:
        print(taxonomy.attribution, file=sys.stderr)
    linker = Linker.load(taxonomy, folder, cache_dir=cache, progress=progress)
    if threshold is not None:
        linker.settings.threshold = threshold
    return linker, top_k or 5
