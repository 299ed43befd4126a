"""Curated datasets from annotation records: one annotation per post by a stated policy,
duplicate posts collapsed, a reproducible stratified train/dev/test split by post, and the
files (CoNLL IOB2, JSONL with character spans, a Hugging Face DatasetDict) with a dataset
card.

Spans are snapped to whole words (`training.text`'s one span<->tag conversion) before
anything is written, so all three formats hold exactly the same spans.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from labeling.curation.duplicates import Duplicate, deduplicate
from labeling.curation.posts import CuratedPost
from labeling.curation.quality import latest_per_annotator, usable
from labeling.curation.splits import DEFAULT_SHARES, stratified_split
from labeling.studio.client import POST_ID_KEY
from training.datasets import all_spans
from training.text import (
    TOKENIZED,
    Document,
    Span,
    carry_links,
    post_key,
    spans_to_tags,
    tags_to_spans,
    words,
)

if TYPE_CHECKING:
    from labeling.store import AnnotationRecord

POLICIES = ("latest", "reviewed", "majority")
FORMATS = ("conll", "jsonl", "hf", "profiles")  # profiles: labeling.curation.export_profiles


@dataclass
class Conflict:
    """A post whose annotators disagree: spans not every annotator drew, and by whom."""

    id: str
    annotators: list[str]
    chosen: str  # what the policy kept: an annotator, or "majority vote"
    disagreements: list[dict]  # {start, end, label, text, by: [annotators]}

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "annotators": self.annotators,
            "chosen": self.chosen,
            "disagreements": self.disagreements,
        }


# ---------------------------------------------------------------- one annotation per post


def snap(
    text: str, spans: Iterable[Span], layers: Sequence[Sequence[str]] | None = None
) -> list[Span]:
    """Spans on whole words, overlaps resolved: what a word tagger can learn and return.
    With label `layers` (more than one) overlaps are resolved within each layer only: a
    layered tagger learns and returns overlapping spans of different layers."""
    spans = list(spans)
    offsets = words(text)
    if layers is not None and len(layers) > 1:
        layer_of = {label: n for n, layer in enumerate(layers) for label in layer}
        groups: dict[int, list[Span]] = defaultdict(list)
        for span in spans:
            groups[layer_of.get(span.label, -1)].append(span)
        snapped = [s for group in groups.values() for s in snap(text, group)]
        return sorted(snapped, key=lambda s: (s.start, s.end, s.label))
    return carry_links(spans, tags_to_spans(spans_to_tags(spans, offsets), offsets, text))


def resolve(
    records: Iterable[AnnotationRecord],
    policy: str = "latest",
    layers: Sequence[Sequence[str]] | None = None,
) -> tuple[list[CuratedPost], list[Conflict]]:
    """One annotation per post (task).

    - latest: the most recently updated annotation;
    - reviewed: the latest annotation marked ground truth (reviewed), else the latest;
    - majority: per span, kept when more than half of the post's annotators drew it
      (offsets and label); overlaps then resolved by the usual nesting policy.
    Each annotator counts once per post (their latest annotation).
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}: choose one of {', '.join(POLICIES)}")
    posts, conflicts = [], []
    for _task_id, group in sorted(latest_per_annotator(records).items(), key=lambda kv: kv[0]):
        latest = group[-1]
        if policy == "reviewed":
            reviewed = [r for r in group if r.ground_truth]
            chosen = reviewed[-1] if reviewed else latest
        else:
            chosen = latest
        snapped = {id(r): snap(r.text, r.spans, layers) for r in group}
        if policy == "majority" and len(group) > 1:
            votes = Counter(s.key() for r in group for s in snapped[id(r)])
            spans = snap(
                latest.text,
                [Span(*key) for key, n in votes.items() if 2 * n > len(group)],
                layers,
            )
            chosen_name = "majority vote"
        else:
            spans = snapped[id(chosen)]
            chosen_name = str(chosen.annotator)
        post_id = _post_id(latest)
        posts.append(CuratedPost(post_id, latest.text, spans, _provenance(group, chosen, policy)))
        conflict = _conflict(post_id, group, snapped, chosen_name)
        if conflict:
            conflicts.append(conflict)
    return posts, conflicts


