"""What the reader-word cut (`training.text.words`) changes, without a model: words per
corpus, compounds that used to be several words, and gold spans that change when they go
through the encoder and decoder (`spans_to_tags` -> `tags_to_spans`) under the old cut
(`\\w+|[^\\w\\s]`) and the new one.

    .venv/bin/python -m benchmarks.word_cut [--data DIR] [--json out.json]

Reads SkillSpan from ../shared/data/skillspan when present and the sample project's
gold posts (projects/linkedin-skills/gold.jsonl). Model-free: it runs in seconds.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

from benchmarks.common import ROOT, SKILLSPAN
from training.cpu import cpu_info
from training.datasets import all_spans, read_documents
from training.text import Document, Span, Word, spans_to_tags, tags_to_spans, words

OLD_PATTERN = re.compile(r"\w+|[^\w\s]")


def old_words(text: str) -> list[Word]:
    return [m.span() for m in OLD_PATTERN.finditer(text)]


def round_trip(spans: list[Span], text: str, cut, trim: bool) -> list[Span]:
    offsets = cut(text)
    return tags_to_spans(spans_to_tags(spans, offsets), offsets, text, trim_joiners=trim)


def measure(docs: list[Document]) -> dict:
    n_old = n_new = n_spans = 0
    changed: Counter = Counter()
    compounds: Counter = Counter()
    examples: dict[str, list[str]] = {"compound": [], "trim": []}
    for doc in docs:
        old, new = old_words(doc.text), words(doc.text)
        n_old, n_new = n_old + len(old), n_new + len(new)
        old_set = set(old)
        compounds.update(doc.text[a:b] for a, b in new if (a, b) not in old_set)
        spans = all_spans(doc)
        n_spans += len(spans)
        for span in spans:
            before = round_trip([span], doc.text, old_words, trim=False)
            whole = round_trip([span], doc.text, words, trim=False)
            trimmed = round_trip([span], doc.text, words, trim=True)
            changed["old_cut"] += [s.key() for s in before] != [span.key()]
            for kind, a, b in (("compound", [span], whole), ("trim", whole, trimmed)):
                if [s.key() for s in a] != [s.key() for s in b]:
                    changed[kind] += 1
                    if len(examples[kind]) < 6:
                        shown = [s.text for s in b]
                        examples[kind].append(f"{doc.text[span.start : span.end]!r} -> {shown}")
    return {
        "documents": len(docs),
        "words_old_cut": n_old,
        "words_new_cut": n_new,
        "compound_words": sum(compounds.values()),
        "distinct_compounds": len(compounds),
        "most_common_compounds": [c for c, _ in compounds.most_common(12)],
        "gold_spans": n_spans,
        # gold span -> tags -> span: the old cut kept every span
        "spans_changed_old_cut": changed["old_cut"],
        # ... the new cut: an edge inside a compound snaps to the whole compound
        "spans_changed_by_compounds": changed["compound"],
        "examples_compounds": examples["compound"],
        # ... and the decoder's trimming of lone joiners ("-", "/", ".") at span edges
        "spans_changed_by_joiner_trim": changed["trim"],
        "examples_joiner_trim": examples["trim"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=SKILLSPAN, help="SkillSpan folder")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    corpora = {"linkedin-skills gold": ROOT / "projects" / "linkedin-skills" / "gold.jsonl"}
    for name in ("train", "dev"):
        corpora[f"SkillSpan {name}"] = args.data / f"{name}.json"
    info = cpu_info()
    print(f"{info.line()} (model-free: no timings)")
    cpu = info.as_dict()
    result: dict = {"cpu": cpu, "corpora": {}}
    for name, path in corpora.items():
        if not path.is_file():
            print(f"{name}: {path} not found, skipped", file=sys.stderr)
            continue
        figures = measure(read_documents(path))
        result["corpora"][name] = figures
        print(f"\n{name} ({path.name})")
        for key, value in figures.items():
            print(f"  {key}: {value}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
