"""The promotion gate's decisions on real data: rounds on growing SkillSpan train subsets,
each judged on one frozen set of held-out SkillSpan posts.

Each round runs the backend's own round code: `backend.loop.child.run` (train, calibrate
and score the candidate and the champion on the held-out posts, per-post counts
included) and `backend.loop.gate.decide` (the paired bootstrap over posts and the rule), and
prints the decision and the one-line interval as `skillloop status` and the report show
them (`backend.loop.gate.summary`). As in the service, a round warm-starts from the serving
model (the champion), the first from the backbone; the held-out posts (the first
`--heldout` SkillSpan dev posts) never change, the training posts grow.

    flock /work/heavy.lock nice -n 5 .venv/bin/python -m benchmarks.gate_skillspan \\
        --sizes 20 50 100 --epochs 3 --json state/logs/gate.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from benchmarks.common import LABELS, ROOT, SKILLSPAN, run_benchmark, skillspan


def main() -> int:
    from backend.loop.child import run
    from backend.loop.gate import decide, summary
    from backend.loop.spec import Baseline, RoundSpec
    from labeling.project import RetrainSettings
    from training.cpu import cpu_info
    from training.datasets import write_jsonl
    from training.train_config import TrainConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SKILLSPAN)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 50, 100])
    parser.add_argument("--heldout", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--margin", type=float, default=RetrainSettings().tolerance)
    parser.add_argument("--out", type=Path, default=ROOT / "state" / "gate-skillspan")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    cpu = cpu_info()
    print(cpu.line(), flush=True)
    train_docs, dev_docs = skillspan(args.data, "train", "dev")
    heldout = dev_docs[: args.heldout]
    print(
        f"held-out: the first {len(heldout)} SkillSpan dev posts (frozen); rounds on the "
        f"first {args.sizes} train posts; {args.epochs} epochs; margin {args.margin}",
        flush=True,
    )
    shutil.rmtree(args.out, ignore_errors=True)
    config = TrainConfig(epochs=args.epochs, num_threads=args.threads)
    champion: Baseline | None = None
    rounds = []
    for number, size in enumerate(args.sizes, start=1):
        folder = args.out / f"round-{number:02d}"
        folder.mkdir(parents=True)
        write_jsonl(train_docs[:size], folder / "train.jsonl")
        write_jsonl(heldout, folder / "heldout.jsonl")
        spec = RoundSpec(
            folder,
            champion.path if champion else None,
            LABELS,
            folder / "model",
            config=config,
            num_threads=args.threads,
            baseline=champion,
        )
        started = time.perf_counter()
        result = run(spec)
        decision = decide(result, args.margin, len(heldout))
        details = {**decision.details, "decision": "promoted" if decision.promote else "refused"}
        row = {
            "round": number,
            "train_posts": size,
            "heldout_posts": len(heldout),
            "candidate_f1": round(result["candidate"]["f1"], 4),
            "champion": champion.version if champion else None,
            "champion_f1": (round(result["baseline"]["f1"], 4) if result.get("baseline") else None),
            "decision": details["decision"],
            "summary": summary(details),
            "reason": decision.reason,
            "gate": details,
            "seconds": round(time.perf_counter() - started, 1),
            "timings": result["timings"],
        }
        rounds.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "gate"}), flush=True)
        if decision.promote:
            champion = Baseline(f"round-{number:02d}", str(spec.out_dir))
    print(
        "\n| round | train posts | candidate F1 | champion (F1) | gain [80% interval] | decision |"
    )
    print("|---:|---:|---:|---|---|---|")
    for row in rounds:
        versus = f"{row['champion']} ({row['champion_f1']})" if row["champion"] else "none"
        print(
            f"| {row['round']} | {row['train_posts']} | {row['candidate_f1']} | {versus} | "
            f"{row['summary']} | {row['decision']} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu.as_dict(), "rounds": rounds}, indent=2))
    return 0


if __name__ == "__main__":
    run_benchmark(main)
