"""Reading and writing labelled documents: SkillSpan JSON lines, CoNLL BIO columns and
skillloop's own JSONL (`{"text", "spans": [{"start", "end", "label"}], "id", "meta"}`).

Every reader returns `Document`s with exact character spans; tokenised formats become
text by joining tokens with single spaces and sentences with newlines.

Nesting policy: a flat BIO tagger holds one label per word, so where two layers overlap
(a Knowledge span inside a Skill span in SkillSpan) `training.text.resolve_overlaps`
keeps the longer span. The spans it drops are kept in `doc.meta["dropped"]` so their cost
can be counted (`dropped_by_label`) and so writers and label layers (`training.layers`,
which train each layer on all its spans) can restore them.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from training.text import (
    TOKENIZED,
    Document,
    Span,
    file_tokens,
    resolve_overlaps,
    spans_to_tags,
    split_tag,
    tags_to_spans,
    with_text,
    words,
)

SKILLSPAN_LAYERS = {"tags_skill": "Skill", "tags_knowledge": "Knowledge"}
CONLL_SUFFIXES = (".conll", ".bio", ".iob", ".tsv", ".txt")
DOCSTART = "-DOCSTART-"


# ---------------------------------------------------------------- tokens <-> spans


def join_tokens(sentences: Sequence[Sequence[str]]) -> tuple[str, list[list[tuple[int, int]]]]:
    """Text of tokenised sentences and every token's character offsets in it."""
    parts: list[str] = []
    offsets: list[list[tuple[int, int]]] = []
    position = 0
    for s, tokens in enumerate(sentences):
        if s:
            parts.append("\n")
            position += 1
        sentence_offsets = []
        for t, token in enumerate(tokens):
            if t:
                parts.append(" ")
                position += 1
            parts.append(token)
            sentence_offsets.append((position, position + len(token)))
            position += len(token)
        offsets.append(sentence_offsets)
    return "".join(parts), offsets


def column_spans(
    text: str, tags: Sequence[str], offsets: Sequence[tuple[int, int]], label: str | None
) -> list[Span]:
    """Spans of one BIO column of tokens (`training.text.tags_to_spans`, the one decoder):
    bare `B`/`I` tags take `label`, an orphan I- opens a span, and the spans are kept as
    the file gives them (a gold span ending on a lone "." token keeps it)."""
    return tags_to_spans(tags, offsets, text, label=label, trim_joiners=False)


def flatten(text: str, spans: Iterable[Span], **meta) -> Document:
    """A document whose overlapping spans are resolved by the nesting policy."""
    kept, dropped = resolve_overlaps(spans)
    if dropped:
        meta["dropped"] = [{"start": s.start, "end": s.end, "label": s.label} for s in dropped]
    return Document(text, with_text(kept, text), meta=meta)


def span_dict(span: Span) -> dict:
    out = {"start": span.start, "end": span.end, "label": span.label}
    if span.text:
        out["text"] = span.text
    if span.score is not None:
        out["score"] = round(float(span.score), 4)
    return out


def all_spans(doc: Document) -> list[Span]:
    """A document's spans plus those the nesting policy dropped."""
    dropped = [Span(d["start"], d["end"], d["label"]) for d in doc.meta.get("dropped", [])]
    return sorted([*doc.spans, *dropped], key=lambda s: (s.start, s.end, s.label))


def dropped_by_label(docs: Iterable[Document]) -> dict[str, dict[str, int]]:
    """Per label: gold spans before flattening, spans dropped by the nesting policy."""
    total: Counter = Counter()
    dropped: Counter = Counter()
    for doc in docs:
        for span in all_spans(doc):
            total[span.label] += 1
        for d in doc.meta.get("dropped", []):
            dropped[d["label"]] += 1
    return {label: {"gold": total[label], "dropped": dropped[label]} for label in sorted(total)}


def labels_of(docs: Iterable[Document]) -> list[str]:
    """Labels in order of first appearance."""
    return list(dict.fromkeys(s.label for doc in docs for s in doc.spans))


# ---------------------------------------------------------------- SkillSpan JSON lines


def read_skillspan(path: str | Path) -> list[Document]:
    """SkillSpan JSON lines: sentences regroup into postings by (source, idx) in file order."""
    groups: dict[tuple[str, object], list[dict]] = {}
    for number, line in enumerate(_lines(path), 1):
        row = _json(line, path, number)
        if "tokens" not in row:
            raise ValueError(f"{path}:{number}: not a SkillSpan row (no 'tokens')")
        groups.setdefault((row.get("source", ""), row.get("idx")), []).append(row)
    docs = []
    for (source, idx), rows in groups.items():
        text, offsets = join_tokens([row["tokens"] for row in rows])
        spans = [
            span
            for row, sentence_offsets in zip(rows, offsets, strict=True)
            for column, label in SKILLSPAN_LAYERS.items()
            for span in column_spans(
                text, row.get(column) or ["O"] * len(row["tokens"]), sentence_offsets, label
            )
        ]
        doc = flatten(text, spans, source=source, idx=idx, **{TOKENIZED: True})
        doc.id = f"{source}-{idx}"
        docs.append(doc)
    return docs