def _post_id(record: AnnotationRecord) -> str:
    """The task's own `post_id` (the id skillloop imported it with) when it has one, else
    the Label Studio task id: an export names posts as the project's posts file does."""
    task = record.raw.get("task") if isinstance(record.raw, dict) else None
    data = task.get("data") if isinstance(task, dict) else None
    post_id = data.get(POST_ID_KEY) if isinstance(data, dict) else None
    if isinstance(post_id, str | int) and not isinstance(post_id, bool) and str(post_id).strip():
        return str(post_id)
    return str(record.task_id)


def _provenance(group: list[AnnotationRecord], chosen: AnnotationRecord, policy: str) -> dict:
    return {
        "task_id": chosen.task_id,
        "annotation_id": chosen.annotation_id,
        "annotator": chosen.annotator,
        "annotated_at": chosen.updated_at,
        "created_at": chosen.created_at,
        "prediction_model_version": chosen.prediction_model_version,
        "selected_by": chosen.selected_by,
        "ground_truth": bool(chosen.ground_truth),
        "annotators": [r.annotator for r in group],
        "annotation_ids": [r.annotation_id for r in group],
        "policy": policy,
    }


def _conflict(post_id: str, group: list, snapped: dict, chosen: str) -> Conflict | None:
    if len(group) < 2:
        return None
    by: dict[tuple, list[str]] = defaultdict(list)
    for record in group:
        for span in snapped[id(record)]:
            by[span.key()].append(str(record.annotator))
    text = group[-1].text
    disagreements = [
        {"start": s, "end": e, "label": label, "text": text[s:e], "by": names}
        for (s, e, label), names in sorted(by.items())
        if len(names) < len(group)
    ]
    if not disagreements:
        return None
    return Conflict(post_id, [str(r.annotator) for r in group], chosen, disagreements)


# ---------------------------------------------------------------- the export


@dataclass
class ExportSettings:
    format: str
    labels: list[str]
    policy: str = "latest"
    seed: int = 13
    shares: tuple[float, ...] = DEFAULT_SHARES
    duplicate_threshold: float = 0.9
    license: str = "unspecified"
    source: str = "skillloop annotation store"
    name: str = "skillloop-export"
    # the project's label layers (training.layers): overlaps across layers are kept, and
    # CoNLL has one tag column per layer
    layers: list[list[str]] = field(default_factory=list)


@dataclass
class ExportResult:
    out_dir: Path
    splits: dict[str, list[CuratedPost]]
    conflicts: list[Conflict]
    duplicates: list[Duplicate]
    files: list[Path]
    labels: list[str]
    records: int  # annotations read that count: not skipped, not deleted
    left_out: int = 0  # skipped and deleted annotations read and left out

    def summary(self) -> str:
        counts = ", ".join(f"{name} {len(posts)}" for name, posts in self.splits.items())
        left_out = f" ({self.left_out} skipped or deleted left out)" if self.left_out else ""
        return (
            f"{sum(map(len, self.splits.values()))} posts ({counts}) from {self.records} "
            f"annotations{left_out}; {len(self.duplicates)} duplicates collapsed, "
            f"{len(self.conflicts)} conflicts listed -> {self.out_dir}"
        )

    def moved_to(self, out_dir: str | Path) -> None:
        """Point at the folder the export was moved to (see `staged_folder`)."""
        out = Path(out_dir)
        self.files = [out / path.relative_to(self.out_dir) for path in self.files]
        self.out_dir = out


def gold_posts(
    docs: Iterable[Document], layers: Sequence[Sequence[str]] | None = None
) -> list[CuratedPost]:
    """Posts annotated outside Label Studio (a project's gold file) as curated posts
    (with label `layers`, the spans reading dropped as overlaps restored)."""
    layered = layers is not None and len(layers) > 1
    return [
        CuratedPost(
            f"gold-{doc.id or n}",
            doc.text,
            snap(doc.text, all_spans(doc) if layered else doc.spans, layers),
            {
                "source": "gold file",
                "annotator": None,
                "annotators": [],
                "annotated_at": None,
                "prediction_model_version": None,
                "selected_by": None,
                "ground_truth": False,
                "policy": "gold",
                # read from a tokenised file: a CoNLL export writes its own tokens again
                **({TOKENIZED: True} if doc.meta.get(TOKENIZED) else {}),
            },
        )
        for n, doc in enumerate(docs, 1)
    ]


