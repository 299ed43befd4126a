"""Skill profiles: one row per post with the set of taxonomy skills its spans are linked
to, for the people downstream (a recommender, a labour-market analyst counting skills).

A span's link is the one stored with its annotation where there is one (the `taxonomy_id`
and `taxonomy_label` an annotator confirmed or corrected), else the linker's best entry
above its no-match threshold. `profiles.jsonl` rows:

    {"id": ..., "split": ..., "spans": 5, "linked": 4, "no_match": 1,
     "skills": [{"taxonomy_id": ..., "taxonomy_label": ..., "count": 2,
                 "labels": {"Skill": 2}}, ...]}

skills sorted by count, then label. The card gains a section counting posts and spans per
taxonomy entry, with the taxonomy's attribution (ESCO: Commission Decision 2011/833/EU).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from training.text import Document, Span

PROFILES_FILE = "profiles.jsonl"
CARD_ROWS = 30

# (text, spans that need a link) -> one (taxonomy_id, taxonomy_label) or None per span
LinkFn = Callable[[Sequence[Document]], list[list[tuple[str, str] | None]]]


@dataclass
class SkillCount:
    taxonomy_id: str
    taxonomy_label: str
    count: int = 0
    labels: Counter = field(default_factory=Counter)  # project label -> spans

    def to_dict(self) -> dict:
        return {
            "taxonomy_id": self.taxonomy_id,
            "taxonomy_label": self.taxonomy_label,
            "count": self.count,
            "labels": dict(self.labels.most_common()),
        }


@dataclass
class Profile:
    id: str
    split: str
    spans: int
    skills: list[SkillCount]

    @property
    def linked(self) -> int:
        return sum(skill.count for skill in self.skills)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "split": self.split,
            "spans": self.spans,
            "linked": self.linked,
            "no_match": self.spans - self.linked,
            "skills": [skill.to_dict() for skill in self.skills],
        }


def stored_link(span: Span) -> tuple[str, str] | None:
    """The link an annotation carries for a span (None: not linked there)."""
    entry_id = getattr(span, "taxonomy_id", None)
    if not entry_id:
        return None
    return str(entry_id), str(getattr(span, "taxonomy_label", None) or entry_id)


def build_profiles(splits: dict[str, list], link: LinkFn | None) -> list[Profile]:
    """Profiles of curated posts (`labeling.curation.export.CuratedPost`, by split): stored
    links first, `link` for the spans without one (None: those count as no match)."""
    posts = [(split, post) for split, items in splits.items() for post in items]
    links: list[list[tuple[str, str] | None]] = [
        [stored_link(span) for span in post.spans] for _, post in posts
    ]
    missing = [
        (n, [i for i, found in enumerate(row) if found is None]) for n, row in enumerate(links)
    ]
    missing = [(n, spans) for n, spans in missing if spans]
    if link is not None and missing:
        docs = [
            Document(posts[n][1].text, [posts[n][1].spans[i] for i in spans])
            for n, spans in missing
        ]
        for (n, spans), found in zip(missing, link(docs), strict=True):
            for i, entry in zip(spans, found, strict=True):
                links[n][i] = entry
    profiles = []
    for (split, post), row in zip(posts, links, strict=True):
        skills: dict[str, SkillCount] = {}
        for span, entry in zip(post.spans, row, strict=True):
            if entry is None:
                continue
            skill = skills.setdefault(entry[0], SkillCount(*entry))
            skill.count += 1
            skill.labels[span.label] += 1
        ordered = sorted(skills.values(), key=lambda s: (-s.count, s.taxonomy_label))
        profiles.append(Profile(post.id, split, len(post.spans), ordered))
    return profiles


def write_profiles(out: Path, profiles: list[Profile]) -> Path:
    path = Path(out) / PROFILES_FILE
    partial = path.with_suffix(".jsonl.partial")
    with open(partial, "w", encoding="utf-8") as handle:
        for profile in profiles:
            handle.write(json.dumps(profile.to_dict(), ensure_ascii=False) + "\n")
    partial.replace(path)
    return path


@dataclass
class SkillSummary:
    """How often each taxonomy entry is linked over a set of profiles (the card's and the
    rounds report's "linked skills")."""

    taxonomy: str
    posts: int
    spans: int
    linked: int
    entries: int  # distinct entries linked
    top: list[tuple[str, str, int, int]]  # (taxonomy id, label, spans, posts), most first
    attribution: str = ""

    @property
    def no_match(self) -> int:
        return self.spans - self.linked

    @property
    def no_match_share(self) -> float:
        return self.no_match / self.spans if self.spans else 0.0

    def line(self) -> str:
        return (
            f"{self.posts} posts, {self.spans} spans: {self.linked} linked to {self.entries} "
            f"{self.taxonomy} entries, {self.no_match} with no match ({self.no_match_share:.1%})."
        )


def summarize(
    profiles: list[Profile], taxonomy: str, attribution: str = "", rows: int = CARD_ROWS
) -> SkillSummary:
    posts: Counter = Counter()
    spans: Counter = Counter()
    names: dict[str, str] = {}
    for profile in profiles:
        for skill in profile.skills:
            posts[skill.taxonomy_id] += 1
            spans[skill.taxonomy_id] += skill.count
            names[skill.taxonomy_id] = skill.taxonomy_label
    top = sorted(posts, key=lambda i: (-spans[i], -posts[i], names[i]))[:rows]
    return SkillSummary(
        taxonomy,
        len(profiles),
        sum(p.spans for p in profiles),
        sum(p.linked for p in profiles),
        len(posts),
        [(i, names[i], spans[i], posts[i]) for i in top],
        attribution,
    )


def card_section(summary: SkillSummary) -> list[str]:
    """The card's "Skill profiles" lines: spans and posts per taxonomy entry."""
    lines = [
        "",
        "## Skill profiles",
        "",
        f"`{PROFILES_FILE}`: one row per post with the {summary.taxonomy} skills its spans are "
        "linked to (an annotator's stored link where there is one, else the linker's best "
        "entry above its no-match threshold), with counts.",
        summary.line(),
    ]
    if summary.attribution:
        lines += ["", f"Taxonomy: {summary.attribution}."]
    lines += ["", "| entry | label | spans | posts |", "|---|---|---:|---:|"]
    lines += [f"| {i} | {label} | {n} | {p} |" for i, label, n, p in summary.top]
    if summary.entries > len(summary.top):
        lines += ["", f"({summary.entries - len(summary.top)} more entries in `{PROFILES_FILE}`.)"]
    return lines
