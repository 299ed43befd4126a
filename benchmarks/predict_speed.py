"""Prediction speed: skillloop's Tagger against the transformers pipeline a user would run.

The same model and the same real job posts (SkillSpan dev postings regrouped into whole
posts) go through
  - `transformers.pipeline("token-classification", aggregation_strategy="simple", stride=64)`
  - skillloop's `Tagger.predict` in several settings (window length, precision, threads)
in one process. Printed per variant: posts/s, ratio to the pipeline, share of the posts'
word characters the model reads, span agreement with the pipeline and with skillloop fp32,
and, with a trained model (`--model`), dev span-F1 (exact character spans).

Run it under the heavy-work lock, e.g.
  flock /tmp/skillloop-heavy.lock .venv/bin/python -m benchmarks.predict_speed --model DIR
Without --model, the backbone with a random (seeded) head is used: fine for speed and
agreement, meaningless for F1.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import add_skillspan_data, run_benchmark, split_file
from training import checkpoint, onnx_runtime
from training.cpu import cpu_info
from training.datasets import read_skillspan
from training.decoding import decode_many
from training.evaluate import OVERALL, evaluate_predictions, span_scores
from training.precision import quantize_encoder
from training.student import encoder_layers, truncate_encoder
from training.tagger import BATCH_TOKENS, Tagger
from training.text import Span, split_tag, tags_to_spans, words
from training.windows import WindowConfig

# name: (max_tokens, stride, precision, threads[, extra]); max_tokens excludes [CLS] and
# [SEP]; extra: {"int8": onnx_runtime.quantize options}, {"ffn_outputs": True} (torch int8
# of every encoder Linear layer, the feed-forward outputs too) or {"concurrent": False}
# (ONNX Runtime: one window at a time on all threads, not one window per thread)
VARIANTS: dict[str, tuple] = {
    "fp32-510": (510, 64, "fp32", 2),
    "fp32-254": (254, 32, "fp32", 2),
    "fp32-126": (126, 32, "fp32", 2),
    "bf16-510": (510, 64, "bf16", 2),
    "bf16-254": (254, 32, "bf16", 2),
    "bf16-126": (126, 32, "bf16", 2),
    "bf16-126-s16": (126, 16, "bf16", 2),
    "bf16-254-1thread": (254, 32, "bf16", 1),
    "bf16-126-batched": (126, 32, "bf16", 2),  # batches like fp32: many shapes to compile
    "bf16-254-batched": (254, 32, "bf16", 2),
    "bf16-254-s16": (254, 16, "bf16", 2),
    "int8-254": (254, 32, "int8", 2),
    "int8-126": (126, 32, "int8", 2),
    "int8full-254": (254, 32, "int8", 2, {"ffn_outputs": True}),
    "onnx-254": (254, 32, "onnx", 2),
    "onnx-int8-254": (254, 32, "onnx-int8", 2),
    "onnx-int8-126": (126, 32, "onnx-int8", 2),
    "onnx-int8-510": (510, 64, "onnx-int8", 2),
    "onnx-int8-254-1thread": (254, 32, "onnx-int8", 1),
    "onnx-fused-254": (254, 32, "onnx-fused", 2),
    "onnx-fused-int8-254": (254, 32, "onnx-fused-int8", 2),
    "onnx-fused-int8-254-seq": (254, 32, "onnx-fused-int8", 2, {"concurrent": False}),
    # attention fused too (the int8 default leaves it as products, all of them int8)
    "onnx-fusedatt-int8-254": (
        254,
        32,
        "onnx-fused-int8",
        2,
        {"fusions": {"enable_attention": True}},
    ),
    "onnx-int8-254-seq": (254, 32, "onnx-int8", 2, {"concurrent": False}),
    "onnx-254-seq": (254, 32, "onnx", 2, {"concurrent": False}),
    "onnx-int8pt-254": (254, 32, "onnx-int8", 2, {"int8": {"per_channel": False}}),
    "onnx-int8rr-254": (254, 32, "onnx-int8", 2, {"int8": {"reduce_range": True}}),
    "onnx-uint8-254": (254, 32, "onnx-int8", 2, {"int8": {"weight_type": "QUInt8"}}),
    "onnx-int8ffn-254": (254, 32, "onnx-int8", 2, {"int8": {"fp32_ffn_outputs": True}}),
    "onnx-uint8ffn-254": (
        254,
        32,
        "onnx-int8",
        2,
        {"int8": {"fp32_ffn_outputs": True, "weight_type": "QUInt8"}},
    ),
}


def make_tagger(loaded, source: str, name: str) -> Tagger:
    """A tagger for variant `name` on a copy of `loaded`'s model."""
    max_tokens, stride, precision, _threads, *rest = VARIANTS[name]
    extra = rest[0] if rest else {}
    model = copy.deepcopy(loaded.model)
    options = {"batch_tokens": BATCH_TOKENS} if "batched" in name else {}
    if extra.get("ffn_outputs"):
        quantize_encoder(model, ffn_outputs=True)
        precision, options["batch_tokens"] = "fp32", 0  # already int8: run it as it is
    saved = dict(onnx_runtime.INT8_OPTIONS)
    onnx_runtime.INT8_OPTIONS.update(extra.get("int8", {}))
    onnx_runtime.CONCURRENT = extra.get("concurrent", True)
    onnx_runtime.FUSIONS.update(extra.get("fusions", {}))
    try:
        fresh = checkpoint.Loaded(loaded.tokenizer, model, loaded.labels, [], loaded.transitions)
        tagger = Tagger.from_loaded(
            fresh,
            source,
            window=WindowConfig(max_tokens, stride),
            precision=precision,
            **options,
        )
    finally:
        onnx_runtime.INT8_OPTIONS.clear()
        onnx_runtime.INT8_OPTIONS.update(saved)
        onnx_runtime.CONCURRENT = True
        onnx_runtime.FUSIONS.clear()
    if extra.get("ffn_outputs"):
        tagger.precision = "int8-full"
    return tagger


