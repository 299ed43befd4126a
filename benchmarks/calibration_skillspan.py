"""Span-score calibration of a SkillSpan tagger on SkillSpan dev.

The dev posts are split in two by position (even-numbered posts fit the temperature,
odd-numbered ones are evaluated; then the other way round, as a check): the temperature
is never fitted on the posts it is judged on. For every predicted span (exact offsets
and label = correct) it reports span-level ECE (10 equal-width bins) of
- "emission softmax, min over words": the scores skillloop showed before (the lowest
  emission probability of the span's words' decoded tags),
- "span probability, T=1": the model's probability of the span (CRF forward-backward for
  a CRF checkpoint), as trained,
- "span probability, T fitted": the same after temperature scaling (span NLL),
and writes their reliability diagram (PNG) and the figures (JSON).

    .venv/bin/python -m benchmarks.calibration_skillspan \\
        --model state/models/skillspan-minilm-crf-s13 --png docs/calibration-skillspan.png
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from benchmarks.common import LABELS, add_skillspan_data, run_benchmark, skillspan


def old_scores(readings, tagger) -> list[list[float]]:
    """Per document, each decoded span's old score: the lowest emission probability of
    its words' decoded tags (what the tagger reported before span probabilities)."""
    from training.text import tags_to_spans

    column = {t: j for j, t in enumerate(tagger.tags)}
    out = []
    for r in readings:
        chosen = [float(r.doc.probs[i, column[t]]) for i, t in enumerate(r.word_tags)]
        starts = [w[0] for w in r.doc.words]
        scores = []
        for span in tags_to_spans(r.word_tags, r.doc.words, r.doc.text):
            first = starts.index(span.start)
            last = max(i for i, s in enumerate(starts) if s < span.end)
            scores.append(min(chosen[first : last + 1]))
        out.append(scores)
    return out


def main() -> int:
    import numpy as np

    from training.calibration import (
        expected_calibration_error,
        fit_temperature,
        reliability,
        reliability_diagram,
        span_nll,
        span_outcomes,
    )
    from training.cpu import cpu_info
    from training.tagger import Tagger

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    add_skillspan_data(parser, "dev")
    parser.add_argument(
        "--png",
        type=Path,
        help="write the reliability diagram here (none by default: the tracked "
        "docs/calibration-skillspan.png is only ever replaced when named)",
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--num-threads", type=int, default=None)
    parser.add_argument("--limit", type=int, default=None, help="first N dev posts (smoke test)")
    args = parser.parse_args()

    [dev] = skillspan(args.data, "dev")
    dev = dev[: args.limit]
    tagger = Tagger.load(args.model, LABELS, num_threads=args.num_threads)
    stored = tagger.temperature
    tagger.set_temperature(1.0)  # measure from the model as trained
    cpu = cpu_info()
    print(cpu.line(), flush=True)
    info: dict[str, Any] = {"model": str(args.model), "tagger": repr(tagger), "cpu": cpu.as_dict()}
    print(json.dumps(info), flush=True)
    started = time.perf_counter()
    readings = tagger.read([d.text for d in dev])
    info["predict_s"] = round(time.perf_counter() - started, 1)
    halves = {"even": list(range(0, len(dev), 2)), "odd": list(range(1, len(dev), 2))}

    def subset(which, items):
        return [items[i] for i in which]

    folds = {}
    for fit_name, eval_name in (("even", "odd"), ("odd", "even")):
        fit_idx, eval_idx = halves[fit_name], halves[eval_name]
        fit = fit_temperature(tagger, subset(fit_idx, dev), readings=subset(fit_idx, readings))
        eval_docs, eval_readings = subset(eval_idx, dev), subset(eval_idx, readings)
        raw = span_outcomes(tagger.score(eval_readings, 1.0), eval_docs)
        scaled = span_outcomes(tagger.score(eval_readings, fit.temperature), eval_docs)
        old = (np.array([s for doc in old_scores(eval_readings, tagger) for s in doc]), raw[1])
        curves = {
            "emission softmax, min over words (old)": old,
            "span probability, T=1": raw,
            f"span probability, T={fit.temperature:.2f} (fitted on {fit_name} posts)": scaled,
        }
        fold: dict[str, Any] = {
            "fit_posts": len(fit_idx),
            "eval_posts": len(eval_idx),
            "temperature": round(fit.temperature, 4),
            "fit_spans": fit.spans,
            "eval_spans": len(raw[0]),
            "eval_accuracy": round(float(raw[1].mean()), 4) if len(raw[1]) else None,
        }
        for key, (scores, correct) in zip(("old", "raw", "scaled"), curves.values(), strict=True):
            fold[f"ece_{key}"] = round(expected_calibration_error(scores, correct), 4)
            fold[f"nll_{key}"] = round(span_nll(scores, correct), 4)
            fold[f"bins_{key}"] = [
                [b.count, round(b.mean_score, 4), round(b.accuracy, 4)]
                for b in reliability(scores, correct)
                if b.count
            ]
        folds[f"fit_{fit_name}_eval_{eval_name}"] = fold
        print(json.dumps({f"fit {fit_name}, evaluate {eval_name}": fold}), flush=True)
        if fit_name == "even" and args.png is not None:
            title = f"SkillSpan dev, {len(eval_idx)} odd posts ({args.model.name})"
            reliability_diagram(curves, args.png, title)
            print(f"reliability diagram: {args.png}")
    # the old scores over all dev, as the issue measured them
    everything = span_outcomes(tagger.score(readings, 1.0), dev)
    old_all = np.array([s for doc in old_scores(readings, tagger) for s in doc])
    info["all_dev"] = {
        "spans": len(everything[0]),
        "accuracy": round(float(everything[1].mean()), 4) if len(everything[1]) else None,
        "ece_old": round(expected_calibration_error(old_all, everything[1]), 4),
        "ece_raw": round(expected_calibration_error(*everything), 4),
    }
    info["folds"] = folds
    info["stored_temperature"] = stored
    print(json.dumps({"all dev posts": info["all_dev"]}))
    if args.json:
        args.json.write_text(json.dumps(info, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    run_benchmark(main)
