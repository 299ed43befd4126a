"""Active learning on SkillSpan: query strategies against random, sentences as units.

    flock /tmp/skillloop-heavy.lock .venv/bin/python -m benchmarks.al_skillspan main
    flock /tmp/skillloop-heavy.lock .venv/bin/python -m benchmarks.al_skillspan full
    flock /tmp/skillloop-heavy.lock .venv/bin/python -m benchmarks.al_skillspan compare

`main`: fast mode (frozen backbone + small head per round), train.json as the pool,
dev.json held out, 3 seeds, init 100, +100 sentences per round (or `--step-tokens N` words
per round, the same cost for every strategy); random is also measured at larger pool sizes
to find the sentences it needs for 95% of full-data F1. Writes docs/al/NAME.{json,png,md}.

`full`: the whole tagger fine-tuned per round (6 epochs from the backbone, batches of 8
sentences, bf16 steps), 3 seeds, on the first 800 pool sentences (9,137 words) and 400
dev sentences: init 100, then `--step-tokens` (default 600) words per round, 8 rounds
(up to about 65% of the pool's words); random also at 600 and 750 sentences. The real
learner, on a pool small enough for two CPU cores (about 40 minutes).

`compare`: the same seed set and rounds in fast mode and in full mode (the whole tagger
fine-tuned per round, 8 epochs from the backbone), 1 seed, on the first 1,000 pool and
500 dev sentences, init 150, +150 per round, 2 rounds: do fast-mode curves agree?
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from benchmarks.common import ROOT, SKILLSPAN, run_benchmark, split_file

# imported before the long run starts: a module first imported at the end would be read
# from a working tree that may have changed meanwhile (that lost a 15-minute run once)
from labeling.active.curves import write_outputs
from labeling.active.simulate import SimConfig, simulate
from training.cpu import cpu_info

DOCS = ROOT / "docs" / "al"
STRATEGIES = ["least_confidence", "mnlp", "entropy_mean", "span", "bald"]


def run_main(args) -> None:
    config = SimConfig(
        strategies=args.strategies,
        seeds=args.seeds,
        init=100,
        step=100,
        rounds=args.rounds,
        step_tokens=args.step_tokens,
        random_extra=[2000, 3000, 4000, 4400],
        cache_dir=args.cache_dir,
    )
    result = simulate(SKILLSPAN / "train.json", SKILLSPAN / "dev.json", config, progress=_log)
    _publish(result, args.name, args.out)


def run_full(args) -> None:
    config = SimConfig(
        strategies=args.strategies,
        seeds=args.seeds,
        init=100,
        rounds=args.rounds,
        step_tokens=args.step_tokens or 600,
        mode="full",
        full_epochs=args.full_epochs or 6,
        full_batch_size=8,
        pool_limit=800,
        eval_limit=400,
        random_extra=[600, 750],
        cache_dir=args.cache_dir,
    )
    result = simulate(SKILLSPAN / "train.json", SKILLSPAN / "dev.json", config, progress=_log)
    _publish(result, args.name, args.out)


def run_compare(args) -> None:
    common = {
        "strategies": ["mnlp"],
        "seeds": 1,
        "init": 150,
        "step": 150,
        "rounds": args.rounds,
        "pool_limit": 1000,
        "eval_limit": 500,
        "full_reference": False,
        "cache_dir": args.cache_dir,
    }
    results = {}
    for mode in ("fast", "full"):
        config = SimConfig(mode=mode, full_epochs=args.full_epochs, **common)
        results[mode] = simulate(
            SKILLSPAN / "train.json", SKILLSPAN / "dev.json", config, progress=_log
        )
        results[mode]["cpu"] = cpu_info().as_dict()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "skillspan-compare.json").write_text(json.dumps(results, indent=1))
    print("| mode | strategy | sentences | tokens | F1 | seconds per round |")
    print("|---|---|---|---|---|---|")
    for mode, result in results.items():
        for name, runs in result["curves"].items():
            run = runs[0]
            for n, t, f, s in zip(
                run["items"], run["tokens"], run["f1"], run["seconds"], strict=False
            ):
                print(f"| {mode} | {name} | {n} | {t} | {f:.4f} | {s:.0f} |")
    for mode, result in results.items():
        mnlp, rnd = result["curves"]["mnlp"][0], result["curves"]["random"][0]
        gains = [m - r for m, r in zip(mnlp["f1"], rnd["f1"], strict=True)]
        ratio = [m / r for m, r in zip(mnlp["tokens"], rnd["tokens"], strict=True)]
        print(
            f"{mode}: mnlp - random F1 per round "
            + " ".join(f"{g:+.4f}" for g in gains)
            + "; mnlp/random tokens "
            + " ".join(f"{x:.2f}" for x in ratio)
        )


def run_levels(args) -> None:
    """Words each strategy needs to reach fixed F1 levels, from a saved result."""
    from labeling.active.curves import tokens_to_reach

    result = json.loads(Path(args.result).read_text())
    levels = [0.25, 0.28, 0.29]
    reach = tokens_to_reach(result, levels)
    print("| strategy | " + " | ".join(f"words to F1 {x}" for x in levels) + " |")
    print("|---|" + "---:|" * len(levels))
    for name, values in reach.items():
        cells = []
        for value, base in zip(values, reach["random"], strict=True):
            if value is None:
                cells.append("not reached")
            else:
                share = f" ({value / base:.2f} of random)" if base else ""
                cells.append(f"{value:,.0f}{share}")
        print(f"| {name} | " + " | ".join(cells) + " |")


def _publish(result: dict, name: str, out: str) -> None:
    result["cpu"] = cpu_info().as_dict()
    # the raw curves first: a failure while summarising must not lose a long run
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"{name}.json").write_text(json.dumps(result, indent=1))
    tmp = Path(out) / f".{name}"
    write_outputs(result, tmp)
    shutil.move(tmp / "curves.json", Path(out) / f"{name}.json")
    shutil.move(tmp / "curves.png", Path(out) / f"{name}.png")
    shutil.move(tmp / "summary.md", Path(out) / f"{name}.md")
    tmp.rmdir()


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("preset", choices=["main", "full", "compare", "levels"])
    parser.add_argument(
        "--result",
        default=str(DOCS / "skillspan-fast-layers.json"),
        help="saved result for 'levels'",
    )
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--step-tokens",
        type=int,
        default=None,
        help="main: words per round instead of 100 sentences",
    )
    parser.add_argument("--strategies", nargs="+", default=STRATEGIES)
    parser.add_argument("--full-epochs", type=int, default=None, help="compare: 8, full: 6")
    parser.add_argument("--cache-dir", default="/tmp/skillloop-al-cache")
    parser.add_argument("--out", default=str(DOCS))
    parser.add_argument(
        "--name", default=None, help="output name (default skillspan-fast / skillspan-full)"
    )
    args = parser.parse_args()
    for split in ("train", "dev"):  # both there, or one line and exit 2
        split_file(SKILLSPAN, split)
    torch.set_num_threads(2)
    print(cpu_info().line(), flush=True)
    if args.preset == "levels":
        run_levels(args)
    elif args.preset == "main":
        args.rounds = 10 if args.rounds is None else args.rounds
        args.name = args.name or "skillspan-fast"
        run_main(args)
    elif args.preset == "full":
        args.rounds = 8 if args.rounds is None else args.rounds
        args.name = args.name or "skillspan-full"
        if args.strategies == STRATEGIES:
            args.strategies = ["mnlp"]
        run_full(args)
    else:
        args.rounds = 2 if args.rounds is None else args.rounds
        args.full_epochs = args.full_epochs or 8
        run_compare(args)
    return 0


if __name__ == "__main__":
    run_benchmark(main)
