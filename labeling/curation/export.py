"""Curated datasets from annotation records: one annotation per post by a stated policy,
duplicate posts collapsed, a reproducible stratified train/dev/test split by post, and the
files (CoNLL IOB2, JSONL with character spans, a Hugging Face DatasetDict) with a dataset
card.

Spans are snapped to whole words (`training.text`'s one span<->tag conversion) before
anything is written, so all three formats hold exactly the same spans.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from labeling.curation.quality import latest_per_annotator
from labeling.curation.splits import DEFAULT_SHARES, post_order, stratified_split
from labeling.studio.client import POST_ID_KEY
from training.text import Document, Span, post_key, spans_to_tags, tags_to_spans, words

POLICIES = ("latest", "reviewed", "majority")
FORMATS = ("conll", "jsonl", "hf", "profiles")  # profiles: labeling.curation.export_profiles


@dataclass
class CuratedPost:
    """A post with its one chosen annotation and where it came from."""

    id: str
    text: str
    spans: list[Span]
    provenance: dict = field(default_factory=dict)

    @property
    def labels(self) -> set[str]:
        return {s.label for s in self.spans}


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


@dataclass
class Duplicate:
    """A post collapsed into another: same normalised text, or shingle Jaccard >= threshold."""

    id: str
    kept: str
    similarity: float
    kind: str  # "exact" | "near"
    same_spans: bool

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "kept": self.kept,
            "similarity": round(self.similarity, 4),
            "kind": self.kind,
            "same_spans": self.same_spans,
        }


# ---------------------------------------------------------------- one annotation per post


def snap(text: str, spans: Iterable[Span]) -> list[Span]:
    """Spans on whole words, overlaps resolved: what a word tagger can learn and return."""
    offsets = words(text)
    return tags_to_spans(spans_to_tags(spans, offsets), offsets, text)


def resolve(records: Iterable, policy: str = "latest") -> tuple[list[CuratedPost], list[Conflict]]:
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
            reviewed = [r for r in group if getattr(r, "ground_truth", False)]
            chosen = reviewed[-1] if reviewed else latest
        else:
            chosen = latest
        snapped = {id(r): snap(r.text, r.spans) for r in group}
        if policy == "majority" and len(group) > 1:
            votes = Counter(s.key() for r in group for s in snapped[id(r)])
            spans = snap(
                latest.text, [Span(*key) for key, n in votes.items() if 2 * n > len(group)]
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


def _post_id(record) -> str:
    """The task's own `post_id` (the id skillloop imported it with) when it has one, else
    the Label Studio task id: an export names posts as the project's posts file does."""
    task = record.raw.get("task") if isinstance(getattr(record, "raw", None), dict) else None
    data = task.get("data") if isinstance(task, dict) else None
    post_id = data.get(POST_ID_KEY) if isinstance(data, dict) else None
    if isinstance(post_id, str | int) and not isinstance(post_id, bool) and str(post_id).strip():
        return str(post_id)
    return str(record.task_id)


