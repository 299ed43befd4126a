"""Linking SkillSpan spans to ESCO v1.1.1: accuracy@1 and R-Precision@5 on the validation
sets of Decorte et al. (RecSys-in-HR 2022), read from ../shared/data/esco-linking/.

Usage:
    nice -n 10 python -m benchmarks.linking_esco [--linker FOLDER] [--json out.json]
        [--save-linker FOLDER] [--served-only]

Gold: a (sentence, span) pair's set of ESCO labels; rows labelled UNDERSPECIFIED are
skipped; pairs whose only label is LABEL NOT PRESENT are the "no match" pairs the threshold
is tuned on. Gold labels are ESCO 1.1.0 preferred labels: each is matched to a v1.1.1
preferred label, else to a v1.1.1 alternative label (renamed skills keep their old name
there), else counted as unmatched (a pair with no matched gold label is left out of the
ranking figures and counted). R-Precision@5: hits in the top 5 / min(5, |gold|).
The threshold is tuned on one set and applied to the other (TECH <-> HOUSE), and the one
tuned on all sets pooled is what --save-linker stores. `--data` takes the folder (the
default) or the CSV files themselves. Each variant ranks as the linker does (its re-ranking
by the sentence and the span's trigrams, and its exact-label rule, included).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import add_linking_data, linking_sets, run_benchmark
from training.cpu import cpu_info
from training.linker import Linker, LinkerSettings
from training.linker_eval import (
    K,
    best_threshold,
    decision_accuracy,
    ranking_figures,
    read_linking_csv,
)
from training.taxonomy import load_esco

CONTEXT_WEIGHTS = (0.0, 0.1, 0.2, 0.3)
PREFERRED_WEIGHTS = (0.3, 0.5, 0.7)  # an entry's score: best label mixed with preferred


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_linking_data(parser)
    parser.add_argument("--linker", help="a linker version folder (default: plain MiniLM)")
    parser.add_argument("--cache", type=Path, default=Path("state/linking-cache"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--save-linker", type=Path, help="write the tuned linker.json here")
    parser.add_argument(
        "--served-only",
        action="store_true",
        help="score the linker's own settings alone (no grid of context and preferred weights)",
    )
    args = parser.parse_args()
    files = linking_sets(args.data)  # all there, or one line and exit 2

    info = cpu_info()
    print(info.line())
    start = time.time()
    taxonomy = load_esco()
    print(taxonomy.summary())
    linker = Linker.load(taxonomy, args.linker, cache_dir=args.cache, progress=True)
    print(f"label embeddings ready in {time.time() - start:.0f} s")
    sets = [read_linking_csv(name, path, taxonomy) for name, path in files.items()]
    names = [s.name for s in sets]

    results: dict = {"cpu": info.as_dict(), "taxonomy": taxonomy.summary(), "linker": args.linker}
    results["gold"] = {s.name: s.counts for s in sets}
    for s in sets:
        c = s.counts
        print(
            f"{s.name}: {c['rows']} rows, {c['pairs']} (sentence, span) pairs; scored "
            f"{c['scored_pairs']}; no-match pairs {c['no_match_pairs']}; underspecified "
            f"{c['underspecified_pairs']}; gold labels {c['gold_labels']} = "
            f"{c['via_preferred']} v1.1.1 preferred + {c['via_alternative']} via a v1.1.1 "
            f"alternative label + {c['unmatched']} unmatched {c['unmatched_labels']} "
            f"({c['pairs_without_matched_gold']} pairs left with no matched gold)"
        )

    # Embed spans and sentences once; mixing weights are then a cheap sum.
    vectors, texts = {}, {}
    for s in sets:
        everything = s.pairs + s.no_match
        texts[s.name] = [p.span for p in everything]
        spans = linker.encoder.encode(texts[s.name])
        sentences = linker.encoder.encode(
            [p.sentence or p.span for p in everything], max_tokens=128
        )
        vectors[s.name] = (spans, sentences)
    variants: dict = {}
    preferred_rows = linker.index.vectors[linker.index.offsets]
    own_weight = linker.settings.preferred_weight
    grid = [(w, "all", own_weight) for w in CONTEXT_WEIGHTS] + [(0.0, "preferred", 0.0)]
    grid += [(0.0, "all", p) for p in PREFERRED_WEIGHTS if p != own_weight]
    if args.served_only:  # e.g. a cross-encoder version: each variant costs minutes
        grid = [(linker.settings.context_weight, "all", own_weight)]
    for weight, labels, pref in grid:
        name = f"context={weight} labels={labels}"
        name += f" preferred_weight={pref}" if pref else ""
        variants[name] = {}
        linker.settings.preferred_weight = pref
        for s in sets:
            spans, sentences = vectors[s.name]
            queries = (1 - weight) * spans + weight * sentences
            queries /= np.linalg.norm(queries, axis=1, keepdims=True)
            queries = linker.adapt(queries)
            if labels == "preferred":
                sims = queries @ preferred_rows.T
                top = np.argsort(-sims, axis=1)[:, :K]
                ranked = [
                    [_Candidate(taxonomy.entries[e].id, float(sims[q, e])) for e in row]
                    for q, row in enumerate(top)
                ]
            else:
                ranked = linker.rank(queries, K, texts[s.name], sentences)
            n = len(s.pairs)
            figures = ranking_figures(s.pairs, ranked[:n])
            scored = [
                (ranked[i][0].score, ranked[i][0].id in p.gold) for i, p in enumerate(s.pairs)
            ] + [(ranked[n + i][0].score, None) for i in range(len(s.no_match))]
            figures["scored"] = scored
            variants[name][s.name] = figures
    linker.settings.preferred_weight = own_weight
    print(f"\n{'variant':52s}" + "".join(f" {n + ' acc@1':>11s} {'RP@5':>6s}" for n in names))
    for name, by_set in variants.items():
        row = [f" {by_set[n]['accuracy@1']:11.3f} {by_set[n]['r_precision@5']:6.3f}" for n in names]
        print(f"{name:52s}" + "".join(row))

    # The no-match threshold, for the configured context weight and all labels.
    chosen = f"context={linker.settings.context_weight} labels=all"
    chosen += f" preferred_weight={own_weight}" if own_weight else ""
    scored = {n: variants[chosen][n]["scored"] for n in names}
    thresholds = {f"tuned_on_{n}": best_threshold(scored[n]) for n in names}
    thresholds["tuned_on_all"] = best_threshold([x for n in names for x in scored[n]])
    crossed = {  # each set under the threshold tuned on another, and with no threshold
        f"{other}_with_{n}_threshold": decision_accuracy(scored[other], thresholds[f"tuned_on_{n}"])
        for n in names
        for other in names
        if other != n
    }
    crossed |= {f"{n}_always_link": decision_accuracy(scored[n], -1.0) for n in names}
    print(f"\nno-match threshold ({chosen}): {json.dumps(thresholds)}")
    print("decision accuracy (linked right, or no-match left unlinked):", json.dumps(crossed))
    for by_set in variants.values():
        for figures in by_set.values():
            figures.pop("scored")
    results |= {"variants": variants, "thresholds": thresholds, "decision": crossed}
    results["seconds"] = round(time.time() - start, 1)
    if args.save_linker:
        settings = LinkerSettings(
            encoder=linker.settings.encoder if args.linker else "backbone",
            threshold=thresholds["tuned_on_all"],
            context_weight=linker.settings.context_weight,
            preferred_weight=own_weight,
            sentence_weight=linker.settings.sentence_weight,
            lexical_weight=linker.settings.lexical_weight,
            rerank_top=linker.settings.rerank_top,
            adapter=linker.settings.adapter,
            details={**linker.settings.details, "validation": variants[chosen]},
        )
        print("wrote", settings.save(args.save_linker))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print("wrote", args.json)
    return 0


@dataclass
class _Candidate:
    id: str
    score: float


if __name__ == "__main__":
    run_benchmark(main)
