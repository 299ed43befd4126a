"""Cold start from the taxonomy: every label of a skills taxonomy matched against posts.

The reference model's labels came from matching a skills dictionary against posts; this is
that recipe, for a project without labelled posts yet. A match is:

- whole words only, cut by the project's one word definition (`training.text.words`), so
  "SQL" never matches inside "T-SQL" and "Java" never inside "JavaScript";
- case-insensitive (each word compared casefolded);
- the longest label wins where matches overlap (then the earlier one): the project's
  nesting policy, `training.text.resolve_overlaps`;
- typed through the project's map from taxonomy types to its labels (`[linking] types`,
  e.g. ESCO `K = "Knowledge"`, `S = "Skill"`, `T = "Skill"`): an entry takes the label of
  the first key of the map, in the order the project writes it, that its types hold (for
  ESCO, the pillars of its places in the hierarchy; for a CSV, its `type` column; `"*"`
  matches any entry). Entries no key matches are not matched at all.

The labels sit in a trie of word tuples (a word-level Aho-Corasick without failure links:
walking from each word costs at most the longest label's length), so ESCO's 96,135 labels
are matched against a post in one pass over its words, not by 96k regular expressions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from training.taxonomy import Taxonomy, TaxonomyEntry
from training.text import Span, resolve_overlaps, tag_names, words

if TYPE_CHECKING:
    from training.reading import Prediction

ANY_TYPE = "*"
# The probability a dictionary match (or an unmatched word) is given: a coin flip, so the
# uncertainty strategies read dictionary pre-annotations as unsure and a model's own
# predictions, once there is one, take over the ordering.
DICTIONARY_SCORE = 0.5
DICTIONARY_VERSION = "dictionary"


@dataclass(frozen=True, slots=True)
class Match:
    """A dictionary match: a typed span and the taxonomy entry whose label it is."""

    start: int
    end: int
    label: str  # the project label the entry's type maps to
    text: str
    taxonomy_id: str
    taxonomy_label: str  # the entry's preferred label
    matched_label: str  # the label of the entry that matched (preferred or alternative)

    def span(self, score: float | None = DICTIONARY_SCORE) -> Span:
        return Span(self.start, self.end, self.label, self.text, score)


def entry_types(entry: TaxonomyEntry) -> list[str]:
    """The type codes a types map is matched against: ESCO's pillars (the first code of
    each hierarchy path, e.g. S, K, T), else the entry's `type` as written."""
    if entry.hierarchy:
        return list(dict.fromkeys(path.split("/")[0] for path in entry.hierarchy))
    return [entry.type] if entry.type else []


def entry_label(entry: TaxonomyEntry, types: Mapping[str, str]) -> str | None:
    """The project label `types` gives an entry (None: the entry is not matched)."""
    codes = set(entry_types(entry))
    for code, label in types.items():
        if code == ANY_TYPE or code in codes:
            return label
    return None


def _key(text: str) -> tuple[str, ...]:
    return tuple(text[start:end].casefold() for start, end in words(text))


class Dictionary:
    """The taxonomy's labels in a word trie, typed by a types map."""

    def __init__(self, taxonomy: Taxonomy, types: Mapping[str, str]):
        if not types:
            raise ValueError(
                "a dictionary needs a types map from taxonomy types to project labels "
                '(project.toml: [linking] types = { K = "Knowledge", S = "Skill" })'
            )
        self.taxonomy = taxonomy
        self.types = dict(types)
        self.labels = list(dict.fromkeys(self.types.values()))
        # node: {word: child}; a node's END key holds (entry, label, matched label)
        self._root: dict = {}
        self.n_labels = 0
        # preferred labels first, so a phrase that is one entry's preferred label and
        # another's alternative goes to the first
        ordered = [
            (entry, text, label)
            for rank in (0, 1)
            for entry in taxonomy.entries
            if (label := entry_label(entry, self.types)) is not None
            for text in (entry.labels[:1] if rank == 0 else entry.labels[1:])
        ]
        for entry, text, label in ordered:
            key = _key(text)
            if not key or not any(ch.isalnum() for word in key for ch in word):
                continue  # a label of marks only would match every comma
            node = self._root
            for word in key:
                node = node.setdefault(word, {})
            if _END not in node:
                node[_END] = (entry, label, text)
                self.n_labels += 1

    @property
    def version(self) -> str:
        """The model_version dictionary pre-annotations answer with."""
        return f"{DICTIONARY_VERSION}-{self.taxonomy.name}"

    def match(self, text: str) -> list[Match]:
        """Non-overlapping matches in `text`, in order (module docstring)."""
        offsets = words(text)
        keys = [text[start:end].casefold() for start, end in offsets]
        found: dict[tuple[int, int, str], Match] = {}
        for first in range(len(keys)):
            node: dict = self._root
            best = None
            for i in range(first, len(keys)):
                child = node.get(keys[i])
                if child is None:
                    break
                node = child
                if _END in node:
                    best = (i, node[_END])
            if best is None:
                continue
            last, (entry, label, matched) = best
            start, end = offsets[first][0], offsets[last][1]
            found[(start, end, label)] = Match(
                start, end, label, text[start:end], entry.id, entry.preferred_label, matched
            )
        kept, _ = resolve_overlaps(Span(s, e, label) for s, e, label in found)
        return [found[span.key()] for span in kept]

    def annotate(self, texts: Iterable[str]) -> list[list[Span]]:
        return [[m.span() for m in self.match(text)] for text in texts]


_END = "\x00"  # never a word: words hold no control characters


class DictionaryTagger:
    """Dictionary matches in the shape of `training.tagger.Tagger.predict`'s predictions,
    so the service can pre-annotate with them until a project has its first model: the
    matched words' tags and every other word's O have probability DICTIONARY_SCORE."""

    def __init__(self, dictionary: Dictionary, labels: Sequence[str]):
        self.dictionary = dictionary
        self.labels = list(labels)
        self.tags = tag_names(self.labels)
        self.version = dictionary.version

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        from training.tagger import Prediction
        from training.text import spans_to_tags

        out = []
        for text in texts:
            offsets = words(text)
            spans = [s for s in self.dictionary.annotate([text])[0] if s.label in self.labels]
            word_tags = spans_to_tags(spans, offsets)
            n_tags = len(self.tags)
            rest = (1.0 - DICTIONARY_SCORE) / max(n_tags - 1, 1)
            probs = np.full((len(offsets), n_tags), rest, dtype=np.float32)
            index = {tag: j for j, tag in enumerate(self.tags)}
            for i, tag in enumerate(word_tags):
                probs[i, index[tag]] = DICTIONARY_SCORE
            out.append(Prediction(text, offsets, self.tags, probs, spans, word_tags))
        return out
