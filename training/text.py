"""Documents, spans and words: the data that flows, and the one conversion between
character spans and word-level BIO tags.

Every other module (training, prediction, Label Studio conversion, export) goes through
`spans_to_tags` and `tags_to_spans`, so offsets are computed in exactly one place.

Words are what a span may start or end on: runs of word characters, or single
punctuation marks (`\\w+|[^\\w\\s]`, the same cut BERT's pre-tokenizer makes). A span
never cuts a word in half and never carries leading or trailing whitespace.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

WORD_PATTERN = re.compile(r"\w+|[^\w\s]")

OUTSIDE = "O"


@dataclass(frozen=True, slots=True)
class Span:
    """A labelled character range `text[start:end]` of a document."""

    start: int
    end: int
    label: str
    text: str = ""
    score: float | None = None

    def key(self) -> tuple[int, int, str]:
        """Identity for comparing spans: offsets and label, not text or score."""
        return (self.start, self.end, self.label)


@dataclass(slots=True)
class Document:
    """A job post (or any text) with its gold or predicted spans."""

    text: str
    spans: list[Span] = field(default_factory=list)
    id: str | None = None
    meta: dict = field(default_factory=dict)


Word = tuple[int, int]


def words(text: str) -> list[Word]:
    """Character offsets `(start, end)` of the words of `text`."""
    return [m.span() for m in WORD_PATTERN.finditer(text)]


def tag_names(labels: Sequence[str]) -> list[str]:
    """The IOB2 tag set for `labels`: O first, then B-/I- per label in the given order."""
    tags = [OUTSIDE]
    for label in labels:
        tags += [f"B-{label}", f"I-{label}"]
    return tags


def split_tag(tag: str) -> tuple[str, str | None]:
    """`"B-Skill"` -> `("B", "Skill")`; `"O"` -> `("O", None)`. Bare B/I are label-less."""
    if tag == OUTSIDE or not tag:
        return OUTSIDE, None
    prefix, _, label = tag.partition("-")
    if prefix not in ("B", "I"):
        raise ValueError(f"not an IOB2 tag: {tag!r}")
    return prefix, label or None


def with_text(spans: Iterable[Span], text: str) -> list[Span]:
    """Spans with their `text` field filled from the document."""
    return [replace(s, text=text[s.start : s.end]) for s in spans]


def resolve_overlaps(spans: Iterable[Span]) -> tuple[list[Span], list[Span]]:
    """Keep a non-overlapping subset: longer spans win, then earlier ones.

    A flat BIO tagger cannot hold nested spans; this is the nesting policy everywhere in
    skillloop. Returns `(kept, dropped)`, both sorted by position.
    """
    kept: list[Span] = []
    dropped: list[Span] = []
    for span in sorted(spans, key=lambda s: (-(s.end - s.start), s.start, s.label)):
        if any(span.start < k.end and k.start < span.end for k in kept):
            dropped.append(span)
        else:
            kept.append(span)
    order = lambda s: (s.start, s.end, s.label)  # noqa: E731
    return sorted(kept, key=order), sorted(dropped, key=order)


def spans_to_tags(spans: Iterable[Span], word_offsets: Sequence[Word]) -> list[str]:
    """IOB2 tags, one per word, for character spans.

    A word belongs to a span when they share at least one character, so a span drawn a
    little short or long by an annotator snaps to whole words. Overlapping spans are
    resolved first by `resolve_overlaps`.
    """
    kept, _ = resolve_overlaps(spans)
    tags = [OUTSIDE] * len(word_offsets)
    starts = [w[0] for w in word_offsets]
    for span in kept:
        first = True
        # words are sorted; start from the first word that could overlap
        i = max(bisect_right(starts, span.start) - 1, 0)
        while i < len(word_offsets) and word_offsets[i][0] < span.end:
            w_start, w_end = word_offsets[i]
            if w_end > span.start and tags[i] == OUTSIDE:
                tags[i] = f"{'B' if first else 'I'}-{span.label}"
                first = False
            i += 1
    return tags


def tags_to_spans(
    tags: Sequence[str],
    word_offsets: Sequence[Word],
    text: str,
    word_scores: Sequence[float] | None = None,
) -> list[Span]:
    """Character spans from IOB2 word tags.

    Lenient decoding: an I- tag that does not continue a span of the same label opens a
    new one; a B- tag always opens a new one, so adjacent entities stay apart. A span's
    score is the lowest score of its words: it is only as sure as its least sure word.
    """
    if len(tags) != len(word_offsets):
        raise ValueError(f"{len(tags)} tags for {len(word_offsets)} words")
    spans: list[Span] = []
    current: list[int] | None = None  # [first word, last word]
    current_label: str | None = None

    def close() -> None:
        if current is None:
            return
        start, end = word_offsets[current[0]][0], word_offsets[current[1]][1]
        score = None
        if word_scores is not None:
            score = float(min(word_scores[current[0] : current[1] + 1]))
        spans.append(Span(start, end, current_label or "", text[start:end], score))

    for i, tag in enumerate(tags):
        prefix, label = split_tag(tag)
        if prefix == "I" and current is not None and label == current_label:
            current[1] = i
            continue
        close()
        current, current_label = (None, None) if prefix == OUTSIDE else ([i, i], label)
    close()
    return spans
