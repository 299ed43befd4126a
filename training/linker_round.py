"""One linker training round: train an adapter (or a cross-encoder stage), score it on
validation, gate it against the serving linker, and register the version (promoted, or
refused with the reason).

The gate is the tagger's: a new linker serves only if its validation accuracy@1 is not
worse than the serving linker's measured on the same pairs in the same run (the plain
backbone's when nothing serves yet). Each version stores its training config, its figures
and its own no-match threshold, tuned on the validation pairs.

Evaluation pairs never train: an extra (span, entry) pair whose span text is also a
validation span is dropped and counted.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from training.link_cross import CrossEncoder, CrossResult, CrossStage, Group, train_cross_encoder
from training.link_head import cross_groups, taxonomy_hard_negatives
from training.linker import LabelIndex, Linker, LinkerSettings, SentenceEncoder
from training.linker_adapter import AdapterConfig, train_adapter
from training.linker_eval import GoldSet, evaluate
from training.linker_settings import cross_ranking
from training.registry import LinkerRegistry, ModelVersion
from training.taxonomy import Taxonomy

log = logging.getLogger(__name__)

ADAPTER_FILE = "adapter.npy"
CROSS_FOLDER = "cross"
GATE_METRIC = "accuracy@1"


@dataclass
class LinkerRound:
    version: ModelVersion
    promoted: bool
    reason: str
    figures: dict  # validation set name -> the new linker's figures
    baseline: dict  # the same for the serving (or plain) linker
    baseline_version: str  # "v0002", or "plain" (the encoder alone) when none served
    extra_pairs_used: int
    extra_pairs_dropped: int  # their span is a validation span
    timings: dict = field(default_factory=dict)


def gate_score(figures: dict) -> float:
    """The mean accuracy@1 over the validation sets."""
    return float(np.mean([f[GATE_METRIC] for f in figures.values()]))


def evaluate_all(linker: Linker, validation: Sequence[GoldSet]) -> dict:
    return {gold.name: evaluate(linker, gold) for gold in validation}


def with_index(
    taxonomy: Taxonomy,
    encoder: SentenceEncoder,
    index: LabelIndex,
    settings: LinkerSettings,
    adapter: np.ndarray | None = None,
    cross: CrossEncoder | None = None,
) -> Linker:
    """A linker over an index already built (no cache read per version)."""
    return Linker.from_index(taxonomy, encoder, settings, index, adapter, cross)


def load_version(
    taxonomy: Taxonomy,
    encoder: SentenceEncoder,
    index: LabelIndex,
    folder: Path,
    encoder_source: str,
    cache_dir: str | Path | None,
) -> Linker:
    """A registered linker version, over `index` when it uses the same encoder (adapters
    share their encoder's label embeddings)."""
    settings = LinkerSettings.read(folder)
    if settings.encoder != encoder_source:
        return Linker.load(taxonomy, folder, cache_dir)  # another encoder: its own labels
    adapter = np.load(folder / settings.adapter) if settings.adapter else None
    cross = CrossEncoder(folder / settings.cross) if settings.crosses else None
    return with_index(taxonomy, encoder, index, settings, adapter, cross)


def train_cross_stage(
    plain: Linker, pairs: Sequence[tuple[str, int]], stage: CrossStage
) -> tuple[CrossEncoder, CrossResult, int]:
    """A cross-encoder on the plain encoder's weights, trained on the taxonomy's own groups
    (alternative labels against their nearest wrong entries: training/link_head.py) and
    one group per extra pair (its span, its entry first, the plain linker's other top
    entries). Returns the model, how training went and how many groups it had."""
    size, top = stage.config.group_size, plain.settings.rerank_top
    negatives = taxonomy_hard_negatives(plain.index, stage.queries, top, seed=stage.config.seed)
    groups = cross_groups(negatives, plain.index, plain.taxonomy)
    entries = plain.taxonomy.entries
    if pairs:
        ranked = plain.rank(plain.embed([text for text, _ in pairs]), size)
        for (text, entry), candidates in zip(pairs, ranked, strict=True):
            positive = entries[entry].preferred_label
            wrong = [c.label for c in candidates if c.id != entries[entry].id]
            groups.append(Group(text, [positive, *wrong[: size - 1]]))
    cross = CrossEncoder(plain.encoder.folder)
    result = train_cross_encoder(cross, groups, stage.config)
    cross.fit_scale(groups, seed=stage.config.seed)
    return cross, result, len(groups)


@dataclass
class TrainedParts:
    """What a round trained: the version's ranking settings (LinkerSettings fields), its
    adapter or cross-encoder, and how the training went (`seconds` among the details)."""

    settings: dict
    adapter: np.ndarray | None
    cross: CrossEncoder | None
    details: dict


def train_parts(
    encoder: SentenceEncoder,
    index: LabelIndex,
    taxonomy: Taxonomy,
    pairs: Sequence[tuple[str, int]],
    config: AdapterConfig,
    cross: CrossStage | None,
    progress: bool,
) -> TrainedParts:
    """An adapter, or with `cross` a cross-encoder stage instead: beside a cross-encoder
    the adapter did not carry from one ESCO validation set to the other (docs/linking.md),
    so that version ranks without one, with the ranking chosen for the stage."""
    plain = with_index(taxonomy, encoder, index, LinkerSettings())
    if cross is None:
        extra = None
        if pairs:
            extra = (plain.encoder.encode([t for t, _ in pairs]), [e for _, e in pairs])
        result = train_adapter(index, config, extra, progress)
        return TrainedParts(
            {"preferred_weight": config.preferred_weight, "adapter": ADAPTER_FILE},
            result.adapter,
            None,
            {"kind": "adapter", "config": asdict(config)}
            | {k: getattr(result, k) for k in ("steps", "first_loss", "last_loss", "queries")}
            | {"seconds": result.seconds},
        )
    model, trained, groups = train_cross_stage(plain, pairs, cross)
    return TrainedParts(
        cross_ranking(CROSS_FOLDER, cross.weight),
        None,
        model,
        {"kind": "cross-encoder", "config": asdict(cross.config), "groups": groups}
        | asdict(trained),
    )


def train_linker_round(
    taxonomy: Taxonomy,
    registry: LinkerRegistry,
    validation: Sequence[GoldSet],
    cache_dir: str | Path | None,
    extra_pairs: Sequence[tuple[str, str]] = (),
    config: AdapterConfig | None = None,
    trigger: str = "cli",
    encoder_source: str = "backbone",
    progress: bool = False,
    cross: CrossStage | None = None,
) -> LinkerRound:
    """Train, score, gate and register one linker version. `extra_pairs`: (span text,
    entry id), e.g. annotator-confirmed links. `encoder_source`: the frozen encoder the
    adapter sits on ("backbone" or a model folder), stored in the version. `cross`: train
    a cross-encoder stage (training/link_cross.py) instead of the adapter (`train_parts`)."""
    config = config or AdapterConfig()
    if not validation or not any(gold.pairs for gold in validation):
        raise ValueError("a linker round needs validation pairs with gold entries")
    started = time.time()
    encoder = SentenceEncoder(encoder_source)
    index = LabelIndex.build(taxonomy, encoder, cache_dir, progress)
    timings = {"index_s": round(time.time() - started, 1)}

    held_out = {
        p.span.strip().casefold() for gold in validation for p in gold.pairs + gold.no_match
    }
    position = {entry.id: i for i, entry in enumerate(taxonomy.entries)}
    kept: list[tuple[str, int]] = []
    dropped = 0
    for text, entry_id in extra_pairs:
        if entry_id not in position:
            raise ValueError(
                f"pair ({text!r}, {entry_id!r}): no entry {entry_id!r} in {taxonomy.name}"
            )
        if text.strip().casefold() in held_out:
            dropped += 1
            continue
        kept.append((text, position[entry_id]))
    parts = train_parts(encoder, index, taxonomy, kept, config, cross, progress)
    timings["train_s"] = parts.details.pop("seconds")
    plain = LinkerSettings(encoder_source, **parts.settings)
    candidate = with_index(taxonomy, encoder, index, plain, parts.adapter, parts.cross)
    started = time.time()
    figures = evaluate_all(candidate, validation)
    # One threshold for the version: the median of those tuned on each validation set.
    threshold = float(np.median([f["threshold"] for f in figures.values()]))

    serving = registry.serving()
    if serving is not None:
        baseline_linker = load_version(
            taxonomy, encoder, index, serving.path, encoder_source, cache_dir
        )
        baseline_version = serving.version
    else:
        baseline_linker = with_index(taxonomy, encoder, index, LinkerSettings(encoder_source))
        baseline_version = "plain"
    baseline = evaluate_all(baseline_linker, validation)
    timings["eval_s"] = round(time.time() - started, 1)

    new_score, old_score = gate_score(figures), gate_score(baseline)
    promoted = new_score >= old_score
    verdict = "not worse than" if promoted else "worse than"
    reason = (
        f"validation {GATE_METRIC} {new_score:.3f} {verdict} {baseline_version}'s "
        f"{old_score:.3f} ("
        + ", ".join(
            f"{name} {figures[name][GATE_METRIC]:.3f} vs {baseline[name][GATE_METRIC]:.3f}"
            for name in figures
        )
        + ")"
    )
    details = {
        "taxonomy": taxonomy.name,
        "taxonomy_fingerprint": taxonomy.fingerprint(),
        **parts.details,
        "extra_pairs": len(kept),
        "extra_pairs_dropped": dropped,
        "timings": timings,
        "validation": figures,
    }
    settings = LinkerSettings(
        encoder=encoder_source, threshold=threshold, details=details, **parts.settings
    )
    incoming = registry.root / ".incoming" / f"linker-{int(time.time() * 1000)}"
    shutil.rmtree(incoming, ignore_errors=True)
    incoming.mkdir(parents=True)
    if parts.adapter is not None:
        np.save(incoming / ADAPTER_FILE, parts.adapter)
    if parts.cross is not None:
        parts.cross.save(incoming / CROSS_FOLDER)
    settings.save(incoming)
    version = registry.add(
        incoming,
        parent=serving.version if serving else None,
        metrics={"validation": figures, GATE_METRIC: new_score},
        timings=timings,
        trigger=trigger,
        base=encoder_source,
    )
    gate = {
        "metric": GATE_METRIC,
        "new": new_score,
        "serving": old_score,
        "serving_version": baseline_version,
        "serving_figures": baseline,
    }
    registry.set_gate(version.version, gate)
    if promoted:
        version = registry.promote(version.version, reason)
    else:
        version = registry.refuse(version.version, reason)
    log.info("linker %s %s: %s", version.version, version.status, reason)
    return LinkerRound(
        version, promoted, reason, figures, baseline, baseline_version, len(kept), dropped, timings
    )