def write_skillspan(docs: Iterable[Document], path: str | Path) -> None:
    """SkillSpan JSON lines; sentences are the text's lines, tokens its space-separated parts.
    Spans the nesting policy dropped are written back into their layer."""
    layer_of = {label: column for column, label in SKILLSPAN_LAYERS.items()}
    with open(path, "w", encoding="utf-8") as out:
        for n, doc in enumerate(docs, 1):
            spans = all_spans(doc)
            unknown = sorted({s.label for s in spans} - set(layer_of))
            if unknown:
                raise ValueError(f"SkillSpan holds only Skill and Knowledge, not {unknown}")
            position = 0
            for sentence in doc.text.split("\n"):
                offsets, tokens = [], []
                for token in sentence.split(" "):
                    if token:
                        offsets.append((position, position + len(token)))
                        tokens.append(token)
                    position += len(token) + 1
                row = {"idx": doc.meta.get("idx", n), "tokens": tokens}
                for label, column in layer_of.items():
                    layer = [s for s in spans if s.label == label]
                    row[column] = spans_to_tags(layer, offsets, bare=True)
                row["source"] = doc.meta.get("source", "")
                out.write(json.dumps(row, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------- CoNLL columns


def read_conll(path: str | Path, column_labels: Sequence[str] | None = None) -> list[Document]:
    """CoNLL BIO columns: a token and one or more tag columns, blank line between sentences.

    `-DOCSTART-` lines separate documents; without them every sentence is a document.
    Bare `B`/`I` tags take their label from `column_labels` (one per tag column); SkillSpan
    files (name contains "skillspan") default to Skill, Knowledge.
    """
    path = Path(path)
    if column_labels is None and "skillspan" in path.name.lower():
        column_labels = list(SKILLSPAN_LAYERS.values())
    documents: list[list[list[list[str]]]] = [[]]  # documents > sentences > rows
    sentence: list[list[str]] = []
    has_docstart = False
    for number, line in enumerate(_lines(path, keep_blank=True), 1):
        fields = line.split()
        if fields and fields[0] == DOCSTART:
            has_docstart = True
            if sentence:
                documents[-1].append(sentence)
                sentence = []
            if documents[-1]:
                documents.append([])
            continue
        if not fields:
            if sentence:
                documents[-1].append(sentence)
                sentence = []
            continue
        if len(fields) < 2:
            raise ValueError(f"{path}:{number}: expected a token and at least one tag column")
        sentence.append(fields)
    if sentence:
        documents[-1].append(sentence)
    if not has_docstart:
        documents = [[s] for s in documents[0]]
    return [
        _conll_document(sentences, column_labels, path, n)
        for n, sentences in enumerate(documents, 1)
        if sentences
    ]


def _conll_document(sentences, column_labels, path, n) -> Document:
    width = len(sentences[0][0])
    if any(len(row) != width for s in sentences for row in s):
        raise ValueError(f"{path}: document {n} has rows with different numbers of columns")
    n_columns = width - 1
    if column_labels is not None and len(column_labels) != n_columns:
        raise ValueError(f"{path}: {n_columns} tag columns but labels {list(column_labels)}")
    text, offsets = join_tokens([[row[0] for row in s] for s in sentences])
    spans = []
    for column in range(n_columns):
        label = column_labels[column] if column_labels else None
        for s, sentence_offsets in zip(sentences, offsets, strict=True):
            tags = [row[column + 1] for row in s]
            try:
                spans += column_spans(text, tags, sentence_offsets, label)
            except ValueError as err:
                raise ValueError(f"{path}: {err} (pass column labels)") from None
    doc = flatten(text, spans, **{TOKENIZED: True})
    doc.id = str(n)
    return doc


def write_conll(
    docs: Iterable[Document], path: str | Path, layers: Sequence[Sequence[str]] | None = None
) -> None:
    """One tag column with labelled IOB2 tags; tokens are `training.text.words` (a document
    read from a tokenised file: its own tokens, `training.text.file_tokens`), sentences the
    text's lines; `-DOCSTART-` before each document.

    With label `layers` (more than one), one tag column per layer, as SkillSpan ships
    Skill and Knowledge: each column holds its layer's spans, overlaps with other layers
    kept (the spans the nesting policy dropped included, `all_spans`); `read_conll` reads
    them back. A sentence never breaks inside a span: the lines a span crosses (a line
    break or a blank line inside it) are written as one sentence, so the span stays one
    entity (B- then I- tags), as it is one span in JSONL and the HF dataset.
    """
    groups = [list(layer) for layer in layers or []]
    with open(path, "w", encoding="utf-8") as out:
        for doc in docs:
            spans = all_spans(doc) if len(groups) > 1 else doc.spans
            offsets = file_tokens(doc.text, spans) if doc.meta.get(TOKENIZED) else words(doc.text)
            if len(groups) > 1:
                unknown = sorted({s.label for s in spans} - {x for g in groups for x in g})
                if unknown:
                    raise ValueError(f"labels {unknown} are in none of the layers {groups}")
                columns = [
                    spans_to_tags([s for s in spans if s.label in group], offsets)
                    for group in groups
                ]
            else:
                columns = [spans_to_tags(doc.spans, offsets)]
            out.write(DOCSTART + "\tO" * len(columns) + "\n\n")
            for i, ((start, end), *tags) in enumerate(zip(offsets, *columns, strict=True)):
                inside = any(split_tag(tag)[0] == "I" for tag in tags)
                if i and "\n" in doc.text[offsets[i - 1][1] : start] and not inside:
                    out.write("\n")
                out.write("\t".join([doc.text[start:end], *tags]) + "\n")
            if offsets:
                out.write("\n")


# ---------------------------------------------------------------- JSONL


def read_jsonl(path: str | Path) -> list[Document]:
    """`{"text", "spans": [{"start", "end", "label"}], "id"?, "meta"?}` per line; other
    top-level keys go into meta. Overlapping spans are resolved by the nesting policy."""
    docs = []
    with open(path, encoding="utf-8") as handle:
        rows = list(jsonl_objects(handle, str(path)))
    for number, row in rows:
        text = row.get("text")
        if not isinstance(text, str):
            raise ValueError(f"{path}:{number}: 'text' must be a string")
        spans = []
        for raw in row.get("spans") or []:
            try:
                span = Span(int(raw["start"]), int(raw["end"]), str(raw["label"]))
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"{path}:{number}: a span needs start, end, label") from None
            if not 0 <= span.start < span.end <= len(text):
                raise ValueError(f"{path}:{number}: span {span.key()} is outside the text")
            spans.append(span)
        meta = dict(row.get("meta") or {})
        meta.update({k: v for k, v in row.items() if k not in ("text", "spans", "id", "meta")})
        doc = flatten(text, spans, **meta)
        doc.id = None if row.get("id") is None else str(row["id"])
        docs.append(doc)
    return docs


def write_jsonl(docs: Iterable[Document], path: str | Path) -> None:
    with open(path, "w", encoding="utf-8") as out:
        for doc in docs:
            row: dict = {"text": doc.text, "spans": [span_dict(s) for s in doc.spans]}
            if doc.id is not None:
                row["id"] = doc.id
            if doc.meta:
                row["meta"] = doc.meta
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------- dispatch and splits


def read_documents(path: str | Path, column_labels: Sequence[str] | None = None) -> list[Document]:
    """Read any supported file, choosing the format by extension and first line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in CONLL_SUFFIXES:
        return read_conll(path, column_labels)
    if suffix in (".json", ".jsonl", ".ndjson"):
        first = next(iter(_lines(path)), None)
        if first is None:
            return []
        row = _json(first, path, 1)
        if "tokens" in row:
            return read_skillspan(path)
        if "text" in row:
            return read_jsonl(path)
        raise ValueError(f"{path}: JSON lines with neither 'tokens' (SkillSpan) nor 'text'")
    raise ValueError(
        f"unknown data format {suffix or '(no extension)'!r} for {path}: use .json "
        "(SkillSpan), .jsonl ({text, spans}) or .conll"
    )


def split_documents(
    docs: Sequence[Document], shares: Sequence[float], seed: int = 0
) -> list[list[Document]]:
    """Random split into parts of the given shares, by document, never inside one.

    Documents sharing an `id` stay in the same part (chunks of one posting never leak
    across parts). Shares are normalised; each part gets a whole number of groups.
    """
    if not shares or any(s < 0 for s in shares) or sum(shares) <= 0:
        raise ValueError(f"shares must be non-negative and sum to more than 0: {list(shares)}")
    groups: dict[object, list[Document]] = {}
    for n, doc in enumerate(docs):
        groups.setdefault(doc.id if doc.id is not None else ("#", n), []).append(doc)
    keys = list(groups)
    random.Random(seed).shuffle(keys)
    total = sum(shares)
    parts: list[list[Document]] = []
    cut_from, cumulative = 0, 0.0
    for share in shares:
        cumulative += share
        cut_to = round(len(keys) * cumulative / total)
        parts.append([doc for key in keys[cut_from:cut_to] for doc in groups[key]])
        cut_from = cut_to
    return parts


def _lines(path: str | Path, keep_blank: bool = False):
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.rstrip("\r\n")
            if keep_blank or line.strip():
                yield line


def jsonl_objects(handle: Iterable[str], name: str) -> Iterator[tuple[int, dict]]:
    """`(line number, object)` for each non-blank line; a line that is not a JSON object
    is a ValueError naming the file and line."""
    for number, line in enumerate(handle, 1):
        if line.strip():
            yield number, _json(line, name, number)


def _json(line: str, path: str | Path, number: int) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{number}: not valid JSON ({err.msg})") from None
    if not isinstance(row, dict):
        raise ValueError(f"{path}:{number}: each line must be a JSON object")
    return row
