"""One training round's heavy part, run in a child process of the service:
`python -m backend.loop.child ROUND_FOLDER/spec.json`.

It trains the candidate, then scores the candidate and the model it must beat on the
same held-out posts, and writes `result.json` (or `error.json` and exit code 1). It runs
with few torch threads and a raised nice value, so the service's /predict keeps the CPU
it needs; progress goes to `progress.json` for the service's status. The parent process
decides what happens to the candidate (backend.loop.rounds.conclude_round).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from dataclasses import replace
from pathlib import Path

from backend.loop.spec import RoundSpec, read_spec

TRAIN_SHARE = 0.85  # of the progress bar; evaluation takes the rest


def write_json(path: Path, data: dict) -> None:
    """Replace `path` atomically: readers never see half a file."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(temp, path)


class Progress:
    def __init__(self, path: Path | None):
        self.path = path
        self.last = 0.0

    def report(self, phase: str, fraction: float, force: bool = False) -> None:
        now = time.monotonic()
        if self.path is None or (not force and now - self.last < 0.5):
            return
        self.last = now
        write_json(
            self.path,
            {
                "phase": phase,
                "progress": round(min(max(fraction, 0.0), 1.0), 4),
                "pid": os.getpid(),
                "at": time.time(),
            },
        )


def score(source: str | Path | None, spec: RoundSpec, docs, label_map=None) -> dict:
    """Held-out report of one model, with each post's strict-entity counts (`per_post`,
    in the order of `docs`) for the gate's paired bootstrap; {"error": ...} when the model
    cannot tag the project labels."""
    from backend.loop.gate import post_counts
    from training.checkpoint import CheckpointError
    from training.evaluate import evaluate_predictions
    from training.text import spans_to_tags, words

    try:
        tagger = spec.tagger(source, label_map).load()
    except CheckpointError as err:
        return {"error": str(err)}
    predictions = tagger.predict([doc.text for doc in docs])
    report = evaluate_predictions(
        docs, [p.spans for p in predictions], tagger.labels, [p.word_tags for p in predictions]
    )
    # the gate compares what each model serves: the tags of its spans, edges trimmed
    gold_tags = [spans_to_tags(doc.spans, words(doc.text)) for doc in docs]
    served_tags = [
        spans_to_tags(p.spans, words(doc.text)) for p, doc in zip(predictions, docs, strict=True)
    ]
    return {
        "f1": report.f1,
        "metrics": report.to_dict(),
        "per_post": post_counts(gold_tags, served_tags),
    }


def run(spec: RoundSpec, progress_bar: bool = False) -> dict:
    """Train and score as `spec` says; returns (and writes) the result."""
    import torch

    from training.calibration import calibrate_checkpoint
    from training.datasets import read_jsonl
    from training.devices import is_main_process
    from training.distill import train  # finetune's, with teachers if the config asks

    folder = spec.folder
    progress = Progress(folder / "progress.json")
    progress.report("preparing", 0.0, force=True)
    threads = spec.num_threads
    torch.set_num_threads(threads)
    train_docs = read_jsonl(folder / "train.jsonl")
    heldout = read_jsonl(folder / "heldout.jsonl")
    config = replace(spec.config, num_threads=threads)

    def on_step(done: int, total: int) -> None:
        progress.report("training", TRAIN_SHARE * done / max(total, 1))

    started = time.perf_counter()
    trained = train(
        spec.base,
        train_docs,
        spec.labels,
        spec.out_dir,
        dev_docs=None,
        config=config,
        label_map=spec.label_map,
        progress=progress_bar,
        on_step=on_step,
        teachers_in=folder / "teachers",  # if the config names any; only the student stays
        keep_teachers=False,
    )
    train_s = time.perf_counter() - started
    if not is_main_process():  # a data-parallel helper of `accelerate launch`: done
        return {}

    result: dict = {
        "train": {
            "epochs_run": trained.epochs_run,
            "losses": trained.losses,
            "windows": trained.n_windows,
            "timings": trained.timings,
        },
        "heldout_documents": len(heldout),
        "candidate": None,
        "baseline": None,
    }
    started = time.perf_counter()
    if heldout:
        progress.report("evaluating", TRAIN_SHARE, force=True)
        # span scores calibrated on the held-out posts (training.calibration); F1 is unchanged
        result["calibration"] = calibrate_checkpoint(
            spec.out_dir, spec.labels, heldout, window=spec.window, quantize=spec.quantize
        )
        result["candidate"] = score(spec.out_dir, spec, heldout)
        baseline = spec.baseline
        if baseline is not None:
            progress.report("evaluating", (1 + TRAIN_SHARE) / 2, force=True)
            scored = score(baseline.path, spec, heldout, baseline.label_map)
            result["baseline"] = {"version": baseline.version, **scored}
    result["timings"] = {
        "train_s": round(train_s, 2),
        "eval_s": round(time.perf_counter() - started, 2),
    }
    write_json(folder / "result.json", result)
    progress.report("done", 1.0, force=True)
    return result


def _exit_with_parent(parent: int) -> None:
    """An orphaned round (the service was killed) stops instead of training for nobody."""
    while True:
        time.sleep(2.0)
        if os.getppid() != parent:
            os._exit(3)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m backend.loop.child ROUND_FOLDER/spec.json", file=sys.stderr)
        return 2
    spec_path = Path(argv[0])
    spec = read_spec(spec_path)
    os.nice(spec.nice)  # the service's requests come first
    if spec.parent_pid:
        threading.Thread(target=_exit_with_parent, args=(spec.parent_pid,), daemon=True).start()
    try:
        run(spec)
    except BaseException as err:  # recorded as a failed round by the parent
        write_json(
            spec_path.parent / "error.json",
            {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()},
        )
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
