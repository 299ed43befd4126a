"""How fast ESCO's labels are embedded (a linker's first use), and what precision costs.

Usage:
    python -m benchmarks.esco_embedding [--sample 3000] [--rounds 3]
        [--variants fp32 bf16 bf16-weights int8 onnx-int8] [--batch-sizes 64 256]
        [--full fp32 int8] [--json out.json]

1. Padding waste over all 96,135 labels of ESCO v1.1.1: padded tokens per real token when
   batches are sorted by characters (the old way) and by tokens (the way now).
2. Speed: a sample of labels spread evenly over the length order (so it has the whole
   set's length mix), embedded by each precision and batch size on the threads torch has;
   labels/s and the time that projects to for all labels.
3. Accuracy (--full): all labels embedded in each named precision, the plain linker
   (MiniLM, span alone, default settings) scored on the ESCO linking validation sets
   (accuracy@1, training.linker_eval), and the full embedding's wall time.

Prints the CPU first (training/cpu.py). To approximate an AVX2-only CPU on an AVX512 one,
run with ONEDNN_MAX_CPU_ISA=AVX2 (oneDNN then uses neither AVX512 nor native bf16).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from benchmarks.common import ESCO_LINKING, ESCO_SETS
from training.cpu import cpu_info
from training.linker import LabelIndex, LinkerSettings, SentenceEncoder
from training.linker_eval import evaluate, read_linking_csv
from training.linker_round import with_index
from training.taxonomy import load_esco


class OnnxLabelEncoder:
    """The backbone as an ONNX Runtime graph with dynamic int8 matrix products (per channel,
    as the tagger's onnx-int8: training.onnx_runtime.quantize), pooled and normalised as
    SentenceEncoder does; `encode` batches by token count the same way."""

    def __init__(self, folder: Path):
        import copy

        import onnxruntime as ort
        import torch

        from training.onnx_runtime import quantize

        self.plain = SentenceEncoder(None)
        model = copy.deepcopy(self.plain.model)
        model.set_attn_implementation("eager")  # the padding mask traced as products

        class Hidden(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, input_ids, attention_mask):
                return self.inner(input_ids=input_ids, attention_mask=attention_mask)[0]

        # a padded example: a batch with a mask of ones only may be traced without the mask
        example = self.plain.tokenizer(["a", "a longer label"], padding=True, return_tensors="pt")
        axes = {0: "batch", 1: "length"}
        torch.onnx.export(
            Hidden(model).eval(),
            (example["input_ids"], example["attention_mask"]),
            str(folder / "encoder.onnx"),
            input_names=["input_ids", "attention_mask"],
            output_names=["hidden"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "hidden": axes},
            opset_version=17,
            dynamo=False,
        )
        quantize(folder / "encoder.onnx", folder / "encoder-int8.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        self.session = ort.InferenceSession(
            str(folder / "encoder-int8.onnx"), options, providers=["CPUExecutionProvider"]
        )

    def encode(self, texts, batch_size: int = 256, precision: str = "fp32") -> np.ndarray:
        tokenizer = self.plain.tokenizer
        ids = tokenizer(list(texts), truncation=True, max_length=32)["input_ids"]
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
        out = np.zeros((len(texts), self.plain.model.config.hidden_size), dtype=np.float32)
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            batch = tokenizer.pad({"input_ids": [ids[j] for j in idx]}, return_tensors="np")
            feed = {name: batch[name].astype(np.int64) for name in ("input_ids", "attention_mask")}
            hidden = self.session.run(None, feed)[0]
            mask = batch["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)
            out[idx] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
        return out


def encoder_for(precision: str):
    """fp32; bf16 (autocast); bf16-weights (the model converted, as the tagger's bf16);
    int8 (dynamic int8 Linear layers, training.precision); onnx-int8 (ONNX Runtime)."""
    if precision == "onnx-int8":
        import tempfile

        return OnnxLabelEncoder(Path(tempfile.mkdtemp(prefix="skillloop-esco-onnx-")))
    encoder = SentenceEncoder(None)
    if precision == "bf16-weights":
        import torch

        encoder.model.to(torch.bfloat16)
    if precision == "int8":
        from training.precision import quantize_encoder

        quantize_encoder(encoder.model)
    return encoder


def autocast(precision: str) -> str:
    return "bf16" if precision == "bf16" else "fp32"


def padding_waste(encoder: SentenceEncoder, texts: list[str], batch: int) -> dict:
    lengths = [
        len(ids) for ids in encoder.tokenizer(texts, truncation=True, max_length=32)["input_ids"]
    ]
    out = {}
    for name, key in (("chars", lambda i: len(texts[i])), ("tokens", lambda i: lengths[i])):
        order = sorted(range(len(texts)), key=key)
        padded = sum(
            max(lengths[i] for i in order[s : s + batch]) * len(order[s : s + batch])
            for s in range(0, len(order), batch)
        )
        out[f"sorted by {name}"] = round(padded / sum(lengths), 3)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sample", type=int, default=3000)
    parser.add_argument("--variants", nargs="+", default=["fp32", "bf16", "bf16-weights", "int8"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[64, 256])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--full", nargs="*", default=[], help="precisions to embed fully")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    info = cpu_info()
    print(info.line(), flush=True)
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
    print(f"ONEDNN_MAX_CPU_ISA={isa or '(unset)'}", flush=True)
    taxonomy = load_esco()
    texts = [label for entry in taxonomy.entries for label in entry.labels]
    print(taxonomy.summary(), flush=True)
    results: dict = {"cpu": info.as_dict(), "onednn_max_cpu_isa": isa, "labels": len(texts)}

    encoders = {p: encoder_for(p) for p in dict.fromkeys([*args.variants, *args.full])}
    waste = {b: padding_waste(encoders[args.variants[0]], texts, b) for b in args.batch_sizes}
    results["padded_tokens_per_token"] = waste
    print(f"padded tokens per real token, by batch size: {waste}", flush=True)

    by_length = sorted(texts, key=len)
    step = max(1, len(by_length) // args.sample)
    sample = by_length[::step][: args.sample]
    # rounds of every variant in turn, the best of each kept: other jobs sharing the cores
    # slow whichever variant they overlap, so the variants are compared within a round
    best: dict[tuple[str, int], dict] = {}
    for precision in args.variants:
        encoders[precision].encode(sample[:64], precision=autocast(precision))  # warm-up
    for round_number in range(1, args.rounds + 1):
        for batch in args.batch_sizes:
            for precision in args.variants:
                started = time.perf_counter()
                encoders[precision].encode(sample, batch_size=batch, precision=autocast(precision))
                seconds = time.perf_counter() - started
                row = {
                    "round": round_number,
                    "precision": precision,
                    "batch": batch,
                    "labels_per_s": round(len(sample) / seconds, 1),
                    "projected_s_all_labels": round(len(texts) * seconds / len(sample), 1),
                    "load_average": round(os.getloadavg()[0], 2),
                }
                print(json.dumps(row), flush=True)
                held = best.get((precision, batch))
                if held is None or row["labels_per_s"] > held["labels_per_s"]:
                    best[(precision, batch)] = row
    results["speed_best_of_rounds"] = list(best.values())
    for row in best.values():
        print("best:", json.dumps(row), flush=True)

    sets = [read_linking_csv(name, ESCO_LINKING / f, taxonomy) for name, f in ESCO_SETS.items()]
    results["full"] = []
    for precision in args.full:
        encoder = encoders[precision]
        started = time.perf_counter()
        vectors = encoder.encode(texts, precision=autocast(precision))
        seconds = time.perf_counter() - started
        offsets, at = [], 0
        for entry in taxonomy.entries:
            offsets.append(at)
            at += len(entry.labels)
        index = LabelIndex(vectors, np.asarray(offsets), texts)
        # spans are embedded in fp32 by the plain encoder: only the labels' precision varies
        linker = with_index(
            taxonomy, encoders.get("fp32") or encoder_for("fp32"), index, LinkerSettings()
        )
        row = {
            "precision": precision,
            "embed_s": round(seconds, 1),
            "load_average": round(os.getloadavg()[0], 2),
        }
        for gold in sets:
            row[f"{gold.name}_accuracy@1"] = round(evaluate(linker, gold)["accuracy@1"], 4)
        results["full"].append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
