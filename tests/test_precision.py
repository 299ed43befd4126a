"""Precisions and runtimes of the tagger's forward pass, "auto" per CPU class, CPU facts."""

import json
import logging

import numpy as np
import pytest
import torch

from training import cpu, precision
from training.crf import Transitions
from training.onnx_runtime import available as onnx_available
from training.tagger import Tagger
from training.text import tag_names
from training.windows import WindowConfig

PROJECT_LABELS = ["Business", "Technology", "Technical", "Soft"]
TEXT = "team work and communication skills for the analyst , excel or spark " * 3

needs_onnx = pytest.mark.skipif(not onnx_available(), reason="onnxruntime is not installed")


def load(model, label_map, **options) -> Tagger:
    return Tagger.load(model, PROJECT_LABELS, label_map, **options)


def test_cpu_info_names_the_cpu_and_its_class():
    info = cpu.cpu_info()
    assert info.cpu_class in cpu.CPU_CLASSES and info.model and info.capability
    assert info.threads == torch.get_num_threads() and info.cores >= 1
    line = info.line()
    assert info.model in line and info.capability in line and f"class {info.cpu_class}" in line
    assert json.loads(json.dumps(info.as_dict()))["cpu_class"] == info.cpu_class


@pytest.mark.parametrize(
    ("bf16", "capability", "expected"),
    [
        (True, "AVX512", "bf16"),
        (False, "AVX512", "avx2"),
        (False, "AVX2", "avx2"),
        (False, "DEFAULT", "other"),
    ],
)
def test_cpu_class_follows_bf16_and_vector_capability(monkeypatch, bf16, capability, expected):
    monkeypatch.setattr(cpu, "native_bf16", lambda: bf16)
    monkeypatch.setattr(cpu, "capability", lambda: capability)
    assert cpu.cpu_class() == expected


@pytest.mark.parametrize(
    ("flags", "unit", "shown"),
    [
        ({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}, "amx", "AMX"),
        ({"avx2", "avx512f", "avx512_bf16"}, "avx512-bf16", "AVX512-BF16, no AMX"),
        ({"avx2", "fma"}, "none", "no bf16 unit"),
        (set(), "none", "no bf16 unit"),
    ],
)
def test_bf16_unit_tells_amx_from_avx512_bf16_from_neither(monkeypatch, flags, unit, shown):
    assert cpu.bf16_unit(frozenset(flags)) == unit
    monkeypatch.setattr(cpu, "bf16_unit", lambda: unit)
    line = cpu.cpu_info().line()
    assert f"({shown})" in line and cpu.cpu_info().bf16_unit == unit


def test_a_cpu_line_under_isa_caps_says_it_is_an_emulation(monkeypatch):
    for name in cpu.ISA_CAPS:
        monkeypatch.delenv(name, raising=False)
    assert "capped" not in cpu.cpu_info().line()
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX2")
    info = cpu.cpu_info()
    assert info.isa_caps == "ATEN_CPU_CAPABILITY=avx2 DNNL_MAX_CPU_ISA=AVX2"
    assert info.line().endswith(
        "; ISA capped by ATEN_CPU_CAPABILITY=avx2 DNNL_MAX_CPU_ISA=AVX2 (emulated on this CPU)"
    )


def test_cpu_flags_are_read_from_this_machine():
    flags = cpu.cpu_flags()
    assert not flags or "fpu" in flags or "fp" in flags or "neon" in flags or len(flags) > 5
    assert cpu.bf16_unit() in cpu.BF16_UNITS


@pytest.mark.parametrize("cpu_class", cpu.CPU_CLASSES)
def test_auto_picks_the_measured_variant_of_each_cpu_class(monkeypatch, caplog, cpu_class):
    monkeypatch.setattr(precision, "cpu_class", lambda: cpu_class)
    with caplog.at_level(logging.INFO, logger="training.precision"):
        chosen = precision.resolve_precision("auto")
    assert chosen == precision.AUTO[cpu_class] or not onnx_available()
    assert f"precision auto: {chosen}" in caplog.text and f"class {cpu_class}" in caplog.text
    assert precision.resolve_precision("auto", quantize=False) == "fp32"


def test_auto_without_onnxruntime_falls_back_to_fp32(monkeypatch):
    monkeypatch.setattr(precision, "cpu_class", lambda: "avx2")
    monkeypatch.setattr(precision, "onnx_available", lambda: False)
    assert precision.AUTO["avx2"] == "onnx-fused-int8"
    assert precision.resolve_precision("auto") == "fp32"


@needs_onnx
def test_loaded_tagger_says_which_precision_auto_picked(
    monkeypatch, tiny_reference_model, reference_label_map
):
    monkeypatch.setattr(precision, "cpu_class", lambda: "avx2")
    tagger = load(tiny_reference_model, reference_label_map)
    fp32 = load(tiny_reference_model, reference_label_map, quantize=False)
    assert tagger.precision == "onnx-fused-int8" and tagger.runtime is not None
    assert tagger.version == fp32.version + "+onnx-fused-int8"
    assert "precision='onnx-fused-int8'" in repr(tagger)
    assert tagger.batch_tokens == 0  # int8: one window per pass


