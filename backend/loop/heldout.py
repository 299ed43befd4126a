"""What a round trains and is judged on: the project's annotated posts and their frozen
held-out split.

The held-out set is a fixed share of all annotated posts (Label Studio annotations and
the project's gold posts), chosen by a stable hash of the post's text, so a post is
held out in every round or in none and is never trained on. The share is frozen in
`heldout.json` the first time a round runs (delete the file to change it).
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime

from backend.loop.child import write_json
from labeling.project import Project
from labeling.state import ProjectState
from labeling.store import AnnotationStore
from training.text import Document, post_key

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def frozen_share(state: ProjectState, share: float) -> float:
    """The held-out share fixed by the first round (later config edits do not move posts)."""
    path = state.heldout_file
    if path.is_file():
        return float(json.loads(path.read_text())["share"])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(
        path,
        {"share": share, "method": "sha256 of the whitespace-normalised text", "frozen_at": _now()},
    )
    return share


def is_heldout(text: str, share: float) -> bool:
    """Stable across runs, machines and Python versions (unlike hash())."""
    digest = hashlib.sha256(post_key(text).encode("utf-8")).hexdigest()
    return int(digest[:15], 16) / 16**15 < share


def annotated_documents(project: Project, store: AnnotationStore) -> list[Document]:
    """Gold posts plus Label Studio annotations; a post annotated in Label Studio takes its
    latest annotation there over the gold file's version. Spans of labels the project no
    longer has are dropped (logged)."""
    by_text: dict[str, Document] = {}
    for doc in project.gold():
        doc.meta["source"] = "gold"
        by_text[post_key(doc.text)] = doc
    for doc in store.training_documents():
        doc.meta["source"] = "label-studio"
        by_text[post_key(doc.text)] = doc
    labels = set(project.label_values)
    docs = list(by_text.values())
    for doc in docs:
        kept = [s for s in doc.spans if s.label in labels]
        if len(kept) < len(doc.spans):
            log.warning(
                "post %s: dropped %d spans of unknown labels", doc.id, len(doc.spans) - len(kept)
            )
            doc.spans = kept
    return docs


def split_heldout(docs: list[Document], share: float) -> tuple[list[Document], list[Document]]:
    heldout = [d for d in docs if is_heldout(d.text, share)]
    return [d for d in docs if not is_heldout(d.text, share)], heldout
