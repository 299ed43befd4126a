"""Duplicate posts: reposts and near-copies collapsed before an export is split.

Exact duplicates share their normalised text; near ones have word 3-gram Jaccard at or
above a threshold, proposed by MinHash LSH and confirmed by the exact Jaccard.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from labeling.curation.splits import post_order

if TYPE_CHECKING:
    from labeling.curation.posts import CuratedPost


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