def export_dataset(
    records: Sequence,
    out_dir: str | Path,
    settings: ExportSettings,
    gold: Sequence[CuratedPost] = (),
) -> ExportResult:
    """Curate `records` (plus `gold` posts, see `gold_posts`) and write the dataset, its
    side files and its card to `out_dir`.

    A gold post that was also annotated in Label Studio is left out: the annotation there
    is the later word, as in training (backend.loop.heldout.annotated_documents).
    """
    from labeling.curation.card import write_card
    from labeling.curation.formats import write_format

    if settings.format not in FORMATS:
        raise ValueError(f"unknown format {settings.format!r}: choose one of {', '.join(FORMATS)}")
    records = list(records)
    counted = len(usable(records))
    posts, conflicts = resolve(records, settings.policy, settings.layers)
    annotated = {post_key(p.text) for p in posts}
    posts += [p for p in gold if post_key(p.text) not in annotated]
    if not posts:
        raise ValueError("nothing to export: no usable (non-skipped, non-deleted) annotations")
    posts, duplicates = deduplicate(posts, settings.duplicate_threshold)
    splits = stratified_split(posts, settings.shares, settings.seed)
    known = set(settings.labels)
    extra = sorted({lb for p in posts for lb in p.labels} - known)
    labels = [*settings.labels, *extra]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # a profiles export writes its rows once the spans are linked (backend.cli.export)
    files = (
        []
        if settings.format == "profiles"
        else write_format(splits, out, settings.format, labels, settings.layers)
    )
    files += _write_side_files(out, splits, conflicts, duplicates)
    result = ExportResult(
        out, splits, conflicts, duplicates, files, labels, counted, len(records) - counted
    )
    files.append(write_card(result, settings, extra))
    manifest = out / "export.json"
    manifest.write_text(
        json.dumps(
            {
                "format": settings.format,
                "policy": settings.policy,
                "seed": settings.seed,
                "shares": list(settings.shares),
                "duplicate_threshold": settings.duplicate_threshold,
                "labels": labels,
                "source": settings.source,
                "license": settings.license,
                "records": counted,
                "records_left_out": len(records) - counted,
                "splits": {k: [p.id for p in v] for k, v in splits.items()},
            },
            indent=1,
        )
        + "\n"
    )
    files.append(manifest)
    return result


def _write_side_files(out: Path, splits, conflicts, duplicates) -> list[Path]:
    paths = {name: out / f"{name}.jsonl" for name in ("provenance", "conflicts", "duplicates")}
    with open(paths["provenance"], "w", encoding="utf-8") as handle:
        for split, posts in splits.items():
            for post in posts:
                row = {"id": post.id, "split": split, **post.provenance}
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    for name, rows in (("conflicts", conflicts), ("duplicates", duplicates)):
        with open(paths[name], "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row.to_dict(), ensure_ascii=False) + "\n")
    return list(paths.values())


@contextmanager
def staged_folder(out_dir: str | Path, *, force: bool = False) -> Iterator[Path]:
    """A fresh folder beside `out_dir` (so on the same filesystem) to write an export into,
    renamed to `out_dir` only when the block completes and removed when it raises: a failed
    export leaves nothing behind, not even a card. A previous export at `out_dir` (a folder
    with an `export.json`) is replaced; any other non-empty folder, or a file, is refused
    so that no unrelated file is ever deleted, unless `force` (`export --force`): then a
    non-empty folder is replaced all the same, once the export is complete (a file still
    is refused)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file: name a folder for the export")
    if not force and out.is_dir() and any(out.iterdir()) and not (out / "export.json").is_file():
        raise ValueError(
            f"{out} already holds files that are not an export: name a new or empty folder, "
            "or pass --force to replace them"
        )
    created = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.with_name(f".{out.name}.partial-{uuid.uuid4().hex[:8]}")
    stage.mkdir()
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for folder in created:  # innermost first; only the ones this export made
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    previous = out.with_name(f".{out.name}.previous-{uuid.uuid4().hex[:8]}")
    if out.exists():
        os.replace(out, previous)
    os.replace(stage, out)
    shutil.rmtree(previous, ignore_errors=True)
