"""Documents, spans and words: the data that flows, and the one conversion between
character spans and word-level BIO tags.

Every other module (training, prediction, Label Studio conversion, export) goes through
`spans_to_tags` and `tags_to_spans`, so offsets are computed in exactly one place.

Words are what a span may start or end on, cut the way a reader sees them (`words`):
letters and digits joined by `-`, `/` or `.` are one word (`T-SQL`, `CI/CD`, `Node.js`,
`model-based`, `3.5`), a trailing `+` or `#` belongs to its word (`C++`, `C#`), and every
other mark is a word of its own, so a sentence's final period or a dangling hyphen
(`real- and near-time`) is never part of a word. A span never cuts a word in half, never
ends on a joiner and never carries leading or trailing whitespace. This is coarser than
BERT's pre-tokenizer (which splits at every mark): a word may span several of its pieces,
and it is read from its first subword (`training.windows`).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

# Joiners inside a word: hyphen (ASCII and the Unicode hyphens U+2010, U+2011), slash,
# dot. Only between word characters: a joiner at a word's edge is a word of its own.
JOINERS = "-/.\u2010\u2011"
# A trailing run of `+`/`#` belongs to its word unless more word characters follow
# (`C++`, `C#`; but `Python+SQL` is three words).
WORD_PATTERN = re.compile(rf"\w+(?:[{re.escape(JOINERS)}]\w+)*(?:[+#]+(?![\w+#]))?|[^\w\s]")

OUTSIDE = "O"

# The word rule in one sentence, for dataset cards (the module docstring has it in full),
# and words it names as examples (tests check that each is one word).
WORD_EXAMPLES = ("T-SQL", "PL/SQL", "CI/CD", "Node.js", "3.5", "C++", "C#")
WORD_RULE = (
    "letters and digits joined by `-`, `/` or `.` are one word (`T-SQL`, `PL/SQL`, `CI/CD`, "
    "`Node.js`, `3.5`), a trailing `+` or `#` belongs to its word (`C++`, `C#`), and every "
    "other mark is a word of its own"
)


@dataclass(frozen=True, slots=True)
class Span:
    """A labelled character range `text[start:end]` of a document."""

    start: int
    end: int
    label: str
    text: str = ""
    score: float | None = None
    # The taxonomy entry the span is linked to (docs/linking.md). None everywhere until a
    # linker or an annotator sets them; `link_status` says who decided (LINK_STATUSES).
    taxonomy_id: str | None = None
    taxonomy_label: str | None = None
    link_score: float | None = None
    link_status: str | None = None

    def key(self) -> tuple[int, int, str]:
        """Identity for comparing spans: offsets and label, not text, score or link."""
        return (self.start, self.end, self.label)

    @property
    def linked_by_annotator(self) -> bool:
        """An annotator confirmed or corrected this span's link (not "no match")."""
        return self.link_status in ("confirmed", "corrected") and bool(self.taxonomy_id)


# Who decided a span's link: the linker ("predicted", or "no_match" below its threshold
# on a prediction), or an annotator, who "confirmed" the predicted entry, "corrected" it
# to another one, or said "no_match".
LINK_STATUSES = ("predicted", "confirmed", "corrected", "no_match")
LINK_FIELDS = ("taxonomy_id", "taxonomy_label", "link_score", "link_status")


def span_to_json(span: Span) -> dict:
    """A span as stored and exported: offsets, label, text, and its link fields when set
    (a span without a link serialises exactly as before links existed)."""
    row: dict = {"start": span.start, "end": span.end, "label": span.label, "text": span.text}
    if span.link_status is not None:
        row |= {name: getattr(span, name) for name in LINK_FIELDS}
    return row


def span_from_json(row: Mapping) -> Span:
    """The inverse of `span_to_json` (rows without link fields read as unlinked spans)."""
    score = row.get("link_score")
    status = row.get("link_status")
    return Span(
        int(row["start"]),
        int(row["end"]),
        str(row["label"]),
        str(row.get("text", "")),
        taxonomy_id=_text_or_none(row.get("taxonomy_id")),
        taxonomy_label=_text_or_none(row.get("taxonomy_label")),
        link_score=float(score) if isinstance(score, int | float) else None,
        link_status=status if status in LINK_STATUSES else None,
    )


def carry_links(originals: Iterable[Span], spans: Iterable[Span]) -> list[Span]:
    """`spans` (e.g. snapped to whole words) with the link fields of the original span of
    the same label they overlap most: a span redrawn on its words keeps its link."""
    linked = [o for o in originals if o.link_status is not None]
    if not linked:
        return list(spans)
    out = []
    for span in spans:
        overlaps = [
            (min(span.end, o.end) - max(span.start, o.start), o)
            for o in linked
            if o.label == span.label and o.start < span.end and span.start < o.end
        ]
        if overlaps:
            source = max(overlaps, key=lambda pair: pair[0])[1]
            span = replace(span, **{name: getattr(source, name) for name in LINK_FIELDS})
        out.append(span)
    return out


