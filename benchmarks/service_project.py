"""The throwaway project the service benchmarks serve: a copy of projects/skillspan on
the offline backbone with a seeded random head (benchmarks/predict_latency.py,
benchmarks/reliability.py)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.common import ROOT


def skillspan_backbone_project(tmp: Path, extra_toml: str = "") -> Path:
    """`tmp/project`, whose `[model]` is the backbone saved with a seeded random head
    (max_tokens 256, stride 64), then `extra_toml` (its own sections)."""
    import torch

    from training import checkpoint

    torch.manual_seed(0)
    base = tmp / "base"
    loaded = checkpoint.load(None, ["Skill", "Knowledge"], allow_new_labels=True)
    loaded.model.save_pretrained(base)
    loaded.tokenizer.save_pretrained(base)
    project = tmp / "project"
    project.mkdir()
    source = ROOT / "projects" / "skillspan"
    (project / "labeling_config.xml").write_text((source / "labeling_config.xml").read_text())
    head, _, _ = (source / "project.toml").read_text().partition("[model]")
    model = f'[model]\nbase = "{base}"\nmax_tokens = 256\nstride = 64\n\n'
    (project / "project.toml").write_text(head + model + extra_toml)
    return project