@needs_onnx
def test_onnx_fp32_gives_torch_fp32_numbers(tiny_reference_model, reference_label_map):
    text = TEXT * 2  # several windows
    options = {"window": WindowConfig(12, 4)}
    torch_fp32 = load(tiny_reference_model, reference_label_map, precision="fp32", **options)
    onnx = load(tiny_reference_model, reference_label_map, precision="onnx", **options)
    expected, got = (t.predict([text], hidden=True)[0] for t in (torch_fp32, onnx))
    np.testing.assert_allclose(got.probs, expected.probs, atol=1e-5)
    np.testing.assert_allclose(got.hidden, expected.hidden, atol=1e-4)
    assert got.word_tags == expected.word_tags
    # the torch model behind it is untouched: still fp32 and in eval mode
    assert not onnx.model.training
    assert next(onnx.model.parameters()).dtype == torch.float32


@needs_onnx
def test_onnx_int8_stays_close_to_fp32(tiny_reference_model, reference_label_map):
    fp32, int8 = (
        load(tiny_reference_model, reference_label_map, precision=p).predict([TEXT])[0]
        for p in ("fp32", "onnx-int8")
    )
    assert int8.probs.dtype == np.float32
    assert np.abs(fp32.probs - int8.probs).max() < 0.05


@needs_onnx
def test_fused_graphs_give_the_unfused_spans(tiny_reference_model, reference_label_map, caplog):
    """ONNX Runtime's BERT fusions (attention, GELU, layer norms) change how the forward
    pass is computed, not what it computes: fp32 matches torch, int8 stays by int8."""
    texts = [TEXT * 2, "we need a data engineer with python and sql", "c and java"]
    options = {"window": WindowConfig(12, 4)}
    with caplog.at_level(logging.INFO, logger="training.onnx_runtime"):
        runs = {
            name: load(tiny_reference_model, reference_label_map, precision=name, **options)
            for name in ("fp32", "onnx-fused", "onnx-int8", "onnx-fused-int8")
        }
    fusions = [r.getMessage() for r in caplog.records if "fusions" in r.getMessage()]
    assert len(fusions) == 2 and all("SkipLayerNormalization" in f for f in fusions)
    # fp32 fuses attention; int8 keeps it as products (quantized: faster, docs/tagger.md)
    assert "'Attention': 2" in fusions[0] and "Attention'" not in fusions[1]
    assert runs["onnx-fused-int8"].batch_tokens == 0  # quantized: one window per pass
    out = {name: tagger.predict(texts, hidden=True) for name, tagger in runs.items()}
    for fp32, fused in zip(out["fp32"], out["onnx-fused"], strict=True):
        np.testing.assert_allclose(fused.probs, fp32.probs, atol=1e-4)
        np.testing.assert_allclose(fused.hidden, fp32.hidden, atol=1e-3)
        assert [s.key() for s in fused.spans] == [s.key() for s in fp32.spans]
    for int8, fused in zip(out["onnx-int8"], out["onnx-fused-int8"], strict=True):
        assert np.abs(fused.probs - int8.probs).max() < 0.05
        assert fused.word_tags == int8.word_tags


@needs_onnx
@pytest.mark.parametrize(("name", "tolerance"), [("onnx", 1e-5), ("onnx-int8", 0)])
def test_onnx_batches_give_what_one_by_one_gives(
    tiny_reference_model, reference_label_map, name, tolerance
):
    tagger = load(
        tiny_reference_model, reference_label_map, window=WindowConfig(12, 4), precision=name
    )
    assert tagger.batch_tokens == (0 if name == "onnx-int8" else tagger.batch_tokens)
    texts = ["we need a data engineer with python and sql", "", TEXT, "c and java"]
    for text, batched in zip(texts, tagger.predict(texts), strict=True):
        alone = tagger.predict([text])[0]
        np.testing.assert_allclose(batched.probs, alone.probs, atol=tolerance)
        assert [s.key() for s in batched.spans] == [s.key() for s in alone.spans]


@needs_onnx
def test_crf_scores_decode_the_same_in_every_precision(tiny_reference_model, reference_label_map):
    """The CRF's Viterbi runs on the probabilities, outside the model: a precision changes
    the probabilities it gets, never how they are decoded."""
    tags = tag_names(PROJECT_LABELS)
    rng = np.random.default_rng(0)
    scores = Transitions(
        tuple(tags),
        rng.normal(size=len(tags)),
        rng.normal(size=(len(tags),) * 2),
        rng.normal(size=len(tags)),
    )
    from training import checkpoint
    from training.decoding import decode_many, no_span_across_lines

    for name in ("fp32", "onnx", "onnx-int8"):
        loaded = checkpoint.load(tiny_reference_model, PROJECT_LABELS, reference_label_map)
        loaded.transitions = scores
        tagger = Tagger.from_loaded(loaded, str(tiny_reference_model), precision=name)
        assert tagger.transitions is not None
        prediction = tagger.predict([TEXT])[0]
        line_aware = no_span_across_lines(prediction.probs, prediction.words, TEXT, tagger.tags)
        t = tagger.transitions
        [expected] = decode_many([line_aware], tagger.tags, "viterbi", (t.start, t.matrix, t.end))
        assert prediction.word_tags == expected


def test_every_benchmark_prints_the_cpu_it_ran_on():
    """Speed figures differ by CPU class: each benchmark script names the CPU (README)."""
    from pathlib import Path

    files = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))
    scripts = [p for p in files if '__name__ == "__main__"' in p.read_text()]  # not helpers
    missing = [p.name for p in scripts if "cpu_info()" not in p.read_text()]
    assert scripts and missing == []
