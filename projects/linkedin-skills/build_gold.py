"""Build gold.jsonl from the phrases in gold_phrases.toml, with exact character offsets.

Gold spans are authored as phrases, not offsets, so they stay readable and offsets can
never drift from the text. Deterministic; rerun after editing posts.jsonl or the phrases:

    .venv/bin/python projects/linkedin-skills/build_gold.py            # writes gold.jsonl
    .venv/bin/python projects/linkedin-skills/build_gold.py --show post-001   # review one
    .venv/bin/python projects/linkedin-skills/build_gold.py --stats           # counts

Phrase entries (see the comments in gold_phrases.toml):
- `"Python"`: every occurrence in the post, on word boundaries, case-sensitive; the same
  phrase with a capitalised first letter also matches (sentence starts, bullets).
- `"ideally in [retail] or [consumer goods]"`: only the bracketed parts, inside every
  occurrence of the whole context string; for words that are skills in one place only.
- `skip = ["context"]`: lexicon matches inside these strings are not marked.
Overlapping matches keep the longer one ("Azure Data Factory" over "Azure"), the policy
of `training.text.resolve_overlaps`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from pathlib import Path

from training.text import Span, resolve_overlaps, words

HERE = Path(__file__).resolve().parent
LABELS = ("Technology", "Technical", "Business", "Soft")


def variants(phrase: str) -> set[str]:
    return {phrase, phrase[:1].upper() + phrase[1:]}


def find_all(text: str, needle: str) -> list[int]:
    return [m.start() for m in re.finditer(re.escape(needle), text)]


def phrase_spans(text: str, entry: str, label: str, bounds: tuple[set, set]) -> list[Span]:
    """Spans for one authored entry: a plain phrase or a context with a [bracketed] part."""
    starts, ends = bounds
    if "[" in entry:
        parts = re.split(r"\[([^\]]*)\]", entry)  # odd items are the bracketed phrases
        context = "".join(parts)
        offsets, at = [], 0
        for i, part in enumerate(parts):
            if i % 2:
                offsets.append((at, at + len(part)))
            at += len(part)
        found = [
            Span(hit + a, hit + b, label) for hit in find_all(text, context) for a, b in offsets
        ]
    else:
        found = [
            Span(at, at + len(entry), label)
            for variant in variants(entry)
            for at in find_all(text, variant)
        ]
    return [s for s in found if s.start in starts and s.end in ends]


def annotate(post: dict, lexicon: dict, entry: dict) -> tuple[list[Span], list[str]]:
    """Gold spans for one post, and the post-specific entries that matched nothing."""
    text = post["text"]
    offsets = words(text)
    bounds = ({w[0] for w in offsets}, {w[1] for w in offsets})
    spans: list[Span] = []
    unmatched = []
    for label in LABELS:
        for phrase in lexicon.get(label, []):
            spans += phrase_spans(text, phrase, label, bounds)
        for phrase in entry.get(label, []):
            found = phrase_spans(text, phrase, label, bounds)
            unmatched += [] if found else [f"{label}: {phrase}"]
            spans += found
    for context in entry.get("skip", []):
        hits = [(at, at + len(context)) for at in find_all(text, context)]
        unmatched += [] if hits else [f"skip: {context}"]
        spans = [s for s in spans if not any(a <= s.start and s.end <= b for a, b in hits)]
    by_offsets: dict[tuple[int, int], set[str]] = {}
    for s in spans:
        by_offsets.setdefault((s.start, s.end), set()).add(s.label)
    clashes = {k: v for k, v in by_offsets.items() if len(v) > 1}
    if clashes:
        (start, end), labels = next(iter(clashes.items()))
        raise ValueError(f"{post['id']}: {text[start:end]!r} has labels {sorted(labels)}")
    kept, _ = resolve_overlaps(set(spans))
    return kept, unmatched


def build(posts_path: Path, phrases_path: Path) -> list[dict]:
    posts = {}
    for line in posts_path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            posts[row["id"]] = row
    phrases = tomllib.loads(phrases_path.read_text(encoding="utf-8"))
    rows, problems = [], []
    for post_id, entry in phrases["posts"].items():
        if post_id not in posts:
            raise ValueError(f"{phrases_path.name}: no post {post_id!r} in {posts_path.name}")
        spans, unmatched = annotate(posts[post_id], phrases["lexicon"], entry)
        problems += [f"{post_id}: matched nothing: {u}" for u in unmatched]
        rows.append(
            {
                "id": post_id,
                "text": posts[post_id]["text"],
                "spans": [{"start": s.start, "end": s.end, "label": s.label} for s in spans],
            }
        )
    if problems:
        raise ValueError("\n".join(problems))
    return rows


def show(row: dict) -> str:
    """The post with its spans drawn as [text|Label], for reviewing by eye."""
    text, out, at = row["text"], [], 0
    for s in row["spans"]:
        out += [text[at : s["start"]], f"[{text[s['start'] : s['end']]}|{s['label']}]"]
        at = s["end"]
    return "".join(out + [text[at:]])


def stats(rows: list[dict]) -> str:
    """Counts for the docs: posts and their lengths, gold posts, spans per label."""
    posts = [json.loads(line) for line in (HERE / "posts.jsonl").read_text("utf-8").splitlines()]
    lengths = sorted(len(post["text"].split()) for post in posts)
    spans = [r["text"][s["start"] : s["end"]] + "\t" + s["label"] for r in rows for s in r["spans"]]
    lines = [
        f"posts: {len(posts)}, words per post min {lengths[0]} median "
        f"{lengths[len(lengths) // 2]} max {lengths[-1]}, >= 400 words: "
        f"{sum(n >= 400 for n in lengths)}",
        f"gold posts: {len(rows)}, spans: {len(spans)}, distinct phrases: {len(set(spans))}",
    ]
    for label in LABELS:
        mine = [s for s in spans if s.endswith("\t" + label)]
        lines.append(f"  {label}: {len(mine)} spans, {len(set(mine))} distinct")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--show", nargs="*", metavar="ID", help="print posts with their spans")
    parser.add_argument("--stats", action="store_true", help="print counts, write nothing")
    args = parser.parse_args(argv)
    rows = build(HERE / "posts.jsonl", HERE / "gold_phrases.toml")
    if args.stats:
        print(stats(rows))
        return 0
    if args.show is not None:
        for row in rows:
            if not args.show or row["id"] in args.show:
                print(f"== {row['id']}\n{show(row)}\n")
        return 0
    with open(HERE / "gold.jsonl", "w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    counts = {label: sum(s["label"] == label for r in rows for s in r["spans"]) for label in LABELS}
    print(f"{len(rows)} gold posts, spans per label: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
