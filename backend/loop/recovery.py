"""Rounds interrupted with their process (kill -9, power loss, an OOM kill): found at the
next start of the worker or the next round, and each logged once in rounds.jsonl.

A round dies in one of three places: before its child wrote result.json (logged as
interrupted; its progress.json says so), after the result but before the candidate was
registered (the checkpoint in models/.incoming is complete: gated now, as the round
would have been), or after registering it and before the gate ("candidate" in the
registry: gated now when its result is there and the model it was compared with still
serves, else refused as abandoned, kept for a rollback).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from backend.loop.child import write_json
from backend.loop.rounds import (
    RoundOutcome,
    append_round,
    conclude_round,
    judge,
    load_plan,
    outcome_of,
    read_json,
    read_rounds,
)
from labeling.project import Project
from labeling.state import ProjectState
from training.registry import ModelVersion, Registry


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def recover_interrupted(
    project: Project, state: ProjectState
) -> list[tuple[RoundOutcome, ModelVersion | None]]:
    """Rounds left behind by a process that died mid-round, each logged once (call it
    holding the training lock, so no round of any process is running):

    - a registered candidate never judged is gated now, or refused as abandoned when its
      result is gone or the model it was compared with no longer serves;
    - a round folder never logged is gated when its candidate checkpoint and result are
      complete, else logged as interrupted (its progress.json says so too).
    """
    registry = state.registry()
    logged = {r.get("round_id") for r in read_rounds(state)}
    rounds_dir = state.rounds_dir
    recovered: list[tuple[RoundOutcome, ModelVersion | None]] = []
    for version in registry.versions():
        if version.status == "candidate":
            outcome, promoted = _recover_candidate(project, registry, rounds_dir, version)
            logged.add(outcome.round_id)
            append_round(state, outcome)
            recovered.append((outcome, promoted))
    folders = sorted(p for p in rounds_dir.iterdir() if p.is_dir()) if rounds_dir.is_dir() else []
    for folder in folders:
        if folder.name in logged:
            continue
        plan = load_plan(folder)
        result = read_json(folder / "result.json")
        compared = (result.get("baseline") or {}).get("version")
        if plan is None:
            outcome = RoundOutcome(folder.name, "?", "interrupted", "an incomplete round folder")
        elif result and (plan.spec.out_dir / "config.json").is_file():
            if compared in (None, _champion(registry)):
                outcome, promoted = conclude_round(project, state, plan, 0, recovering=True)
                recovered.append((outcome, promoted))
                continue  # conclude_round logged it
            outcome = outcome_of(
                plan,
                "interrupted",
                f"interrupted before the gate; its candidate was compared with {compared}, "
                f"and {_champion(registry)} serves now: not gated",
            )
        else:
            phase = read_json(folder / "progress.json").get("phase", "starting")
            outcome = outcome_of(
                plan, "interrupted", f"interrupted during {phase}: the process running it stopped"
            )
            write_json(folder / "progress.json", {"phase": "interrupted", "progress": None})
        outcome.finished_at = utc_now()
        append_round(state, outcome)
        recovered.append((outcome, None))
    return recovered


def _recover_candidate(
    project: Project, registry: Registry, rounds_dir: Path, version: ModelVersion
) -> tuple[RoundOutcome, ModelVersion | None]:
    folder = rounds_dir / (version.round_id or "?")
    plan = load_plan(folder) if version.round_id else None
    result = read_json(folder / "result.json") if plan is not None else {}
    champion = _champion(registry)
    compared = (result.get("baseline") or {}).get("version")
    if plan is not None and result and compared in (None, champion):
        outcome = outcome_of(plan, "failed", "")
        judged = judge(project, registry, version, result, plan, outcome)
        outcome.reason = f"gated after a restart (the round was interrupted): {outcome.reason}"
        outcome.finished_at = utc_now()
        return outcome, judged if outcome.status == "promoted" else None
    why = "abandoned: its round was interrupted after it was registered, before the gate"
    why += (
        "; its result is gone"
        if not result
        else f"; it was compared with {compared}, and {champion} serves now"
    )
    registry.refuse(version.version, why)
    outcome = RoundOutcome(
        version.round_id or "?",
        version.trigger,
        "interrupted",
        why,
        version=version.version,
        heldout_f1=version.heldout_f1,
        finished_at=utc_now(),
    )
    return outcome, None


def _champion(registry: Registry) -> str:
    """The model a candidate is compared with now (as plan_round names it)."""
    serving = registry.serving()
    return serving.version if serving is not None else "base"