def annotated_link_fields(span: Span) -> dict | None:
    """An annotator's decision on a span's link as exports write it (None: nobody
    decided, the linker's own link stands)."""
    if span.link_status not in ("confirmed", "corrected", "no_match"):
        return None
    return {name: getattr(span, name) for name in LINK_FIELDS}


def _text_or_none(value: object) -> str | None:
    return None if value is None else str(value)


@dataclass(slots=True)
class Document:
    """A job post (or any text) with its gold or predicted spans."""

    text: str
    spans: list[Span] = field(default_factory=list)
    id: str | None = None
    meta: dict = field(default_factory=dict)


Word = tuple[int, int]


def words(text: str) -> list[Word]:
    """Character offsets `(start, end)` of the words of `text`, in order (see the module
    docstring for what a word is)."""
    return [m.span() for m in WORD_PATTERN.finditer(text)]


# `Document.meta` key of a document read from a tokenised file (CoNLL, SkillSpan's JSON):
# its text is the file's tokens joined by spaces and newlines
TOKENIZED = "tokenized"


def file_tokens(text: str, spans: Iterable[Span]) -> list[Word]:
    """The tokens of a tokenised document's text (see `TOKENIZED`), what a CoNLL file of it
    holds again: its space-separated parts, each cut into `words` only where a span starts
    or ends inside it (so every span stays whole tokens)."""
    edges = {edge for span in spans for edge in (span.start, span.end)}
    out: list[Word] = []
    for part in re.finditer(r"\S+", text):
        start, end = part.span()
        if any(start < edge < end for edge in edges):
            out += [(start + a, start + b) for a, b in words(part.group())]
        else:
            out.append((start, end))
    return out


def tag_names(labels: Sequence[str]) -> list[str]:
    """The IOB2 tag set for `labels`: O first, then B-/I- per label in the given order.
    Code that needs a tag's column asks a `TagSet` by name, never counts positions."""
    tags = [OUTSIDE]
    for label in labels:
        tags += [f"B-{label}", f"I-{label}"]
    return tags


def check_layers(layers: Sequence[Sequence[str]], labels: Sequence[str]) -> list[list[str]]:
    """`layers` as lists, checked to hold every label of `labels` exactly once."""
    out = [list(layer) for layer in layers]
    if any(not layer for layer in out):
        raise ValueError(f"label layers {out}: a layer has no labels")
    grouped = [label for layer in out for label in layer]
    if sorted(grouped) != sorted(labels) or len(set(grouped)) != len(grouped):
        raise ValueError(f"label layers {out} must hold every label {list(labels)} exactly once")
    return out


def is_layered(layers: Sequence[Sequence[str]] | None) -> bool:
    """More than one layer: a single layer is the flat tagger, exactly as without layers."""
    return bool(layers) and len(layers or []) > 1


def split_tag(tag: str) -> tuple[str, str | None]:
    """`"B-Skill"` -> `("B", "Skill")`; `"O"` -> `("O", None)`. Bare B/I are label-less."""
    if tag == OUTSIDE or not tag:
        return OUTSIDE, None
    prefix, _, label = tag.partition("-")
    if prefix not in ("B", "I"):
        raise ValueError(f"not an IOB2 tag: {tag!r}")
    return prefix, label or None


