"""One retraining round, from the annotation store to a registered, gated model version.

    plan_round      snapshot the data, freeze the held-out split, write the round folder
    launch / run    train and score (a niced child process, or in-process for the CLI)
    conclude_round  register the checkpoint, promote or refuse it, log the round

What a round trains and is judged on: backend.loop.heldout (the annotated posts and their
frozen held-out split). One round at a time per project, across processes and hosts:
backend.loop.lock.training_lock.

A round is skipped when its training data (documents sha256, labels) equals the serving
version's, or a refused candidate's trained from the same serving version: seeded, it
would only train that model again. A skipped round records the store's change counter it
looked at, so the auto trigger does not fire again for it.

Gate policy: backend.loop.gate (a paired bootstrap over the held-out posts, both models scored
in the same round). A round interrupted with its process (kill -9, power loss) is found
by `recover_interrupted` at the next start: recorded as interrupted, or, when its
candidate was complete, gated then.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from backend.loop.child import write_json
from backend.loop.gate import decide
from backend.loop.heldout import annotated_documents, frozen_share, split_heldout
from backend.loop.spec import SPEC_FILE, Baseline, RoundSpec, read_spec, write_spec
from labeling.project import Project
from labeling.state import ProjectState
from labeling.store import documents_sha256
from training.registry import ModelVersion, Registry
from training.saving import leftover_scratch
from training.text import Document

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
PLAN_FILE = "plan.json"


@dataclass
class RoundPlan:
    round_id: str
    folder: Path
    trigger: str
    spec: RoundSpec
    snapshot: dict
    parent: str | None  # the version warm-started from
    started_at: str
    train_documents: int
    heldout_documents: int


@dataclass
class RoundOutcome:
    round_id: str
    trigger: str
    status: str  # "promoted" | "refused" | "failed" | "skipped" | "cancelled" | "interrupted"
    reason: str
    version: str | None = None
    heldout_f1: float | None = None
    baseline_f1: float | None = None
    baseline_version: str | None = None
    train_documents: int = 0
    heldout_documents: int = 0
    started_at: str = ""
    finished_at: str = ""
    timings: dict = field(default_factory=dict)
    change_counter: int | None = None  # the store's, read when the round took its snapshot
    gate: dict | None = None  # backend.loop.gate.decide's details: interval, margin, decision

    def to_dict(self) -> dict:
        return asdict(self)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------------- one round


def plan_round(
    project: Project,
    state: ProjectState,
    trigger: str,
    num_threads: int = 1,
    documents: list[Document] | None = None,
) -> RoundPlan | RoundOutcome:
    """Write the round folder (spec, train.jsonl, heldout.jsonl); a skipped outcome when
    there is nothing to train on. `documents` replaces the annotated posts (the bootstrap's
    dictionary-labelled posts, backend.loop.cold_start); the held-out split applies to them."""
    from training.datasets import write_jsonl

    started = _now()
    round_id = datetime.now(UTC).strftime("r%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4]
    with state.store() as store:
        # read first: later changes count for the next round
        counter = store.annotations.change_counter()
        docs = annotated_documents(project, store.annotations) if documents is None else documents
    share = frozen_share(state, project.retrain.heldout_share)
    train_docs, heldout = split_heldout(docs, share)
    if not train_docs:
        return RoundOutcome(
            round_id,
            trigger,
            "skipped",
            f"nothing to train on: {len(docs)} annotated posts, {len(heldout)} of them held out",
            started_at=started,
            finished_at=_now(),
            heldout_documents=len(heldout),
            change_counter=counter,
        )

    registry = state.registry()
    serving = registry.serving()
    labels = project.label_values
    sha256 = documents_sha256(train_docs)
    repeated = repeat_of(registry, labels, sha256)
    if repeated is not None:
        return RoundOutcome(
            round_id,
            trigger,
            "skipped",
            f"same training data as {repeated} ({len(train_docs)} posts, sha256 "
            f"{sha256[:12]}): nothing new to learn",
            started_at=started,
            finished_at=_now(),
            train_documents=len(train_docs),
            heldout_documents=len(heldout),
            change_counter=counter,
        )
    base: str | None
    label_map: dict[str, str] | None
    parent: str | None
    project_base = project.tagger_spec()  # the project's base model, mapping and window
    if serving is not None and serving.labels == labels:
        base, label_map, parent = str(serving.path), None, serving.version
    else:
        base, label_map, parent = project_base.source, project_base.label_map, None
    if serving is not None:
        baseline = Baseline(serving.version, str(serving.path))
    else:  # the service serves the project base when it has a head for the labels
        baseline = Baseline("base", project_base.source, label_map)

    # leftovers of rounds killed with their service (this round holds the training lock)
    shutil.rmtree(registry.root / ".incoming", ignore_errors=True)
    folder = state.rounds_dir / round_id
    folder.mkdir(parents=True)
    write_jsonl(train_docs, folder / "train.jsonl")
    write_jsonl(heldout, folder / "heldout.jsonl")
    snapshot = {
        "annotation_ids": sorted(
            d.meta["annotation_id"] for d in train_docs if "annotation_id" in d.meta
        ),
        "gold_ids": sorted(str(d.id) for d in train_docs if d.meta.get("source") == "gold"),
        "sha256": sha256,
        "documents": len(train_docs),
        "heldout_documents": len(heldout),
        "heldout_sha256": documents_sha256(heldout),
        "heldout_share": share,
        "change_counter": counter,
    }
    weak = sum(d.meta.get("source") == "dictionary" for d in train_docs)
    if weak:
        snapshot["dictionary_documents"] = weak  # labelled by the taxonomy, not by people
    spec = RoundSpec(
        folder,
        base,
        labels,
        registry.root / ".incoming" / round_id,
        label_map=label_map,
        config=project.train_config(),
        window=project_base.window,
        baseline=baseline,
        num_threads=num_threads,
        parent_pid=os.getpid(),
    )
    write_spec(spec)
    plan = RoundPlan(
        round_id, folder, trigger, spec, snapshot, parent, started, len(train_docs), len(heldout)
    )
    write_json(folder / PLAN_FILE, _plan_fields(plan))  # what recovery needs after a kill
    return plan


def repeat_of(registry: Registry, labels: list[str], sha256: str) -> str | None:
    """Which version a round on these training documents would only re-train: the serving
    one, or a refused candidate trained from the same serving version on the same data
    (seeded training would make the same model, and the gate would refuse it again)."""
    serving = registry.serving()
    parent = serving.version if serving is not None and serving.labels == labels else None
    for version in reversed(registry.versions()):
        if version.labels != labels or version.snapshot.get("sha256") != sha256:
            continue
        if version.status == "serving":
            return f"the serving version {version.version}"
        if version.status == "refused" and version.parent == parent:
            return f"{version.version}, refused when trained from {parent or 'the base'}"
    return None


def _plan_fields(plan: RoundPlan) -> dict:
    return {k: v for k, v in asdict(plan).items() if k not in ("folder", "spec")}


def load_plan(folder: Path) -> RoundPlan | None:
    """A round folder's plan (None for a folder without spec.json and plan.json)."""
    try:
        spec = read_spec(folder / SPEC_FILE)
        fields = json.loads((folder / PLAN_FILE).read_text(encoding="utf-8"))
        return RoundPlan(folder=folder, spec=spec, **fields)
    except (OSError, ValueError, KeyError, TypeError):  # JSONDecodeError is a ValueError
        return None


