"""Cold start on SkillSpan dev: the taxonomy dictionary alone, a model bootstrapped from
dictionary labels, and models trained on a few human-labelled posts.

Rows, each scored by exact character-span F1 per label on SkillSpan dev (flattened gold,
`training.evaluate.evaluate_predictions(...).char`, the figure train_skillspan.py reports):

- dictionary: ESCO's labels matched against the dev posts (`training.dictionary`), typed
  through projects/skillspan/project.toml's `[linking] types` map;
- bootstrap: the backbone fine-tuned on all SkillSpan train posts labelled by that
  dictionary (what `skillloop bootstrap` does), no human label seen;
- human N: the backbone fine-tuned on N train posts with their human labels: the first N
  of one seeded random order of the 140 train postings (so the 10 are among the 25).

Two learners, the same for every row of a run:
- `--learner fast` (the default): the active-learning simulator's fast learner
  (labeling.active.simulate.FastLearner): every post encoded once by the frozen backbone
  (layers 3 and 6 concatenated), a small MLP head trained on the word vectors per row,
  decoded with IOB2-constrained Viterbi. Minutes in all on two cores, so every row is run
  with `--seeds` seeds (the human posts drawn anew per seed) and reported as a mean.
- `--learner full`: the whole tagger fine-tuned per row (training.finetune.train, the
  project TrainConfig with `--epochs` epochs, no early stopping: no dev set is looked at
  while training), scored in fp32; tens of minutes per row on this machine.
The JSON is rewritten after each row, so a run cut short keeps what it measured.

Run it under the heavy-job lock:
    flock /work/heavy.lock nice -n 5 .venv/bin/python -m benchmarks.cold_start \
        --json state/cold_start.json > state/cold_start.log 2>&1
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import tempfile
import time
from pathlib import Path

from benchmarks.common import LABELS, ROOT, SKILLSPAN, run_benchmark, skillspan


def scores(report) -> dict:
    return {label: report.char[label].to_dict() for label in [*LABELS, "overall"]}


def line(name: str, figures: dict) -> str:
    return f"{name:<16}" + "".join(
        f"  {label} F1 {figures[label]['f1']:.3f} (P {figures[label]['precision']:.3f}, "
        f"R {figures[label]['recall']:.3f})"
        for label in [*LABELS, "overall"]
    )


def main() -> int:
    from labeling.project import load_project
    from training.cpu import cpu_info
    from training.dictionary import Dictionary
    from training.evaluate import evaluate, evaluate_predictions
    from training.finetune import train
    from training.tagger import Tagger
    from training.taxonomy import load_taxonomy
    from training.text import Document
    from training.train_config import TrainConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SKILLSPAN)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="*", default=[10, 25, 50])
    parser.add_argument("--seed", type=int, default=13, help="draws the human posts")
    parser.add_argument("--learner", choices=["fast", "full"], default="fast")
    parser.add_argument("--seeds", type=int, default=3, help="fast learner: seeds per row")
    parser.add_argument(
        "--cache", type=Path, default=ROOT / "state" / "cache", help="fast learner's vectors"
    )
    parser.add_argument("--no-bootstrap", action="store_true")
    parser.add_argument("--no-all", action="store_true", help="fast: skip the all-140-posts row")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    cpu = cpu_info()
    print(cpu.line())
    project = load_project(ROOT / "projects" / "skillspan")
    types = project.linking.types
    train_docs, dev_docs = skillspan(args.data, "train", "dev")
    config = TrainConfig(epochs=args.epochs, patience=args.epochs, seed=args.seed)
    print(f"train {len(train_docs)} postings, dev {len(dev_docs)} postings")
    if args.learner == "full":
        print(f"config {config}")
    figures: dict = {
        "cpu": cpu.as_dict(),
        "learner": args.learner,
        "config": vars(config) if args.learner == "full" else None,
        "types": types,
        "taxonomy": project.linking.taxonomy,
        "rows": {},
    }

    def record(name: str, f1: dict, **extra) -> None:
        figures["rows"][name] = {"f1": f1, **extra}
        print(line(name, figures["rows"][name]["f1"]), flush=True)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")

    started = time.perf_counter()
    taxonomy = load_taxonomy(project.linking.taxonomy, project.folder)
    dictionary = Dictionary(taxonomy, types)
    built = time.perf_counter() - started
    print(f"{taxonomy.summary()}; {dictionary.n_labels} labels in the dictionary ({built:.1f} s)")
    if taxonomy.attribution:
        print(taxonomy.attribution)
    started = time.perf_counter()
    matched = dictionary.annotate(d.text for d in dev_docs)
    seconds = time.perf_counter() - started
    record(
        "dictionary",
        scores(evaluate_predictions(dev_docs, matched, LABELS)),
        build_seconds=round(built, 2),
        match_seconds=round(seconds, 2),
        spans=sum(map(len, matched)),
    )

    weak = [
        Document(d.text, spans, id=d.id)
        for d, spans in zip(
            train_docs, dictionary.annotate(d.text for d in train_docs), strict=True
        )
    ]
    figures["dictionary_train_spans"] = sum(len(d.spans) for d in weak)
    if args.learner == "fast":
        fast_rows(args, figures, record, train_docs, weak, dev_docs)
        return 0

    def fit(name: str, docs: list[Document], **extra) -> None:
        with tempfile.TemporaryDirectory(prefix="cold-start-") as tmp:
            out = Path(tmp) / "model"
            result = train(None, docs, LABELS, out, config=config, progress=not args.no_progress)
            tagger = Tagger.load(
                result.path,
                LABELS,
                quantize=False,
                window=config.window,
            )
            report = evaluate(tagger, dev_docs)
        record(
            name,
            scores(report),
            posts=len(docs),
            windows=result.n_windows,
            train_seconds=round(result.seconds, 1),
            losses=[round(x, 4) for x in result.losses],
            **extra,
        )

    if not args.no_bootstrap:
        fit("bootstrap", weak)
    # one seeded order of the train posts: the 10 are among the 25, the 25 among the 50,
    # as a team labelling more posts would have them
    order = random.Random(args.seed).sample(range(len(train_docs)), len(train_docs))
    for size in args.sizes:
        chosen = sorted(order[:size])
        fit(f"human {size}", [train_docs[i] for i in chosen], post_indices=chosen)
    return 0


def fast_rows(args, figures: dict, record, train_docs, weak, dev_docs) -> None:
    """The bootstrap and human rows with the simulator's fast learner, `--seeds` seeds each:
    the row's figures are the mean over seeds, each seed's F1 kept beside them."""
    import numpy as np

    from labeling.active.simulate import FastLearner, SimConfig
    from training.decoding import decode_many
    from training.evaluate import evaluate_predictions
    from training.text import tags_to_spans, words

    sim = SimConfig(unit="post", cache_dir=str(args.cache))
    figures["fast_learner"] = {
        k: getattr(sim, k)
        for k in ("head_hidden", "head_epochs", "head_min_steps", "head_max_steps")
    } | {"feature_layers": sim.feature_layers, "head_dropout": sim.head_dropout}
    started = time.perf_counter()
    human = FastLearner(train_docs, dev_docs, LABELS, sim)
    dictionary = FastLearner(weak, dev_docs, LABELS, sim)  # same texts: the cached vectors
    print(f"posts encoded by the frozen backbone in {time.perf_counter() - started:.0f} s")

    def scored(learner):
        probs, _ = learner._forward(learner.eval_x)  # the simulator's own forward pass
        tags = decode_many(probs, learner.tags)
        spans = [
            tags_to_spans(t, words(d.text), d.text) for t, d in zip(tags, dev_docs, strict=True)
        ]
        return evaluate_predictions(dev_docs, spans, LABELS)

    def row(name: str, learner, draws: list[list[int]]) -> None:
        reports = []
        for seed, indices in enumerate(draws):
            learner.fit(indices, seed)
            reports.append(scored(learner))
        each = [scores(r) for r in reports]
        mean = {
            label: {
                key: round(float(np.mean([e[label][key] for e in each])), 4)
                for key in ("precision", "recall", "f1")
            }
            for label in [*LABELS, "overall"]
        }
        record(
            name,
            mean,
            posts=len(draws[0]),
            seeds=len(draws),
            per_seed_f1={
                label: [round(r.char[label].f1, 4) for r in reports]
                for label in [*LABELS, "overall"]
            },
        )

    everything = list(range(len(train_docs)))
    if not args.no_bootstrap:
        row("bootstrap", dictionary, [everything] * args.seeds)
    for size in args.sizes:
        draws = [
            sorted(random.Random(args.seed + seed).sample(everything, size))
            for seed in range(args.seeds)
        ]
        row(f"human {size}", human, draws)
    if not args.no_all:
        row("human 140 (all)", human, [everything] * args.seeds)


if __name__ == "__main__":
    run_benchmark(main)
