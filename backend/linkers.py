"""How a linker is opened: a project's (its `[linking]` section, its serving linker version,
its label-embedding cache) or one named by a taxonomy and a folder. One place for the
service's linker holder, the command line and the exports.

`linker_key` says what identifies the linker `project_linker` opens for a project: the
taxonomy's source file and its version (size and modification time), the linker folder
and its version (every file's size and modification time: its settings, linker.json, are
one of them), the threshold, and the entries annotators added. Projects whose keys are
equal (a backend's Label Studio projects made from one template) share one loaded linker
(backend/service/linker_holder.py)."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from labeling.link_pairs import project_taxonomy_additions

if TYPE_CHECKING:
    from labeling.project import Project
    from labeling.state import ProjectState
    from training.linker import Linker
    from training.taxonomy import TaxonomyEntry

LinkerKey = Hashable


def project_linker(
    project: Project,
    state: ProjectState,
    taxonomy: str | None = None,
    linker: str | None = None,
    top_k: int | None = None,
    threshold: float | None = None,
    progress: bool = True,
    additions: Sequence[TaxonomyEntry] | None = None,
) -> tuple[Linker, int]:
    """(linker, top_k) from a project's `[linking]` section; label embeddings cached in
    `state`, the project's state (a Label Studio project's `studio-<id>` on a backend
    serving several). The linker: `linker`, else the serving version in the project's linker
    registry (`skillloop link-train`), else `[linking] linker` (the base linker versions
    are trained on), else the plain backbone. `additions`: the entries annotators added
    (default: read from the project's store)."""
    spec, folder = _sources(project, state, taxonomy, linker)
    found, k = open_linker_for(
        spec,
        project.folder,
        folder,
        state.linking_cache,
        top_k or project.linking.top_k,
        threshold,
        progress,
    )
    added = found.add_entries(project_taxonomy_additions(state) if additions is None else additions)
    if added:
        print(f"{added} entries annotators added, linkable too", file=sys.stderr)
    return found, k


def linker_key(
    project: Project,
    state: ProjectState,
    threshold: float | None = None,
    additions: Sequence[TaxonomyEntry] | None = None,
) -> LinkerKey:
    """What identifies the linker `project_linker(project, state, threshold=threshold,
    additions=additions)` opens (OSError, TaxonomyError, ValueError: it cannot be opened)."""
    from training.taxonomy import taxonomy_path

    spec, folder = _sources(project, state)
    taxonomy = _stamp(taxonomy_path(spec, project.folder))
    version = ("backbone",) if folder is None or folder == "backbone" else _stamp(Path(folder))
    if additions is None:
        additions = project_taxonomy_additions(state)
    added = hashlib.sha256()
    for entry in additions:
        added.update("\x1f".join([entry.id, *entry.labels]).encode() + b"\x1e")
    return ("linker", taxonomy, version, threshold, added.hexdigest()[:16])


def _sources(
    project: Project, state: ProjectState, taxonomy: str | None = None, linker: str | None = None
) -> tuple[str, str | None]:
    """(taxonomy spec, linker folder or None for the plain backbone) of a project."""
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
    return spec, linker or None


def _stamp(path: Path) -> tuple:
    """A file or folder and its version: every file's relative path, size and mtime."""
    path = path.resolve()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return (str(path), *((str(f.relative_to(path.parent)), *_size_time(f)) for f in files))


def _size_time(path: Path) -> tuple[int, int]:
    found = path.stat()  # FileNotFoundError: as opening it would
    return found.st_size, found.st_mtime_ns


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
