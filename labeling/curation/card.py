"""The dataset card (README.md) written into every export: what is in it, per label and
split, how long the spans are, under which licence, and exactly how it was made."""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from training.text import WORD_RULE, words


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def label_counts(result) -> list[list]:
    rows = []
    names = list(result.splits)
    for label in result.labels:
        counts = [sum(s.label == label for p in result.splits[n] for s in p.spans) for n in names]
        posts = [sum(label in p.labels for p in result.splits[n]) for n in names]
        rows.append(
            [label, *(f"{c} ({p} posts)" for c, p in zip(counts, posts, strict=True)), sum(counts)]
        )
    return rows


def span_lengths(result) -> list[list]:
    by_label: dict[str, list[tuple[int, int]]] = {label: [] for label in result.labels}
    for posts in result.splits.values():
        for post in posts:
            for span in post.spans:
                n_words = len(words(post.text[span.start : span.end]))
                by_label.setdefault(span.label, []).append((n_words, span.end - span.start))
    rows = []
    for label, lengths in by_label.items():
        if not lengths:
            rows.append([label, 0, "-", "-", "-", "-"])
            continue
        w = [n for n, _ in lengths]
        c = [n for _, n in lengths]
        rows.append(
            [
                label,
                len(lengths),
                f"{statistics.mean(w):.2f}",
                f"{statistics.median(w):g}",
                max(w),
                f"{statistics.mean(c):.1f}",
            ]
        )
    return rows


def write_card(result, settings, extra_labels: list[str]) -> Path:
    names = list(result.splits)
    posts = [p for split in result.splits.values() for p in split]
    exact = sum(d.kind == "exact" for d in result.duplicates)
    near = len(result.duplicates) - exact
    annotators = Counter(str(p.provenance.get("annotator")) for p in posts)
    versions = Counter(str(p.provenance.get("prediction_model_version") or "none") for p in posts)
    strategies = Counter(str(p.provenance.get("selected_by") or "unknown") for p in posts)
    shares = ", ".join(f"{n} {s:g}" for n, s in zip(names, settings.shares, strict=True))
    lines = [
        "---",
        f"license: {settings.license}",
        "task_categories: [token-classification]",
        "---",
        f"# {settings.name}",
        "",
        "Skill spans in job posts, curated with skillloop.",
        "",
        f"- Licence: {settings.license}",
        f"- Made: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} by `skillloop export`",
        f"- Format: {settings.format}; labels: {', '.join(result.labels)} (IOB2 tags)",
        f"- Posts: {len(posts)} ({', '.join(f'{n} {len(result.splits[n])}' for n in names)})",
        "",
        "## How it was made",
        "",
        f"1. Source: {settings.source}; {result.records} annotations ({result.left_out} "
        "skipped or deleted ones left out).",
        f"2. One annotation per post by the policy `{settings.policy}` (latest: the most "
        "recently updated; reviewed: the latest ground-truth annotation, else the latest; "
        "majority: spans drawn by more than half of the post's annotators). "
        f"{len(result.conflicts)} posts where annotators disagree are listed in "
        "`conflicts.jsonl`.",
        f"3. Spans snapped to whole words ({WORD_RULE}) and overlaps resolved (longer span "
        f"wins{_within_layers(settings.layers)}), so every format holds the same spans: "
        "one span is one entity in each (a "
        "CoNLL sentence, a line of the text, never breaks inside a span; the lines a span "
        "crosses are one sentence there).",
        f"4. Duplicates collapsed: {exact} exact (same normalised text) and {near} near "
        f"(word 3-gram Jaccard >= {settings.duplicate_threshold}, MinHash LSH candidates); "
        "see `duplicates.jsonl`.",
        f"5. Split by post (never inside a post), seed {settings.seed}, shares {shares}; "
        "every label is put in every split where it has enough posts, the rest by iterative "
        "stratification.",
        "",
        "Provenance per example (annotator, time, pre-annotating model version, selecting "
        "strategy) is in `provenance.jsonl`"
        + (
            " and in the dataset's columns."
            if settings.format == "hf"
            else " and in each JSONL row's `meta`."
            if settings.format == "jsonl"
            else "."
        ),
    ]
    if extra_labels:
        lines += ["", f"Labels not in the project's config, kept at the end: {extra_labels}."]
    lines += ["", "## Spans per label and split", ""]
    lines += _table(["label", *names, "total"], label_counts(result))
    lines += ["", "## Span length", ""]
    lines += _table(
        ["label", "spans", "mean words", "median words", "max words", "mean chars"],
        span_lengths(result),
    )
    lines += ["", "## Who and what made the labels", ""]
    lines += _table(["annotator", "posts"], [list(kv) for kv in annotators.most_common()])
    lines += [""]
    lines += _table(["pre-annotated by", "posts"], [list(kv) for kv in versions.most_common()])
    lines += [""]
    lines += _table(["selected by", "posts"], [list(kv) for kv in strategies.most_common()])
    lines += ["", "## Files", ""]
    lines += [f"- `{path.relative_to(result.out_dir)}`" for path in result.files]
    lines += ["- `export.json`: the settings and each split's post ids", "- `README.md`: this card"]
    path = result.out_dir / "README.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _within_layers(layers) -> str:
    """How overlaps are resolved with label layers (more than one): within each layer."""
    if not layers or len(layers) < 2:
        return ""
    names = "; ".join(" + ".join(layer) for layer in layers)
    return (
        f", within each label layer: {names}; spans of different layers may overlap, and "
        "CoNLL files have one tag column per layer"
    )
