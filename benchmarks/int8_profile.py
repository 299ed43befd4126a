"""Where a forward pass spends its time in fp32, torch int8 (as the tagger quantizes) and
torch int8 of every Linear layer: `torch.profiler` on one 256-subword window.

    .venv/bin/python -m benchmarks.int8_profile [--model DIR] [--threads 1] [--runs 10]

Printed per setting: time per forward pass, and the share and time of the operators that
take the most (fp32 matrix products `aten::addmm`, int8 ones `quantized::linear_dynamic`,
attention, GELU, ...). With one thread the profile is CPU time of one core, so it says the
same on a machine that others share.
"""

from __future__ import annotations

import argparse
import copy
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.common import run_benchmark
from training import checkpoint
from training.cpu import cpu_info
from training.precision import quantize_encoder


def op_times(model, ids, mask, runs: int) -> tuple[float, dict[str, float]]:
    """(ms per forward pass, self CPU ms per pass by operator)."""
    with torch.inference_mode():
        for _ in range(3):
            model(input_ids=ids, attention_mask=mask)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                model(input_ids=ids, attention_mask=mask)
    by_op: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        by_op[event.key] += event.self_cpu_time_total / 1000 / runs
    return sum(by_op.values()), dict(by_op)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint folder (default: backbone + random head)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--length", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(cpu_info().line())
    torch.manual_seed(0)
    loaded = checkpoint.load(args.model, ["Skill", "Knowledge"], allow_new_labels=not args.model)
    fp32 = loaded.model.eval()
    partial, full = copy.deepcopy(fp32), copy.deepcopy(fp32)
    quantize_encoder(partial)
    quantize_encoder(full, ffn_outputs=True)
    ids = torch.randint(1000, 20000, (1, args.length))
    mask = torch.ones_like(ids)
    settings = {
        "fp32": fp32,
        "int8 (tagger: FFN outputs fp32)": partial,
        "int8, every Linear": full,
    }
    base = None
    for name, model in settings.items():
        total, by_op = op_times(model, ids, mask, args.runs)
        base = base or total
        print(
            f"\n{name}: {total:.1f} ms per {args.length}-subword window ({base / total:.2f}x fp32)"
        )
        for op, ms in sorted(by_op.items(), key=lambda kv: -kv[1])[:6]:
            print(f"  {op:<52}{ms:>8.1f} ms {ms / total:>6.1%}")
    print(f"\nload average at the end: {cpu_info().load_average:.1f}")
    return 0


if __name__ == "__main__":
    run_benchmark(main)
