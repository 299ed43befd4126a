"""The model registry: versions, promotion, refusal and rollback, persisted on disk."""

from __future__ import annotations

import json

import pytest

from training.registry import Registry


def fake_checkpoint(folder):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_text("weights")
    return folder


def test_add_promote_refuse_rollback_persist(tmp_path):
    root = tmp_path / "models"
    registry = Registry(root)
    assert registry.versions() == [] and registry.serving() is None
    assert registry.index_mtime() == 0.0

    v1 = registry.add(
        fake_checkpoint(root / ".incoming" / "a"),
        heldout_f1=0.5,
        trigger="cli",
        snapshot={"annotation_ids": [1, 2], "sha256": "ab", "documents": 2},
        labels=["Tech"],
    )
    assert v1.version == "v0001" and v1.status == "candidate"
    assert (root / "v0001" / "model.safetensors").is_file()
    assert not (root / ".incoming" / "a").exists()
    registry.promote("v0001", "first model")
    seen = registry.index_mtime()

    v2 = registry.add(fake_checkpoint(tmp_path / "b"), parent="v0001", heldout_f1=0.3)
    registry.refuse(v2.version, "held-out F1 0.3 < v0001 0.5 - tolerance 0.01")
    v3 = registry.add(fake_checkpoint(tmp_path / "c"), parent="v0001", heldout_f1=0.6)
    registry.promote(v3.version, "better")
    assert registry.serving_changed_since(seen)

    reopened = Registry(root)  # a fresh process sees the same state
    statuses = {v.version: v.status for v in reopened.versions()}
    assert statuses == {"v0001": "retired", "v0002": "refused", "v0003": "serving"}
    assert reopened.get("v0002").reason.startswith("held-out F1 0.3")
    assert reopened.get("v0001").snapshot["annotation_ids"] == [1, 2]
    assert reopened.get("v0003").path == root / "v0003"

    rolled = reopened.rollback("v0001", "v0003 tags too much")
    assert rolled.status == "serving" and Registry(root).serving().version == "v0001"
    assert Registry(root).get("v0003").status == "retired"
    events = [(e["action"], e["version"]) for e in Registry(root).events()]
    assert events[-1] == ("rollback", "v0001")
    assert Registry(root).events()[-1]["previous"] == "v0003"
    index = json.loads((root / "versions.json").read_text())
    assert index["serving"] == "v0001" and index["versions"][0]["path"] == "v0001"

    # version ids are never reused, even when a folder exists without an index entry
    fake_checkpoint(root / "v0007")
    assert registry.add(fake_checkpoint(tmp_path / "d")).version == "v0008"


def test_errors(tmp_path):
    registry = Registry(tmp_path / "models")
    with pytest.raises(ValueError, match="unknown model version 'v0009'"):
        registry.rollback("v0009")
    with pytest.raises(ValueError, match="not a checkpoint folder"):
        registry.add(tmp_path)
    with pytest.raises(ValueError, match="unknown version details"):
        registry.add(fake_checkpoint(tmp_path / "a"), colour="red")
    version = registry.add(fake_checkpoint(tmp_path / "b"))
    registry.promote(version.version)
    with pytest.raises(ValueError, match="already serving"):
        registry.rollback(version.version)
    with pytest.raises(ValueError, match="is serving"):
        registry.refuse(version.version, "no")