@dataclass(frozen=True, slots=True)
class TagSet:
    """IOB2 tags in column order, and the named maps between their columns (as
    transformers' run_ner.py keeps `b_to_i_label`): `b_to_i[j]` is the column of the I-
    tag that continues the B- tag in column `j`, `i_to_b` the way back. Labels with only
    one of the two tags are left out of both maps. Any order works: `TagSet.of(labels)`
    is `tag_names`'s, but a checkpoint's or a CRF's tags may come in another."""

    tags: tuple[str, ...]
    b_to_i: dict[int, int] = field(init=False, repr=False, compare=False)
    i_to_b: dict[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        column: dict[tuple[str, str | None], int] = {}
        for j, tag in enumerate(self.tags):
            column[split_tag(tag)] = j  # ValueError for a tag that is not IOB2
        if len(column) != len(self.tags):
            raise ValueError(f"duplicate tags in {list(self.tags)}")
        pairs = {
            j: column[("I", label)]
            for (prefix, label), j in column.items()
            if prefix == "B" and ("I", label) in column
        }
        object.__setattr__(self, "b_to_i", pairs)
        object.__setattr__(self, "i_to_b", {i: b for b, i in pairs.items()})

    @classmethod
    def of(cls, labels: Sequence[str]) -> TagSet:
        return cls(tuple(tag_names(labels)))


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


def spans_to_tags(
    spans: Iterable[Span], word_offsets: Sequence[Word], bare: bool = False
) -> list[str]:
    """IOB2 tags, one per word, for character spans: the one encoder.

    A word belongs to a span when they share at least one character, so a span drawn a
    little short or long by an annotator snaps to whole words. Overlapping spans are
    resolved first by `resolve_overlaps`. `bare` writes `B`/`I` without the label (one
    column per label, as SkillSpan files hold them).
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
                prefix = "B" if first else "I"
                tags[i] = prefix if bare else f"{prefix}-{span.label}"
                first = False
            i += 1
    return tags


def tag_runs(tags: Sequence[str], label: str | None = None) -> list[tuple[int, int, str]]:
    """`(first, last, label)` word runs of IOB2 tags (`last` inclusive): the one decoder.

    Lenient: an I- tag that does not continue a run of the same label opens a new one; a
    B- tag always opens a new one, so adjacent entities stay apart. Bare `B`/`I` tags take
    `label` (a ValueError without one).
    """
    runs: list[tuple[int, int, str]] = []
    current: list | None = None  # [first, last, label]
    for i, tag in enumerate(tags):
        prefix, tag_label = split_tag(tag)
        if prefix != OUTSIDE:
            tag_label = tag_label or label
            if tag_label is None:
                raise ValueError(f"bare tag {tag!r} needs a label for its column")
        if prefix == "I" and current is not None and current[2] == tag_label:
            current[1] = i
            continue
        if current is not None:
            runs.append((current[0], current[1], current[2]))
        current = None if prefix == OUTSIDE else [i, i, tag_label]
    if current is not None:
        runs.append((current[0], current[1], current[2]))
    return runs


def is_joiner(text: str, word: Word) -> bool:
    """A word that is a lone joiner (`-`, `/`, `.`): a dangling hyphen or a final period."""
    start, end = word
    return end - start == 1 and text[start] in JOINERS


def opens_a_dotted_name(text: str, words_: Sequence[Word], first: int, last: int) -> bool:
    """The span's first word is a lone `.` that starts a name rather than ending a sentence:
    nothing of a word right before it, and more of the span right after it (`.NET`,
    `.js`, and SkillSpan's tokenised `. NET` / `. net-core`). `Python.` ends a sentence:
    its dot touches the word before."""
    start, end = words_[first]
    if first >= last or text[start] != "." or end - start != 1:
        return False
    return start == 0 or text[start - 1].isspace()


def tags_to_spans(
    tags: Sequence[str],
    word_offsets: Sequence[Word],
    text: str,
    word_scores: Sequence[float] | None = None,
    *,
    label: str | None = None,
    trim_joiners: bool = True,
) -> list[Span]:
    """Character spans from IOB2 word tags (decoded by `tag_runs`).

    With `trim_joiners` (the default, for everything shown to a user) a span never starts
    or ends on a lone joiner word (`real-`, `-time`, `Python.` become `real`, `time`,
    `Python`), except a leading dot that opens a name (`.NET`: `opens_a_dotted_name`); a
    span of nothing but joiners is dropped. Readers of tokenised gold files
    pass False to keep the spans as the file gives them. A span's score is the lowest score
    of its words: it is only as sure as its least sure word.
    """
    if len(tags) != len(word_offsets):
        raise ValueError(f"{len(tags)} tags for {len(word_offsets)} words")
    spans: list[Span] = []
    for first, last, run_label in tag_runs(tags, label):
        if trim_joiners:
            while (
                first <= last
                and is_joiner(text, word_offsets[first])
                and not opens_a_dotted_name(text, word_offsets, first, last)
            ):
                first += 1
            while last >= first and is_joiner(text, word_offsets[last]):
                last -= 1
            if first > last:
                continue
        start, end = word_offsets[first][0], word_offsets[last][1]
        score = None
        if word_scores is not None:
            score = float(min(word_scores[first : last + 1]))
        spans.append(Span(start, end, run_label, text[start:end], score))
    return spans


def post_key(text: str) -> str:
    """A post's identity: its text with runs of whitespace made one space and the ends
    stripped. Training (which annotation replaces a gold post), the frozen held-out hash,
    selection (which posts are labelled) and export (gold vs annotated, exact duplicates)
    all compare posts by this key, so they agree on "the same post"."""
    return " ".join(text.split())
