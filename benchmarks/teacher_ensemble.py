"""How much better than its members is the teachers' ensemble a student is distilled from?

Distillation (`training.distill`) trains the student on the teachers' averaged per-word
marginals (`training.soft_targets.average_marginals`). A student can only learn more than
the gold tags teach where that average knows more than one model: this scores it. Each
teacher and the ensemble are decoded the same way, a BIO-constrained viterbi over the
per-word probabilities (`training.decoding.decode_texts`, no transition scores, no span
across a line break, as served), and the
spans scored as `skillloop evaluate` scores served spans (strict IOB2 entity F1 per label);
each teacher's served (CRF viterbi) figure is printed beside it. fp32, SkillSpan dev.

    .venv/bin/python -m benchmarks.teacher_ensemble \
        --teacher state/models/distil-3t/student-teachers/teacher-1 \
        --teacher state/models/distil-3t/student-teachers/teacher-2 \
        --teacher state/models/skillspan-e4-lr3e-4-s13
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks.common import (
    LABELS,
    ROOT,
    SKILLSPAN,
    DataError,
    finish_run,
    run_benchmark,
    skillspan,
)


def main() -> int:
    from training.cpu import cpu_info
    from training.decoding import decode_texts
    from training.evaluate import OVERALL, evaluate_predictions
    from training.soft_targets import average_marginals
    from training.tagger import Tagger
    from training.text import tags_to_spans

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SKILLSPAN)
    parser.add_argument("--teacher", type=Path, action="append", required=True, dest="teachers")
    parser.add_argument("--dev-limit", type=int, default=None, help="first N dev postings")
    parser.add_argument("--json", type=Path, default=ROOT / "state" / "teacher_ensemble.json")
    args = parser.parse_args()
    for path in args.teachers:
        if not (path / "config.json").is_file():
            raise DataError(f"{path} is not a checkpoint folder")

    started = time.time()
    print(cpu_info().line())
    (dev_docs,) = skillspan(args.data, "dev")
    dev_docs = dev_docs[: args.dev_limit]
    texts = [doc.text for doc in dev_docs]

    def f1(span_lists) -> dict:
        report = evaluate_predictions(dev_docs, span_lists, labels=LABELS)
        return {key: round(report.entity[key].f1, 4) for key in [*LABELS, OVERALL]}

    first: list = []  # the first teacher's predictions: words and texts, alike for all

    def decoded(probs, tags) -> dict:
        words, texts = [p.words for p in first], [p.text for p in first]
        _, tag_lists = decode_texts(probs, words, texts, tags, "viterbi")
        return f1([tags_to_spans(t, w, x) for t, w, x in zip(tag_lists, words, texts, strict=True)])

    rows, per_teacher, teacher_tags, members = {}, [], [], []
    for k, path in enumerate(args.teachers, start=1):
        tagger = Tagger.load(path, LABELS, precision="fp32")
        predictions = tagger.predict(texts)
        if k == 1:
            first.extend(predictions)
        per_teacher.append([p.probs for p in predictions])
        teacher_tags.append(tagger.tags)
        rows[f"teacher {k} ({path.name}) served"] = f1([p.spans for p in predictions])
        members.append(decoded(per_teacher[-1], tagger.tags))
        rows[f"teacher {k} ({path.name}) marginals"] = members[-1]
        print(f"read dev with {path} ({time.time() - started:.0f} s)", flush=True)
        del tagger
    tags = teacher_tags[0]
    ensemble = average_marginals(per_teacher, teacher_tags, tags)
    rows[f"ensemble of {len(args.teachers)}, marginals"] = decoded(ensemble, tags)
    rows["teachers' mean, marginals"] = {
        key: round(sum(m[key] for m in members) / len(members), 4) for key in members[0]
    }

    print(f"\nSkillSpan dev ({len(dev_docs)} postings), strict entity F1 (fp32):")
    print(f"{'model':<58}" + "".join(f"{k:>11}" for k in [*LABELS, OVERALL]))
    for name, figures in rows.items():
        print(f"{name:<58}" + "".join(f"{figures[k]:>11.3f}" for k in [*LABELS, OVERALL]))
    results = {"teachers": [str(p) for p in args.teachers], "dev_f1": rows}
    return finish_run(results, started, args.json)


if __name__ == "__main__":
    run_benchmark(main)