def agreement(reference: list[list[Span]], other: list[list[Span]], labels) -> float:
    """Span F1 of `other` against `reference` (exact start, end and label)."""
    return span_scores(reference, other, labels)[OVERALL].f1


def gold_f1(docs, spans: list[list[Span]], labels) -> dict:
    """Dev scores: exact character-span F1 overall and per label, seqeval strict F1."""
    report = evaluate_predictions(docs, spans, labels=labels)
    row = {"f1": report.char[OVERALL].f1, "f1_strict_entity": report.entity[OVERALL].f1}
    row["f1_by_label"] = {label: report.char[label].f1 for label in labels}
    return row


def word_chars(text: str) -> np.ndarray:
    mask = np.zeros(len(text), dtype=bool)
    for start, end in words(text):
        mask[start:end] = True
    return mask


def pipeline_share(pipe, texts: list[str]) -> float:
    """Share of word characters covered by the subwords the pipeline feeds its model."""
    covered = total = 0
    for text in texts:
        wanted = word_chars(text)
        seen = np.zeros(len(text), dtype=bool)
        for chunk in pipe.preprocess(text, **pipe._preprocess_params):
            special = chunk["special_tokens_mask"][0].bool()
            for (start, end), is_special in zip(
                chunk["offset_mapping"][0].tolist(), special, strict=True
            ):
                if not is_special:
                    seen[start:end] = True
        covered += int((seen & wanted).sum())
        total += int(wanted.sum())
    return covered / total


def tagger_share(tagger: Tagger, texts: list[str]) -> float:
    """Share of word characters whose word takes its probabilities from some window."""
    from training.windows import owned_words

    covered = total = 0
    for text in texts:
        doc = tagger._prepare(text)
        read = np.zeros(len(doc.words), dtype=bool)
        for window in doc.windows:
            read[owned_words(doc.encoding, window)] = True
        sizes = np.array([end - start for start, end in doc.words], dtype=np.int64)
        covered, total = covered + int(sizes[read].sum()), total + int(sizes.sum())
    return covered / total if total else 1.0


def timed(function, repeat: int):
    """`(result, seconds)` of the fastest of `repeat` calls (others share this machine)."""
    best = None
    for _ in range(repeat):
        begin = time.perf_counter()
        result = function()
        seconds = time.perf_counter() - begin
        best = seconds if best is None else min(best, seconds)
    return result, best


