"""Linking SkillSpan spans to ESCO v1.1.1: accuracy@1 and R-Precision@5 on the validation
sets of Decorte et al. (RecSys-in-HR 2022), read from ../shared/data/esco-linking/.

Usage:
    nice -n 10 python benchmarks/linking_esco.py [--linker FOLDER] [--json out.json]
        [--save-linker FOLDER]

Gold: a (sentence, span) pair's set of ESCO labels; rows labelled UNDERSPECIFIED are
skipped; pairs whose only label is LABEL NOT PRESENT are the "no match" pairs the threshold
is tuned on. Gold labels are ESCO 1.1.0 preferred labels: each is matched to a v1.1.1
preferred label, else to a v1.1.1 alternative label (renamed skills keep their old name
there), else counted as unmatched (a pair with no matched gold label is left out of the
ranking figures and counted). R-Precision@5: hits in the top 5 / min(5, |gold|).
The threshold is tuned on one set and applied to the other (TECH <-> HOUSE), and the one
tuned on both is what --save-linker stores.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.linker import Linker, LinkerSettings  # noqa: E402
from training.taxonomy import Taxonomy, load_esco  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "esco-linking"
SETS = {"TECH": "tech_validation_annotations.csv", "HOUSE": "house_validation_annotations.csv"}
NOT_PRESENT, UNDERSPECIFIED = "LABEL NOT PRESENT", "UNDERSPECIFIED"
CONTEXT_WEIGHTS = (0.0, 0.1, 0.2, 0.3)
K = 5


@dataclass
class Pair:
    sentence: str
    span: str
    gold: set[str] = field(default_factory=set)  # v1.1.1 entry ids
    not_present: bool = False


@dataclass
class GoldSet:
    name: str
    pairs: list[Pair]  # with at least one matched gold label
    no_match: list[Pair]  # LABEL NOT PRESENT only
    counts: dict


def cpu_info() -> dict:
    import torch

    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        bf16 = False
    return {
        "cpu": model,
        "capability": torch.backends.cpu.get_cpu_capability(),
        "bf16_native": bf16,
        "threads": torch.get_num_threads(),
        "cores_visible": os.cpu_count(),
    }


def read_set(name: str, path: Path, taxonomy: Taxonomy) -> GoldSet:
    pairs: dict[tuple[str, str], Pair] = {}
    labels: dict[tuple[str, str], set[str]] = {}
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        key = (row["sentence"], row["span"])
        labels.setdefault(key, set()).add(row["label"].strip())
    counts = {
        "rows": len(rows),
        "pairs": len(labels),
        "underspecified_pairs": 0,
        "no_match_pairs": 0,
        "gold_labels": 0,
        "via_preferred": 0,
        "via_alternative": 0,
        "unmatched": 0,
        "pairs_without_matched_gold": 0,
        "unmatched_labels": [],
    }
    for key, names in labels.items():
        real = names - {NOT_PRESENT, UNDERSPECIFIED}
        pair = Pair(*key)
        if not real:
            if NOT_PRESENT in names:
                pair.not_present = True
                pairs[key] = pair
                counts["no_match_pairs"] += 1
            else:
                counts["underspecified_pairs"] += 1
            continue
        for label in sorted(real):
            counts["gold_labels"] += 1
            found = taxonomy.find_by_label(label)
            if not found:
                counts["unmatched"] += 1
                counts["unmatched_labels"].append(label)
                continue
            preferred = found[0].preferred_label.casefold() == label.casefold()
            counts["via_preferred" if preferred else "via_alternative"] += 1
            pair.gold.update(entry.id for entry in found)
        if pair.gold:
            pairs[key] = pair
        else:
            counts["pairs_without_matched_gold"] += 1
    ranked = [p for p in pairs.values() if p.gold]
    no_match = [p for p in pairs.values() if p.not_present]
    counts["scored_pairs"] = len(ranked)
    return GoldSet(name, ranked, no_match, counts)


def ranking_figures(pairs: list[Pair], ranked: list[list]) -> dict:
    acc, rp = [], []
    for pair, candidates in zip(pairs, ranked, strict=True):
        ids = [c.id for c in candidates[:K]]
        acc.append(ids[0] in pair.gold)
        rp.append(sum(i in pair.gold for i in ids) / min(K, len(pair.gold)))
    return {"accuracy@1": float(np.mean(acc)), "r_precision@5": float(np.mean(rp))}


def decision_accuracy(scored: list[tuple[float, bool | None]], threshold: float) -> float:
    """Share of pairs handled right: linked to a gold entry above threshold, or (no-match
    pairs, `None`) left unlinked below it."""
    right = [
        (score < threshold) if correct is None else (correct and score >= threshold)
        for score, correct in scored
    ]
    return float(np.mean(right))


def best_threshold(scored: list[tuple[float, bool | None]]) -> float:
    grid = np.round(np.arange(0.2, 1.0, 0.01), 2)
    return float(max(grid, key=lambda t: (decision_accuracy(scored, t), -t)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--linker", help="a linker version folder (default: plain MiniLM)")
    parser.add_argument("--cache", type=Path, default=Path("state/linking-cache"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--save-linker", type=Path, help="write the tuned linker.json here")
    args = parser.parse_args()
    if not all((args.data / f).is_file() for f in SETS.values()):
        print(f"ESCO linking data not found in {args.data} (see its README)", file=sys.stderr)
        return 2

    info = cpu_info()
    print("cpu:", json.dumps(info))
    start = time.time()
    taxonomy = load_esco()
    print(taxonomy.summary())
    linker = Linker.load(taxonomy, args.linker, cache_dir=args.cache, progress=True)
    print(f"label embeddings ready in {time.time() - start:.0f} s")
    sets = [read_set(name, args.data / f, taxonomy) for name, f in SETS.items()]

    results: dict = {"cpu": info, "taxonomy": taxonomy.summary(), "linker": args.linker}
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
    vectors = {}
    for s in sets:
        everything = s.pairs + s.no_match
        spans = linker.encoder.encode([p.span for p in everything])
        sentences = linker.encoder.encode([p.sentence for p in everything], max_tokens=128)
        vectors[s.name] = (spans, sentences)
    variants: dict = {}
    preferred_rows = linker.index.vectors[linker.index.offsets]
    for weight in CONTEXT_WEIGHTS:
        for labels in ("all", "preferred"):
            if labels == "preferred" and weight not in (0.0,):
                continue
            name = f"context={weight} labels={labels}"
            variants[name] = {}
            for s in sets:
                spans, sentences = vectors[s.name]
                queries = (1 - weight) * spans + weight * sentences
                queries /= np.linalg.norm(queries, axis=1, keepdims=True)
                if labels == "preferred":
                    sims = queries @ preferred_rows.T
                    top = np.argsort(-sims, axis=1)[:, :K]
                    ranked = [
                        [_Candidate(taxonomy.entries[e].id, float(sims[q, e])) for e in row]
                        for q, row in enumerate(top)
                    ]
                else:
                    ranked = linker.rank(queries, K)
                n = len(s.pairs)
                figures = ranking_figures(s.pairs, ranked[:n])
                scored = [
                    (ranked[i][0].score, ranked[i][0].id in p.gold) for i, p in enumerate(s.pairs)
                ] + [(ranked[n + i][0].score, None) for i in range(len(s.no_match))]
                figures["scored"] = scored
                variants[name][s.name] = figures
    print(f"\n{'variant':32s} {'TECH acc@1':>10s} {'RP@5':>6s} {'HOUSE acc@1':>11s} {'RP@5':>6s}")
    for name, by_set in variants.items():
        t, h = by_set["TECH"], by_set["HOUSE"]
        print(
            f"{name:32s} {t['accuracy@1']:10.3f} {t['r_precision@5']:6.3f} "
            f"{h['accuracy@1']:11.3f} {h['r_precision@5']:6.3f}"
        )

    # The no-match threshold, for the configured context weight and all labels.
    chosen = f"context={linker.settings.context_weight} labels=all"
    tech, house = variants[chosen]["TECH"]["scored"], variants[chosen]["HOUSE"]["scored"]
    thresholds = {
        "tuned_on_TECH": best_threshold(tech),
        "tuned_on_HOUSE": best_threshold(house),
        "tuned_on_both": best_threshold(tech + house),
    }
    crossed = {
        "HOUSE_with_TECH_threshold": decision_accuracy(house, thresholds["tuned_on_TECH"]),
        "TECH_with_HOUSE_threshold": decision_accuracy(tech, thresholds["tuned_on_HOUSE"]),
        "HOUSE_always_link": decision_accuracy(house, -1.0),
        "TECH_always_link": decision_accuracy(tech, -1.0),
    }
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
            threshold=thresholds["tuned_on_both"],
            context_weight=linker.settings.context_weight,
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
    sys.exit(main())