def _provenance(group: list, chosen, policy: str) -> dict:
    return {
        "task_id": chosen.task_id,
        "annotation_id": chosen.annotation_id,
        "annotator": chosen.annotator,
        "annotated_at": chosen.updated_at,
        "created_at": chosen.created_at,
        "prediction_model_version": chosen.prediction_model_version,
        "selected_by": chosen.selected_by,
        "ground_truth": bool(getattr(chosen, "ground_truth", False)),
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


# ---------------------------------------------------------------- duplicates

# (a*x + b) mod P with x, a, b < P < 2^32: the product fits in uint64 without overflow.
# a and b must range over all of [0, P): small multipliers make every permutation order
# shingles alike, and MinHash then estimates nothing.
_PRIME = 4_294_967_291  # the largest prime below 2^32


def comparable_text(text: str) -> str:
    """What duplicate detection compares: case, accents' composition, punctuation and
    spacing do not make a repost different. Not a post's identity (`post_key` is)."""
    return " ".join(re.findall(r"\w+", unicodedata.normalize("NFKC", text).casefold()))


def shingles(text: str, size: int = 3) -> set[str]:
    tokens = comparable_text(text).split()
    if len(tokens) <= size:
        return {" ".join(tokens)}
    return {" ".join(tokens[i : i + size]) for i in range(len(tokens) - size + 1)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def _minhash(shingle_set: set[str], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x = np.array(
        [
            int.from_bytes(hashlib.blake2b(s.encode(), digest_size=4).digest(), "big")
            for s in shingle_set
        ],
        dtype=np.uint64,
    )
    return ((np.outer(x % _PRIME, a) + b) % _PRIME).min(axis=0)


def deduplicate(
    posts: Sequence[CuratedPost], threshold: float = 0.9, num_perm: int = 128, bands: int = 16
) -> tuple[list[CuratedPost], list[Duplicate]]:
    """Collapse exact (same normalised text) and near duplicates (word 3-gram Jaccard >=
    `threshold`; MinHash LSH proposes pairs, the exact Jaccard decides).

    In each group the post kept is a reviewed one, then the one with most annotators,
    then the lowest id; the others are listed with the post they collapsed into.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"the duplicate threshold must be in (0, 1], got {threshold}")
    parent = list(range(len(posts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    by_hash: dict[str, int] = {}
    for i, post in enumerate(posts):
        digest = hashlib.sha256(comparable_text(post.text).encode()).hexdigest()
        if digest in by_hash:
            parent[find(i)] = find(by_hash[digest])
        else:
            by_hash[digest] = i
    shingle_sets = [shingles(p.text) for p in posts]
    if threshold < 1:
        rng = np.random.default_rng(0)  # fixed: hashing must not depend on the split seed
        a = rng.integers(1, _PRIME, num_perm, dtype=np.uint64)
        b = rng.integers(0, _PRIME, num_perm, dtype=np.uint64)
        rows = num_perm // bands
        buckets: dict[tuple, list[int]] = defaultdict(list)
        for i in by_hash.values():
            signature = _minhash(shingle_sets[i], a, b)
            for band in range(bands):
                buckets[(band, *signature[band * rows : (band + 1) * rows].tolist())].append(i)
        checked: set[tuple[int, int]] = set()
        for members in buckets.values():
            for x, i in enumerate(members):
                for j in members[x + 1 :]:
                    if (i, j) in checked or find(i) == find(j):
                        continue
                    checked.add((i, j))
                    if jaccard(shingle_sets[i], shingle_sets[j]) >= threshold:
                        parent[find(j)] = find(i)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(len(posts)):
        groups[find(i)].append(i)
    kept, duplicates = [], []
    for members in groups.values():
        members.sort(key=lambda i: _keep_order(posts[i]))
        keep = posts[members[0]]
        kept.append(keep)
        for i in members[1:]:
            other = posts[i]
            similarity = jaccard(shingle_sets[members[0]], shingle_sets[i])
            exact = comparable_text(other.text) == comparable_text(keep.text)
            same = {s.key() for s in other.spans} == {s.key() for s in keep.spans} and exact
            duplicates.append(
                Duplicate(
                    other.id,
                    keep.id,
                    1.0 if exact else similarity,
                    "exact" if exact else "near",
                    same,
                )
            )
        keep.provenance["duplicates"] = [posts[i].id for i in members[1:]]
    kept.sort(key=post_order)
    return kept, duplicates


def _keep_order(post: CuratedPost) -> tuple:
    return (
        not post.provenance.get("ground_truth"),
        -len(post.provenance.get("annotators", [])),
        post_order(post),
    )


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


@dataclass
class ExportResult:
    out_dir: Path
    splits: dict[str, list[CuratedPost]]
    conflicts: list[Conflict]
    duplicates: list[Duplicate]
    files: list[Path]
    labels: list[str]
    records: int

    def summary(self) -> str:
        counts = ", ".join(f"{name} {len(posts)}" for name, posts in self.splits.items())
        return (
            f"{sum(map(len, self.splits.values()))} posts ({counts}) from {self.records} "
            f"annotations; {len(self.duplicates)} duplicates collapsed, "
            f"{len(self.conflicts)} conflicts listed -> {self.out_dir}"
        )


def gold_posts(docs: Iterable[Document]) -> list[CuratedPost]:
    """Posts annotated outside Label Studio (a project's gold file) as curated posts."""
    return [
        CuratedPost(
            f"gold-{doc.id or n}",
            doc.text,
            snap(doc.text, doc.spans),
            {
                "source": "gold file",
                "annotator": None,
                "annotators": [],
                "annotated_at": None,
                "prediction_model_version": None,
                "selected_by": None,
                "ground_truth": False,
                "policy": "gold",
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
    is the later word, as in training (backend.rounds.annotated_documents).
    """
    from labeling.curation.card import write_card
    from labeling.curation.formats import write_format

    if settings.format not in FORMATS:
        raise ValueError(f"unknown format {settings.format!r}: choose one of {', '.join(FORMATS)}")
    records = list(records)
    posts, conflicts = resolve(records, settings.policy)
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
    # a profiles export writes its rows once the spans are linked (backend.commands_data)
    files = (
        [] if settings.format == "profiles" else write_format(splits, out, settings.format, labels)
    )
    files += _write_side_files(out, splits, conflicts, duplicates)
    result = ExportResult(out, splits, conflicts, duplicates, files, labels, len(records))
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
                "records": len(records),
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
