"""Train/dev/test splits of curated posts: by post, reproducible from a seed, every label
in every split where it has enough posts, the rest by iterative stratification."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

SPLITS = ("train", "dev", "test")
DEFAULT_SHARES = (0.8, 0.1, 0.1)


def post_order(post) -> tuple:
    """Numeric ids in number order, then the others: the order files list posts in."""
    return (0, int(post.id), "") if post.id.isdigit() else (1, 0, post.id)


def stratified_split(
    posts: Sequence,
    shares: Sequence[float] = DEFAULT_SHARES,
    seed: int = 13,
    names: Sequence[str] = SPLITS,
) -> dict[str, list]:
    """Split by post, reproducibly from `seed`, so that every label appears in every split
    where it has enough posts, then by iterative stratification (Sechidis et al. 2011):
    rarest label first, each post to the split that most lacks that label."""
    if len(shares) != len(names) or any(s < 0 for s in shares) or sum(shares) <= 0:
        raise ValueError(f"split shares must be {len(names)} non-negative numbers, got {shares}")
    order = sorted(posts, key=post_order)
    random.Random(seed).shuffle(order)
    total = sum(shares)
    size_wanted = [share / total * len(order) for share in shares]
    label_count = Counter(label for p in order for label in p.labels)
    label_wanted = [{lb: share / total * n for lb, n in label_count.items()} for share in shares]
    split_of: dict[int, int] = {}

    def assign(index: int, k: int) -> None:
        split_of[index] = k
        size_wanted[k] -= 1
        for label in order[index].labels:
            label_wanted[k][label] -= 1

    rarest_first = sorted(label_count, key=lambda lb: (label_count[lb], lb))
    for label in rarest_first:  # coverage: one carrier of each label in each split
        if label_count[label] < len(shares):
            continue
        for k, share in enumerate(shares):
            if share == 0 or any(label in order[i].labels for i, s in split_of.items() if s == k):
                continue
            free = next(
                (i for i, p in enumerate(order) if label in p.labels and i not in split_of), None
            )
            if free is not None:
                assign(free, k)
    for label in rarest_first:
        for i, post in enumerate(order):
            if i in split_of or label not in post.labels:
                continue
            k = max(range(len(shares)), key=lambda k: (label_wanted[k][label], size_wanted[k], -k))
            assign(i, k)
    for i in range(len(order)):  # posts without spans
        if i not in split_of:
            assign(i, max(range(len(shares)), key=lambda k: (size_wanted[k], -k)))
    parts: dict[str, list] = {name: [] for name in names}
    for i, post in enumerate(order):
        parts[names[split_of[i]]].append(post)
    for name in names:
        parts[name].sort(key=post_order)
    return parts
