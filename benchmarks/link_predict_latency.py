"""How long linking adds to /predict: the plain MiniLM linker over all ESCO labels (label
embeddings read from the cache in the state folder), linking the spans of the sample
project's gold posts the way backend/service/linker_holder.py does (one `link_spans` call
per batch).

    .venv/bin/python -m benchmarks.link_predict_latency [--state state] [--posts 10] [--repeat 3]
        [--cache state/linking-cache] [--first-stage] [--cross FOLDER [--cross-weight 0.3]]

Prints the CPU it ran on, the linker's load time, and per batch: spans, seconds, ms/span.
`--first-stage` times, in each round before the default, the first stage alone (the span
without its sentence, best label only, no re-ranking: the default before issue 25).
`--cross` times, in each round after the default, the ranking a cross-encoder version
serves (training/link_cross.py: the top 20 of each span read with the span by that model).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from benchmarks.common import ROOT


def main() -> int:
    from training.cpu import cpu_info
    from training.link_cross import CrossEncoder
    from training.linker import Linker, link_spans
    from training.linker_settings import DEFAULT_CROSS_WEIGHT, cross_ranking
    from training.taxonomy import load_esco
    from training.text import Document, Span

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state", default="state", help="state folder holding linking/")
    parser.add_argument("--posts", type=int, default=10, help="gold posts per /predict batch")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--cache", help="the label cache folder (default: STATE/linking)")
    parser.add_argument("--first-stage", action="store_true", help="time it too, interleaved")
    parser.add_argument("--cross", type=Path, help="a cross-encoder folder to time too")
    parser.add_argument("--cross-weight", type=float, default=DEFAULT_CROSS_WEIGHT)
    args = parser.parse_args()

    cpu = cpu_info()
    print(f"cpu: {cpu}")
    started = time.perf_counter()
    cache = Path(args.cache) if args.cache else Path(args.state) / "linking"
    linker = Linker.load(load_esco(), None, cache_dir=cache)
    load_s = time.perf_counter() - started
    print(f"linker loaded in {load_s:.1f} s ({linker.index.vectors.shape[0]} label vectors)")
    gold = ROOT / "projects/linkedin-skills/gold.jsonl"
    rows = [json.loads(line) for line in gold.read_text(encoding="utf-8").splitlines() if line]
    docs = [
        Document(r["text"], [Span(s["start"], s["end"], s["label"]) for s in r["spans"]])
        for r in rows[: args.posts]
    ]
    n_spans = sum(len(d.spans) for d in docs)
    default = linker.settings
    first = replace(default, context_weight=0.0, preferred_weight=0.0)
    first = replace(first, sentence_weight=0.0, lexical_weight=0.0)
    variants = {"first stage alone": first} if args.first_stage else {}
    variants["default"] = default
    if args.cross:
        linker.cross = CrossEncoder(args.cross)
        served = cross_ranking("cross", args.cross_weight)
        variants["cross stage"] = replace(default, **served)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeat):
        for name, settings in variants.items():
            linker.settings = settings
            started = time.perf_counter()
            link_spans(linker, docs, 5)
            seconds = time.perf_counter() - started
            times[name].append(seconds)
            print(
                f"{name}: {len(docs)} posts, {n_spans} spans: {seconds:.3f} s, "
                f"{1000 * seconds / max(n_spans, 1):.1f} ms/span"
            )
    runs, first_runs = times["default"], times.get("first stage alone", [])
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "cpu": str(cpu),
                    "load_s": load_s,
                    "posts": len(docs),
                    "spans": n_spans,
                    "seconds": runs,
                    "first_stage_seconds": first_runs,
                    "cross_stage_seconds": times.get("cross stage", []),
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
