"""A project's first steps before it has a model: dictionary pre-annotations from its
taxonomy, and `skillloop bootstrap`, a first model trained on dictionary-labelled posts.

Both need the project's `[linking]` taxonomy and its `types` map (training.dictionary):

    [linking]
    taxonomy = "esco"
    types = { K = "Knowledge", S = "Skill", T = "Skill" }

The bootstrap is an ordinary round (backend.loop.run.run_round) whose documents are the
project's human-annotated posts (gold and Label Studio) plus every other post of its
`[data] posts` file labelled by the dictionary. The frozen held-out split applies to them
all alike, so the held-out posts are human-annotated where a person annotated them and
dictionary-labelled otherwise: with no human annotations yet, the version's held-out F1
measures agreement with the dictionary, not correctness. It is registered, gated and
logged like any round (trigger "bootstrap"); later rounds start from it and are scored on
the human annotations.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

from backend.loop.rounds import annotated_documents
from backend.loop.run import run_round

if TYPE_CHECKING:
    from backend.loop.rounds import RoundOutcome
    from labeling.project import Project
    from labeling.state import ProjectState
    from training.dictionary import Dictionary
    from training.registry import ModelVersion
    from training.text import Document

log = logging.getLogger(__name__)

DICTIONARY_SOURCE = "dictionary"
BOOTSTRAP_TRIGGER = "bootstrap"


def project_dictionary(project: Project) -> Dictionary | None:
    """The project's dictionary, or None when its `[linking]` names no taxonomy or no types."""
    from training.dictionary import Dictionary
    from training.taxonomy import load_taxonomy

    settings = project.linking
    if not settings.taxonomy or not settings.types:
        return None
    return Dictionary(load_taxonomy(settings.taxonomy, project.folder), settings.types)


def dictionary_documents(
    project: Project, posts: list[Document], dictionary: Dictionary, human: list[Document]
) -> list[Document]:
    """The posts nobody annotated, labelled by the dictionary (meta source "dictionary")."""
    from training.text import Document, post_key

    annotated = {post_key(doc.text) for doc in human}
    labels = set(project.label_values)
    weak, seen = [], set()
    for post in posts:
        key = post_key(post.text)
        if key in annotated or key in seen or not key:
            continue
        seen.add(key)
        spans = [m.span(None) for m in dictionary.match(post.text) if m.label in labels]
        weak.append(Document(post.text, spans, id=post.id, meta={"source": "dictionary"}))
    return weak


def bootstrap(
    project: Project,
    state: ProjectState,
    posts: list[Document] | None = None,
    *,
    force: bool = False,
    in_process: bool = True,
    progress_bar: bool = False,
    num_threads: int = 1,
) -> tuple[RoundOutcome, ModelVersion | None]:
    """Train, register and gate a first model on dictionary-labelled posts (module
    docstring). ValueError when the project has no dictionary, no posts, or already a
    serving model (unless `force`)."""
    dictionary = project_dictionary(project)
    if dictionary is None:
        raise ValueError(
            f"project {project.name} sets no dictionary: add to project.toml [linking] "
            'taxonomy = "esco" and types = { K = "Knowledge", S = "Skill", T = "Skill" } '
            "(taxonomy types -> project labels)"
        )
    serving = state.registry().serving()
    if serving is not None and not force:
        raise ValueError(
            f"project {project.name} already serves {serving.version}: a bootstrap is for a "
            "project's first model (run `skillloop retrain`, or pass --force)"
        )
    posts = project.posts() if posts is None else posts
    with state.store() as store:
        human = annotated_documents(project, store.annotations)
    weak = dictionary_documents(project, posts, dictionary, human)
    if not weak:
        raise ValueError(f"project {project.name}: no unannotated posts to label")
    spans = sum(len(doc.spans) for doc in weak)
    print(
        f"{dictionary.taxonomy.summary()}; {len(weak)} posts labelled by the dictionary "
        f"({spans} spans), {len(human)} annotated by people",
        file=sys.stderr,
    )
    if dictionary.taxonomy.attribution:
        print(dictionary.taxonomy.attribution, file=sys.stderr)
    return run_round(
        project,
        state,
        BOOTSTRAP_TRIGGER,
        in_process=in_process,
        progress_bar=progress_bar,
        num_threads=num_threads,
        documents=human + weak,
    )
