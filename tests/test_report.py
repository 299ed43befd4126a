"""The rounds report for a project with three recorded rounds, and the stopping hint."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from matplotlib.collections import PathCollection

from backend.loop import report_plots
from backend.loop.report import round_rows, stopping_hint, write_report
from training.registry import Registry

LABELS = ["Technology", "Technical", "Business", "Soft"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def metrics(f1: float, per_label: dict[str, float]) -> dict:
    """The shape of training.evaluate.EvalReport.to_dict()."""
    block = {
        label: {"precision": f, "recall": f, "f1": f, "support": 10, "predicted": 10}
        for label, f in per_label.items()
    }
    block["overall"] = {"precision": f1, "recall": f1, "f1": f1, "support": 40, "predicted": 40}
    return {"documents": 8, "labels": list(per_label), "entity_strict": block}


def add_round(registry: Registry, n_docs: int, f1: float, baseline, parent, per_label, **kw):
    incoming = registry.root / ".incoming" / f"r{n_docs}"
    incoming.mkdir(parents=True)
    (incoming / "config.json").write_text("{}")
    snapshot = {
        "annotation_ids": list(range(1, n_docs + 1)),
        "sha256": "ab" * 32,
        "documents": n_docs,
    }
    return registry.add(
        incoming,
        parent=parent,
        heldout_f1=f1,
        baseline_f1=baseline,
        snapshot=snapshot,
        metrics=metrics(f1, per_label),
        labels=LABELS,
        trigger="auto",
        **kw,
    )


def three_rounds(root: Path) -> Registry:
    """v0001 promoted, v0002 promoted, v0003 refused by the held-out gate."""
    registry = Registry(root)
    v1 = add_round(
        registry,
        20,
        0.40,
        0.0,
        None,
        {"Technology": 0.6, "Technical": 0.3, "Business": 0.2, "Soft": 0.1},
    )
    registry.promote(v1.version, "first model")
    v2 = add_round(
        registry,
        60,
        0.52,
        0.41,
        v1.version,
        {"Technology": 0.7, "Technical": 0.45, "Business": 0.3, "Soft": 0.2},
    )
    registry.promote(v2.version, "held-out F1 0.52 > 0.41")
    v3 = add_round(
        registry,
        100,
        0.515,
        0.52,
        v2.version,
        {"Technology": 0.72, "Technical": 0.44, "Business": 0.28, "Soft": 0.2},
    )
    registry.set_gate(v3.version, GATE)
    registry.refuse(v3.version, "held-out F1 0.515 < 0.52 - tolerance 0.01")
    return registry


# how backend.loop.gate.decide records a measured refusal
GATE = {
    "rule": "paired-bootstrap",
    "margin": 0.01,
    "posts": 40,
    "measured": True,
    "difference": -0.005,
    "low": -0.031,
    "high": 0.018,
    "decision": "refused",
}


@pytest.mark.parametrize("fmt", ["html", "md"])
def test_report_for_three_recorded_rounds(tmp_path, fmt):
    registry = three_rounds(tmp_path / "models")
    versions = registry.versions()
    out = write_report(
        "demo", versions, tmp_path / "reports" / f"report.{fmt}", fmt, LABELS, {"annotations": 100}
    )
    text = out.read_text()
    for png in ("report-learning-curve.png", "report-label-f1.png"):
        assert (out.parent / png).read_bytes().startswith(PNG_MAGIC)
    for needle in (
        "v0001",
        "v0002",
        "v0003",
        "refused",
        "0.515 &lt; 0.52" if fmt == "html" else "0.515 < 0.52",
        "Stopping hint",
        "per 100 annotations",
        "gain [80% interval]",
        "-0.005 [-0.031, +0.018] on 40 posts",
    ):
        assert needle in text, needle
    if fmt == "html":
        images = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
        assert len(images) == 2
        assert base64.b64decode(images[0]).startswith(PNG_MAGIC)
    else:
        assert "![learning curve](report-learning-curve.png)" in text
        # per-label F1 columns in the rounds table: Technical 0.45 in v0002's row
        row = next(line for line in text.splitlines() if line.startswith("| v0002"))
        assert "0.45" in row and "held-out F1 0.52 > 0.41" in row


def test_stopping_hint_figures(tmp_path):
    versions = three_rounds(tmp_path / "models").versions()
    hint = stopping_hint(versions)
    # paired gains: v0001 +0.40 over the base (20 annotations), v0002 +0.11 over v0001 (40
    # more), v0003 -0.005 over v0002 (40 more): 0.505 / 100 * 100
    assert hint.gain_per_100 == pytest.approx(0.505)
    assert not hint.flattened
    assert hint.last_round_gain == pytest.approx(-0.005)
    assert hint.last_step_per_100 == pytest.approx(-0.0125)
    assert "one weak round is not yet a plateau" in hint.message
    flat = stopping_hint(versions, window=1)  # v0003 alone: -0.005 / 40 * 100
    assert flat.gain_per_100 == pytest.approx(-0.0125) and flat.flattened
    assert "flattened" in flat.message
    assert stopping_hint(versions[:0]).gain_per_100 is None


def rounds_on_growing_heldout_sets(root: Path) -> list:
    """F1 climbs 0.40 -> 0.50 -> 0.56 from round to round, but on a held-out set that grows
    each round; on the same posts each version beat the one before by 0.001 only."""
    registry = Registry(root)
    per_label = {"Technology": 0.5}
    parent = None
    for n_docs, f1, baseline in ((20, 0.40, None), (60, 0.50, 0.499), (100, 0.56, 0.559)):
        version = add_round(registry, n_docs, f1, baseline, parent, per_label)
        registry.promote(version.version, "not worse")
        parent = version.version
    return registry.versions()


def test_the_stopping_hint_adds_paired_gains_not_f1s_on_different_posts(tmp_path):
    hint = stopping_hint(rounds_on_growing_heldout_sets(tmp_path / "models"), window=2)
    assert hint.gain_per_100 == pytest.approx(0.002 / 80 * 100)  # not (0.56 - 0.40) / 80
    assert hint.flattened and "flattened" in hint.message


def test_the_learning_curve_draws_each_rounds_paired_gain(tmp_path, monkeypatch):
    drawn = {}

    def keep(fig, path):
        (ax,) = fig.axes
        markers = [c for c in ax.collections if isinstance(c, PathCollection)]
        drawn[path.name] = {
            "points": sorted(p for c in markers for p in c.get_offsets().tolist()),
            "title": ax.get_title(),
            "y": ax.get_ylabel(),
            "x": ax.get_xlabel(),
        }
        path.write_bytes(PNG_MAGIC)
        return path

    monkeypatch.setattr(report_plots, "_save", keep)
    versions = rounds_on_growing_heldout_sets(tmp_path / "models")
    write_report("demo", versions, tmp_path / "report.md", "md")
    curve = drawn["report-learning-curve.png"]
    assert curve["points"] == [[60, pytest.approx(0.001)], [100, pytest.approx(0.001)]]
    assert "same held-out posts" in curve["title"] and "gain" in curve["y"]
    assert curve["x"] == "annotated posts in the training snapshot"


def test_round_rows_and_errors(tmp_path):
    versions = three_rounds(tmp_path / "models").versions()
    rows = round_rows(versions, LABELS)
    assert [r["parent"] for r in rows] == ["base", "v0001", "v0002"]
    assert [r["status"] for r in rows] == ["retired", "serving", "refused"]
    assert rows[1]["per_label_f1"]["Technical"] == 0.45 and rows[2]["annotations"] == 100
    assert [r["gate"] for r in rows] == ["-", "-", "-0.005 [-0.031, +0.018] on 40 posts"]
    with pytest.raises(ValueError, match="no recorded rounds"):
        write_report("demo", [], tmp_path / "r.html")
    with pytest.raises(ValueError, match="html or md"):
        write_report("demo", versions, tmp_path / "r.pdf", "pdf")