def run_pipeline(loaded, texts, stride: int | None, repeat: int):
    from transformers import pipeline

    options = {"stride": stride} if stride else {}
    pipe = pipeline(
        "token-classification",
        model=loaded.model,
        tokenizer=loaded.tokenizer,
        aggregation_strategy="simple",
        device="cpu",
        **options,
    )
    share = pipeline_share(pipe, texts)
    pipe(texts[:2])  # warm-up
    outputs, seconds = timed(lambda: pipe(texts), repeat)
    spans = [
        [
            Span(e["start"], e["end"], e["entity_group"], text[e["start"] : e["end"]], e["score"])
            for e in entities
        ]
        for text, entities in zip(texts, outputs, strict=True)
    ]
    return spans, seconds, share


def padding_waste(tagger: Tagger, texts: list[str]) -> tuple[float, float]:
    """Padded share of model input with length-sorted batches, and with batches in post order."""
    from training.windows import batches_under_budget, encode, make_windows

    lengths = []
    for text in texts:
        encoding = encode(tagger.tokenizer, text, words(text))
        lengths += [w.end - w.start for w in make_windows(encoding, tagger.window)]

    def waste(jobs):
        real = padded = 0
        specials = tagger.max_width - tagger.window.max_tokens
        for batch in batches_under_budget(jobs, tagger.batch_tokens, length=lambda n: n):
            width = tagger.input_width(max(batch) + specials)
            real += sum(n + specials for n in batch)
            padded += width * len(batch)
        return 1 - real / padded

    return waste(sorted(lengths, reverse=True)), waste(lengths)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", help="trained checkpoint folder (default: backbone + random head)"
    )
    add_skillspan_data(parser, "dev")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--encoder-layers",
        type=int,
        default=0,
        help="keep only the model's lowest K encoder layers (training.student), untrained "
        "as cut: for speed; F1 needs a student trained with `skillloop train --encoder-layers`",
    )
    parser.add_argument("--limit", type=int, help="use only the first N posts")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--repeat", type=int, default=1, help="time N runs, keep the fastest")
    parser.add_argument(
        "--no-pipeline", action="store_true", help="skip the pipeline (accuracy checks only)"
    )
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    docs = read_skillspan(split_file(args.data, "dev"))[: args.limit]
    texts = [d.text for d in docs]
    gold = [d.spans for d in docs]
    if args.model:
        config = json.loads((Path(args.model) / "config.json").read_text())
        labels = list(
            dict.fromkeys(split_tag(t)[1] for t in config["id2label"].values() if split_tag(t)[1])
        )
    else:
        labels = sorted({s.label for spans in gold for s in spans})
    torch.manual_seed(0)
    loaded = checkpoint.load(args.model, labels, allow_new_labels=not args.model)
    full = len(encoder_layers(loaded.model))
    layers = truncate_encoder(loaded.model, args.encoder_layers)
    lengths = [len(loaded.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    cpu = cpu_info()
    print(cpu.line())
    cut = f" (the lowest of {full}, as they are: not trained as a student)" if layers < full else ""
    print(f"model: {args.model or 'backbone + random head'}; labels {labels}")
    print(f"encoder layers: {layers}{cut}")
    print(
        f"{len(texts)} posts from {args.data}; subwords per post: median "
        f"{int(np.median(lengths))}, max {max(lengths)}, {sum(n > 510 for n in lengths)} "
        f"longer than 510; torch threads {args.threads}; best of {args.repeat} "
        "timed run(s) on a shared machine"
    )

    results = {}
    fp32_spans = {}  # (max_tokens, stride) -> spans of the fp32 variant with those windows
    header = f"{'variant':<25}{'posts/s':>8}{'x pipe':>7}{'read':>7}{'padding':>8}"
    header += f"{'agree pipe':>11}{'agree ref':>10}"
    header += f"{'F1':>7}{'F1 argmax':>10}{'strict':>7}" if args.model else ""
    pipe_spans, pipe_rate = None, float("nan")
    if args.no_pipeline:
        print(header)
    else:
        plain_share = pipeline_share(
            __import__("transformers").pipeline(
                "token-classification",
                model=loaded.model,
                tokenizer=loaded.tokenizer,
                aggregation_strategy="simple",
                device="cpu",
            ),
            texts,
        )
        pipe_spans, pipe_seconds, pipe_share = run_pipeline(loaded, texts, 64, args.repeat)
        pipe_rate = len(texts) / pipe_seconds
        results["pipeline-stride64"] = {"posts_per_s": pipe_rate, "share_read": pipe_share}
        print(f"pipeline without stride reads {plain_share:.1%} of the word characters")
        print(header)
        line = f"{'pipeline-stride64':<25}{pipe_rate:>8.2f}{1.0:>7.2f}{pipe_share:>7.1%}{'':>8}"
        line += f"{1.0:>11.3f}"
        if args.model:
            results["pipeline-stride64"].update(gold_f1(docs, pipe_spans, labels))
            row = results["pipeline-stride64"]
            line += f"{'':>10}{row['f1']:>7.3f}{'':>10}{row['f1_strict_entity']:>7.3f}"
        print(line, flush=True)

    for name in args.variants:
        max_tokens, stride, precision, threads, *_ = VARIANTS[name]
        torch.set_num_threads(threads)
        begin = time.perf_counter()
        tagger = make_tagger(loaded, args.model or "backbone", name)
        setup = time.perf_counter() - begin
        tagger.warm_up()  # as Tagger.load does for bf16 and int8
        tagger.predict(texts[:2])
        predictions, seconds = timed(lambda: tagger.predict(texts), args.repeat)  # noqa: B023
        torch.set_num_threads(args.threads)
        spans = [p.spans for p in predictions]
        if precision == "fp32":
            fp32_spans[(max_tokens, stride)] = spans
        reference = fp32_spans.get((max_tokens, stride), next(iter(fp32_spans.values()), spans))
        rate = len(texts) / seconds
        row = {
            "max_tokens": max_tokens,
            "stride": stride,
            "precision": tagger.precision,
            "threads": threads,
            "setup_s": setup,
            "posts_per_s": rate,
            "ratio": rate / pipe_rate,
            "share_read": tagger_share(tagger, texts),
            "padding": padding_waste(tagger, texts),
            "agree_pipeline_f1": agreement(pipe_spans, spans, labels) if pipe_spans else np.nan,
            "agree_reference_f1": agreement(reference, spans, labels),
        }
        line = (
            f"{name:<25}{rate:>8.2f}{row['ratio']:>7.2f}{row['share_read']:>7.1%}"
            f"{row['padding'][0]:>8.1%}{row['agree_pipeline_f1']:>11.3f}"
            f"{row['agree_reference_f1']:>10.3f}"
        )
        if args.model:
            row.update(gold_f1(docs, spans, labels))
            argmax_tags = decode_many([p.probs for p in predictions], tagger.tags, "argmax")
            argmax_spans = [
                tags_to_spans(tags, p.words, p.text)
                for tags, p in zip(argmax_tags, predictions, strict=True)
            ]
            row["f1_argmax"] = gold_f1(docs, argmax_spans, labels)["f1"]
            line += f"{row['f1']:>7.3f}{row['f1_argmax']:>10.3f}{row['f1_strict_entity']:>7.3f}"
        results[name] = row
        print(line, flush=True)

    if not args.variants:  # `--variants` with none named: the pipeline's line alone
        return 0
    print(
        "agree ref: span F1 against fp32 with the same windows (else the first fp32 variant); "
        "padding: padded share of model input "
        "with length-sorted batches (in post order it would be "
        f"{results[args.variants[0]]['padding'][1]:.1%} for {args.variants[0]})"
    )
    begin = time.perf_counter()
    decode_many([p.probs for p in predictions], tagger.tags, "viterbi")
    print(
        f"constrained Viterbi decoding of all {len(texts)} posts at once: "
        f"{time.perf_counter() - begin:.3f} s"
    )
    if args.model:
        for name, row in results.items():
            per_label = ", ".join(f"{k} {v:.3f}" for k, v in row["f1_by_label"].items())
            print(f"F1 by label, {name}: {per_label}")
    end_cpu = cpu_info()
    print(f"load average at the end: {end_cpu.load_average:.1f}")
    if args.json:
        report = {"cpu": cpu.as_dict(), "load_average_end": end_cpu.load_average}
        report["encoder_layers"] = layers
        Path(args.json).write_text(json.dumps(report | {"variants": results}, indent=2))
    return 0


if __name__ == "__main__":
    run_benchmark(main)
