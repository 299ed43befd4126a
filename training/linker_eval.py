"""Scoring a linker on validation pairs: accuracy@1, R-Precision@5 and the no-match threshold.

A validation pair is a span (with its sentence) and its gold entries; a pair with no gold
entry and `not_present` set is a "no match" pair (no entry fits): those are what the
threshold is tuned on. Two files hold pairs:
- the ESCO linking sets' CSV (`sentence,span,sub_span,label`, Decorte et al. 2022): gold
  labels are matched to entries by preferred, else alternative label (counted in `counts`);
- JSONL, one `{"span", "sentence"?, "taxonomy_ids": [...]}` per line (`"taxonomy_id"` for
  one; an empty list or null for a "no match" pair).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.datasets import jsonl_objects
from training.linker import Linker
from training.taxonomy import Taxonomy

NOT_PRESENT, UNDERSPECIFIED = "LABEL NOT PRESENT", "UNDERSPECIFIED"
K = 5


@dataclass
class LinkPair:
    sentence: str
    span: str
    gold: set[str] = field(default_factory=set)  # entry ids
    not_present: bool = False  # a "no match" pair


@dataclass
class GoldSet:
    name: str
    pairs: list[LinkPair]  # with at least one matched gold entry
    no_match: list[LinkPair]  # no entry fits
    counts: dict = field(default_factory=dict)


def read_linking_csv(name: str, path: Path, taxonomy: Taxonomy) -> GoldSet:
    """The ESCO linking sets' format: one row per (sentence, span, label); a pair's gold
    is its set of labels; UNDERSPECIFIED pairs are skipped; LABEL NOT PRESENT only: no match."""
    labels: dict[tuple[str, str], set[str]] = {}
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and not {"sentence", "span", "label"} <= set(rows[0]):
        raise ValueError(f"{path}: needs columns sentence, span, label")
    for row in rows:
        labels.setdefault((row["sentence"], row["span"]), set()).add(row["label"].strip())
    counts: dict = {
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
    ranked: list[LinkPair] = []
    no_match: list[LinkPair] = []
    for key, names in labels.items():
        real = names - {NOT_PRESENT, UNDERSPECIFIED}
        pair = LinkPair(*key)
        if not real:
            if NOT_PRESENT in names:
                pair.not_present = True
                no_match.append(pair)
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
            ranked.append(pair)
        else:
            counts["pairs_without_matched_gold"] += 1
    counts["scored_pairs"] = len(ranked)
    return GoldSet(name, ranked, no_match, counts)


def read_linking_jsonl(name: str, path: Path, taxonomy: Taxonomy) -> GoldSet:
    ranked: list[LinkPair] = []
    no_match: list[LinkPair] = []
    with open(path, encoding="utf-8") as handle:
        for number, row in jsonl_objects(handle, str(path)):
            if not isinstance(row.get("span"), str):
                raise ValueError(f'{path}:{number}: each line needs a "span" string')
            ids = row.get("taxonomy_ids", row.get("taxonomy_id"))
            ids = [] if ids is None else [ids] if isinstance(ids, str) else list(ids)
            for entry_id in ids:
                try:
                    taxonomy.get(entry_id)
                except KeyError:
                    raise ValueError(
                        f"{path}:{number}: no entry {entry_id!r} in {taxonomy.name}"
                    ) from None
            pair = LinkPair(str(row.get("sentence") or ""), row["span"], set(ids), not ids)
            (ranked if ids else no_match).append(pair)
    counts = {"pairs": len(ranked) + len(no_match), "scored_pairs": len(ranked)}
    counts["no_match_pairs"] = len(no_match)
    return GoldSet(name, ranked, no_match, counts)


def read_gold(path: str | Path, taxonomy: Taxonomy) -> GoldSet:
    """Validation pairs from a linking CSV or JSONL file (by its suffix)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"validation file not found: {path}")
    reader = read_linking_jsonl if path.suffix.lower() == ".jsonl" else read_linking_csv
    return reader(path.stem, path, taxonomy)


def ranking_figures(pairs: list[LinkPair], ranked: list[list]) -> dict:
    """accuracy@1 (the top entry is gold) and R-Precision@5 (gold in the top 5 over
    min(5, |gold|)), from each pair's ranked candidates (objects with an `id`)."""
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


def link_gold(linker: Linker, gold: GoldSet) -> tuple[dict, list[tuple[float, bool | None]]]:
    """The linker's ranking figures on `gold` (each span linked as the linker links it, with
    its sentence), and each pair's top score with whether it is right (None: a no-match pair)."""
    everything = gold.pairs + gold.no_match
    if not gold.pairs:
        raise ValueError(f"{gold.name}: no validation pair with a gold entry")
    links = linker.link([p.span for p in everything], [p.sentence for p in everything], K)
    ranked = [link.candidates for link in links]
    n = len(gold.pairs)
    scored: list[tuple[float, bool | None]] = [
        (ranked[i][0].score, ranked[i][0].id in p.gold) for i, p in enumerate(gold.pairs)
    ]
    scored += [(ranked[n + i][0].score, None) for i in range(len(gold.no_match))]
    return ranking_figures(gold.pairs, ranked[:n]), scored


def evaluate(linker: Linker, gold: GoldSet) -> dict:
    """The linker's figures on `gold` (`link_gold`), the threshold tuned on it and the
    decision accuracy."""
    figures, scored = link_gold(linker, gold)
    n = len(gold.pairs)
    threshold = best_threshold(scored)
    figures |= {
        "pairs": n,
        "no_match_pairs": len(gold.no_match),
        "threshold": threshold,
        "decision_accuracy": decision_accuracy(scored, threshold),
    }
    return figures
