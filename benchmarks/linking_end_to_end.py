"""Tagger then linker on the ESCO linking validation sets: what a user gets end to end.

The validation pairs (Decorte et al., 2022: SkillSpan spans linked to ESCO by their
authors; ../shared/data/esco-linking) name a sentence, a span in it and its gold ESCO
entries. Here the tagger reads each sentence, and a gold span counts as found when a
predicted span overlaps it (exactly: the same characters); the predicted span's own text
is then linked and is right when its top entry is gold. So the end-to-end accuracy is
(found and linked right) / scored pairs, beside the linker's accuracy on the gold spans
themselves (what `linking_esco.py` measures).

    .venv/bin/python -m benchmarks.linking_end_to_end \
        --tagger state/models/skillspan-minilm-crf-s13 --linker state/linkers/esco-v0001
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks.common import LABELS, ROOT, add_linking_data, linking_sets, run_benchmark
from training.cpu import cpu_info
from training.linker import Linker
from training.linker_eval import GoldSet, read_linking_csv
from training.tagger import Tagger
from training.taxonomy import load_esco


def end_to_end(tagger: Tagger, linker: Linker, gold: GoldSet) -> dict:
    sentences = sorted({p.sentence for p in gold.pairs})
    predicted = dict(zip(sentences, tagger.predict(sentences), strict=True))
    missing = exact = found = right = right_exact = 0
    queries: list[tuple[int, str, str]] = []  # (pair index, predicted span text, sentence)
    for i, pair in enumerate(gold.pairs):
        start = pair.sentence.find(pair.span)
        if start < 0:
            missing += 1
            continue
        end = start + len(pair.span)
        spans = [s for s in predicted[pair.sentence].spans if s.start < end and start < s.end]
        if not spans:
            continue
        found += 1
        best = max(spans, key=lambda s: min(end, s.end) - max(start, s.start))
        exact += (best.start, best.end) == (start, end)
        queries.append((i, best.text, pair.sentence))
    links = linker.link([q[1] for q in queries], [q[2] for q in queries])
    for (i, text, _), link in zip(queries, links, strict=True):
        pair = gold.pairs[i]
        hit = link.candidates[0].id in pair.gold
        right += hit
        right_exact += hit and text == pair.span
    on_gold = linker.link([p.span for p in gold.pairs], [p.sentence for p in gold.pairs])
    gold_right = sum(
        link.candidates[0].id in p.gold for p, link in zip(gold.pairs, on_gold, strict=True)
    )
    n = len(gold.pairs)
    return {
        "scored_pairs": n,
        "span_not_in_sentence": missing,
        "found_by_tagger": found,
        "found_exactly": exact,
        "linked_right": right,
        "linked_right_exact_span": right_exact,
        "tagger_recall_overlap": found / n,
        "tagger_recall_exact": exact / n,
        "end_to_end_accuracy@1": right / n,
        "accuracy@1_on_found": right / found if found else 0.0,
        "linker_accuracy@1_on_gold_spans": gold_right / n,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tagger", required=True, type=Path, help="a SkillSpan checkpoint")
    parser.add_argument("--linker", help="a linker version folder (default: plain MiniLM)")
    add_linking_data(parser)
    parser.add_argument("--cache", type=Path, default=ROOT / "state" / "linking-cache")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    files = linking_sets(args.data)  # all there, or one line and exit 2
    if not args.tagger.is_dir():
        print(f"no tagger checkpoint at {args.tagger}", file=sys.stderr)
        return 2
    info = cpu_info()
    print(info.line())
    started = time.time()
    taxonomy = load_esco()
    linker = Linker.load(taxonomy, args.linker, cache_dir=args.cache, progress=True)
    tagger = Tagger.load(args.tagger, LABELS)
    print(f"{taxonomy.summary()}; linker {args.linker or 'plain MiniLM'}; tagger {tagger.version}")
    results: dict = {"cpu": info.as_dict(), "tagger": str(args.tagger), "linker": args.linker}
    for name, path in files.items():
        figures = end_to_end(tagger, linker, read_linking_csv(name, path, taxonomy))
        results[name] = figures
        print(
            f"{name}: {figures['scored_pairs']} pairs; tagger finds {figures['found_by_tagger']}"
            f" ({figures['tagger_recall_overlap']:.3f} overlapping, "
            f"{figures['tagger_recall_exact']:.3f} exactly); end to end accuracy@1 "
            f"{figures['end_to_end_accuracy@1']:.3f} ({figures['accuracy@1_on_found']:.3f} of "
            f"the found); the linker on the gold spans "
            f"{figures['linker_accuracy@1_on_gold_spans']:.3f}"
        )
    results["seconds"] = round(time.time() - started, 1)
    print(f"{results['seconds']} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    run_benchmark(main)