def launch(plan: RoundPlan) -> subprocess.Popen:
    """Start the child process that trains and scores (output in the round's train.log)."""
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
    )
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    with open(plan.folder / "train.log", "ab") as logfile:
        return subprocess.Popen(
            [sys.executable, "-m", "backend.loop.child", str(plan.folder / SPEC_FILE)],
            cwd=REPO_ROOT,
            env=env,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def read_progress(plan: RoundPlan) -> dict:
    try:
        return json.loads((plan.folder / "progress.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {"phase": "starting", "progress": 0.0}


def conclude_round(
    project: Project,
    state: ProjectState,
    plan: RoundPlan,
    returncode: int,
    cancelled: bool = False,
    recovering: bool = False,
) -> tuple[RoundOutcome, ModelVersion | None]:
    """Register and gate the candidate (or record why there is none); logs the round."""
    registry = state.registry()
    incoming = plan.spec.out_dir
    outcome = outcome_of(plan, "failed", "")
    result_path = plan.folder / "result.json"
    version = None
    if cancelled:
        outcome.status, outcome.reason = "cancelled", "the service stopped during the round"
    elif returncode != 0 or not result_path.is_file():
        outcome.reason = f"training failed (exit code {returncode}): {_error(plan)}"
    else:
        result = json.loads(result_path.read_text())
        candidate, baseline = result.get("candidate") or {}, result.get("baseline") or {}
        version = registry.add(
            incoming,
            parent=plan.parent,
            metrics=candidate.get("metrics", {}),
            heldout_f1=candidate.get("f1"),
            baseline_f1=baseline.get("f1"),
            baseline_version=baseline.get("version"),
            snapshot=plan.snapshot,
            timings={**result.get("timings", {}), "train": result.get("train", {})},
            trigger=plan.trigger,
            labels=plan.spec.labels,
            base=plan.spec.base,
            round_id=plan.round_id,
        )
        # (a kill here leaves a registered candidate: recover_interrupted gates it)
        version = judge(project, registry, version, result, plan, outcome)
        if recovering:
            outcome.reason = f"gated after a restart (the round was interrupted): {outcome.reason}"
    shutil.rmtree(incoming, ignore_errors=True)
    for leftover in leftover_scratch(incoming):  # of a save killed half-way
        shutil.rmtree(leftover, ignore_errors=True)
    outcome.finished_at = _now()
    append_round(state, outcome)
    return outcome, version if outcome.status == "promoted" else None


def outcome_of(plan: RoundPlan, status: str, reason: str) -> RoundOutcome:
    return RoundOutcome(
        plan.round_id,
        plan.trigger,
        status,
        reason,
        started_at=plan.started_at,
        train_documents=plan.train_documents,
        heldout_documents=plan.heldout_documents,
        change_counter=plan.snapshot.get("change_counter"),
    )


def judge(
    project: Project,
    registry: Registry,
    version: ModelVersion,
    result: dict,
    plan: RoundPlan,
    outcome: RoundOutcome,
) -> ModelVersion:
    """Promote or refuse a registered candidate by the gate; fills `outcome` in."""
    decision = decide(result, project.retrain.tolerance, plan.heldout_documents)
    details = {**decision.details, "decision": "promoted" if decision.promote else "refused"}
    registry.set_gate(version.version, details)
    if decision.promote:
        version = registry.promote(version.version, decision.reason)
    else:
        version = registry.refuse(version.version, decision.reason)
    outcome.status = "promoted" if decision.promote else "refused"
    outcome.reason, outcome.gate = decision.reason, details
    outcome.version, outcome.heldout_f1 = version.version, version.heldout_f1
    outcome.baseline_f1 = version.baseline_f1
    outcome.baseline_version = (result.get("baseline") or {}).get("version")
    outcome.timings = result.get("timings", {})
    return version


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _error(plan: RoundPlan) -> str:
    try:
        return json.loads((plan.folder / "error.json").read_text())["error"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return f"no result; see {plan.folder / 'train.log'}"


def append_round(state: ProjectState, outcome: RoundOutcome) -> None:
    """Every round, failed ones included, one JSON line, fsynced."""
    path = state.rounds_log
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(outcome.to_dict(), ensure_ascii=False) + "\n")
        out.flush()
        os.fsync(out.fileno())


def read_rounds(state: ProjectState) -> list[dict]:
    path = state.rounds_log
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
