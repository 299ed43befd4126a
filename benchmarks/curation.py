"""Curation figures on real data (docs/datalead.md): duplicate detection on SkillSpan
postings and on planted near-duplicates, split coverage, and export time per format.

    HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.curation [--copies 300] [--seed 0]

Needs ../shared/data/skillspan (read_skillspan regroups sentences into postings).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time

from benchmarks.common import SKILLSPAN, run_benchmark, split_file
from labeling.curation.duplicates import deduplicate, jaccard, shingles
from labeling.curation.export import (
    CuratedPost,
    ExportSettings,
    export_dataset,
    snap,
)
from labeling.store import AnnotationRecord
from training.cpu import cpu_info
from training.datasets import read_skillspan


def edit(text: str, rng: random.Random, changes: int) -> str:
    """A repost: a few words replaced (dates, salary, location edits)."""
    tokens = text.split(" ")
    for _ in range(changes):
        tokens[rng.randrange(len(tokens))] = f"edit{rng.randrange(10**6)}"
    return " ".join(tokens)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--copies", type=int, default=300, help="planted near-duplicates")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(cpu_info().line())
    docs = read_skillspan(split_file(SKILLSPAN, "train"))
    docs += read_skillspan(split_file(SKILLSPAN, "dev"))
    posts = [
        CuratedPost(f"{i}", d.text, snap(d.text, d.spans), {"annotators": ["x"]})
        for i, d in enumerate(docs)
    ]
    words = sum(len(p.text.split()) for p in posts)
    print(f"SkillSpan train+dev: {len(posts)} postings, {words} words")

    start = time.perf_counter()
    kept, dups = deduplicate(posts, 0.9)
    seconds = time.perf_counter() - start
    exact = sum(d.kind == "exact" for d in dups)
    print(
        f"dedupe at Jaccard 0.9: {len(dups)} duplicates ({exact} exact, "
        f"{len(dups) - exact} near) in {seconds:.2f} s"
    )

    # planted reposts: one word in 100 replaced (about Jaccard 0.94 on word 3-grams) and
    # one in 10 (about 0.73): the first kind should collapse, the second should not
    rng = random.Random(args.seed)
    planted_near, planted_far, sources = [], [], []
    for n in range(args.copies):
        source = posts[rng.randrange(len(posts))]
        sources.append(source)
        n_words = len(source.text.split())
        near = CuratedPost(f"near{n}", edit(source.text, rng, max(1, n_words // 100)), [])
        far = CuratedPost(f"far{n}", edit(source.text, rng, max(1, n_words // 10)), [])
        planted_near.append(near)
        planted_far.append(far)
    pool = posts + planted_near + planted_far
    start = time.perf_counter()
    _, dups = deduplicate(pool, 0.9)
    seconds = time.perf_counter() - start
    found = {d.id for d in dups}
    near_found = sum(p.id in found for p in planted_near)
    far_found = sum(p.id in found for p in planted_far)
    print(
        f"planted: {len(pool)} posts; 1%-edited reposts collapsed {near_found}/"
        f"{len(planted_near)}, 10%-edited collapsed {far_found}/{len(planted_far)}; "
        f"{seconds:.2f} s"
    )
    # recall against the definition: every planted repost at or above the threshold
    above = [
        p
        for p, s in zip(planted_near, sources, strict=True)
        if jaccard(shingles(p.text), shingles(s.text)) >= 0.9
    ]
    missed = sorted(
        round(jaccard(shingles(p.text), shingles(s.text)), 3)
        for p, s in zip(planted_near, sources, strict=True)
        if p.id not in found
    )
    print(
        f"  1%-edited reposts with Jaccard >= 0.9: {len(above)}, collapsed "
        f"{sum(p.id in found for p in above)}; Jaccard of those not collapsed: {missed}"
    )

    records = [
        AnnotationRecord(i + 1, i + 1, "1", d.text, d.spans, annotator="skillspan")
        for i, d in enumerate(docs)
    ]
    for fmt in ("jsonl", "conll", "hf"):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            result = export_dataset(records, out, ExportSettings(fmt, ["Skill", "Knowledge"]))
            seconds = time.perf_counter() - start
        sizes = {k: len(v) for k, v in result.splits.items()}
        coverage = {k: sorted({lb for p in v for lb in p.labels}) for k, v in result.splits.items()}
        print(f"export {fmt}: {seconds:.2f} s, splits {sizes}, labels per split {coverage}")
    return 0


if __name__ == "__main__":
    run_benchmark(main)
