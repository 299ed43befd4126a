"""`skillloop status`: what annotators did, what the serving model scores, how rounds went,
and whether one is training now.

Read-only: it never takes the training lock or writes to the state folder, so asking for
status cannot disturb a round. A round in progress is seen from its round folder (no
outcome logged yet, the process that started it alive) and its progress.json; a running
service's own view (`GET /status`, with its queue) is used when a URL is given.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from backend.loop.gate import summary as gate_summary
from backend.loop.report import round_rows, stopping_hint
from backend.loop.rounds import read_rounds
from backend.loop.spec import SPEC_FILE, read_spec
from labeling.state import ProjectState
from labeling.studio.users import annotator_name


def changes_since_last_round(state: ProjectState, versions: list) -> int | None:
    """Annotations added, edited or deleted since the latest version's data snapshot."""
    counter = (versions[-1].snapshot or {}).get("change_counter") if versions else 0
    if counter is None or not state.has_store():
        return None
    with state.store() as store:
        return store.annotations.changes_since(int(counter))


def round_outcomes(state: ProjectState) -> Counter:
    """Every round the service or the CLI ran, by outcome (promoted, refused, failed...)."""
    return Counter(r.get("status", "unknown") for r in read_rounds(state))


def local_training(state: ProjectState) -> dict:
    """The round in progress, from the newest round folder (read-only)."""
    folder = state.rounds_dir
    rounds = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    idle = {"running": False, "progress": None, "queued": None, "_source": "state folder"}
    if not rounds or rounds[-1].name in {r.get("round_id") for r in read_rounds(state)}:
        return idle
    latest = rounds[-1]
    try:
        parent_pid = read_spec(latest / SPEC_FILE).parent_pid
    except (OSError, ValueError, KeyError, TypeError):
        parent_pid = None  # not written yet
    if not _alive(parent_pid):
        return idle  # left over from a process that died mid-round
    progress = _json(latest / "progress.json")
    return {
        **idle,
        "running": True,
        "round": latest.name,
        "phase": progress.get("phase"),
        "progress": progress.get("progress", 0.0),
    }


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}  # not written yet, or being rewritten
    return data if isinstance(data, dict) else {}


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def studio_emails(records: list) -> dict[int, str]:
    """Label Studio's e-mails for the annotators stored by user id (its webhooks send no
    more), when LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY say where to ask; {} otherwise.
    An unreachable Label Studio is a warning: the ids are still shown."""
    if not any(str(r.annotator or "").isdigit() for r in records):
        return {}
    if not (os.environ.get("LABEL_STUDIO_URL") and os.environ.get("LABEL_STUDIO_API_KEY")):
        return {}
    from labeling.studio.client import StudioClient
    from labeling.studio.users import user_emails

    try:
        return user_emails(StudioClient.from_env())
    except Exception as err:  # any failure to ask leaves the ids shown
        first_line = (str(err).splitlines() or [type(err).__name__])[0]
        print(f"skillloop: warning: annotators' e-mails not read: {first_line}", file=sys.stderr)
        return {}


def status_figures(
    project,
    records: list,
    versions: list,
    training: dict,
    changes: int | None = None,
    outcomes: Counter | None = None,
    emails: Mapping[int, str] | None = None,
) -> dict:
    """`emails`: Label Studio's `{user id: e-mail}` (labeling.studio.users), for the
    annotators stored by id."""
    live = [r for r in records if not r.cancelled and not r.deleted]
    by_annotator = Counter(annotator_name(r.annotator, emails or {}) for r in live)
    if changes is None:  # no change counter in the snapshot: compare annotation ids
        trained_on = (
            set((versions[-1].snapshot or {}).get("annotation_ids") or []) if versions else set()
        )
        changes = sum(r.annotation_id not in trained_on for r in live)
    serving = next((v for v in versions if v.status == "serving"), None)
    outcomes = outcomes or Counter()
    return {
        "project": project.name,
        "annotations": {
            "total": len(live),
            "posts": len({r.task_id for r in live}),
            "new_since_last_round": changes,
            "skipped": sum(r.cancelled and not r.deleted for r in records),
            "deleted": sum(r.deleted for r in records),
            "by_annotator": dict(by_annotator.most_common()),
        },
        "serving": None
        if serving is None
        else {
            "version": serving.version,
            "heldout_f1": serving.heldout_f1,
            "per_label_f1": round_rows([serving], project.label_values)[0]["per_label_f1"],
            "created_at": serving.created_at,
        },
        "rounds": {
            # a skipped round (nothing to train on) trained nothing: not a round run
            "run": max(sum(outcomes.values()) - outcomes.get("skipped", 0), len(versions)),
            "promoted": sum(v.status in ("serving", "retired") for v in versions),
            "refused": sum(v.status == "refused" for v in versions),
            "failed": outcomes.get("failed", 0),
            "skipped": outcomes.get("skipped", 0),
            "interrupted": outcomes.get("interrupted", 0),
            "last": None if not versions else versions[-1].version,
        },
        "gate": None if not versions else last_gate(versions[-1]),
        "training": {
            "running": bool(training.get("running")),
            "phase": training.get("phase"),
            "progress": training.get("progress"),
            "queued": None if training.get("queued") is None else int(bool(training["queued"])),
            "source": training.get("_source", "none"),
        },
        "stopping_hint": stopping_hint(versions).message if versions else None,
    }


def last_gate(version) -> dict:
    """How the gate judged the latest version: its decision and the measured interval."""
    return {
        "version": version.version,
        "status": version.status,
        "summary": gate_summary(version.gate),
        "reason": version.reason,
        **(version.gate or {}),
    }


def format_status(figures: dict, state: ProjectState) -> str:
    a, s, r, t = (figures[k] for k in ("annotations", "serving", "rounds", "training"))
    # the store is named only where it is not the state folder's own SQLite file
    store, where = figures.get("store"), str(state.store_path.absolute())
    lines = [
        f"project {figures['project']} (state: {state.root.absolute()}"
        + (f"; annotations: {store})" if store and store != where else ")"),
        f"annotations: {a['total']} on {a['posts']} posts, {a['new_since_last_round']} "
        f"new or changed since the last round; {a['skipped']} skipped, "
        f"{a['deleted']} deleted",
    ]
    lines += [f"  {who}: {n}" for who, n in a["by_annotator"].items()]
    if any(who.startswith("Label Studio user ") for who in a["by_annotator"]):
        lines.append(
            "  (Label Studio user ids: their e-mails show when LABEL_STUDIO_URL and "
            "LABEL_STUDIO_API_KEY reach the Label Studio they annotated in)"
        )
    if s is None:
        lines.append("serving: no trained version yet")
    else:
        labels = ", ".join(f"{k} {_f(v)}" for k, v in s["per_label_f1"].items())
        lines.append(f"serving: {s['version']} held-out F1 {_f(s['heldout_f1'])} ({labels})")
    lines.append(
        f"rounds: {r['run']} run, {r['promoted']} promoted, {r['refused']} refused, "
        f"{r['failed']} failed, {r['interrupted']} interrupted; {r['skipped']} skipped"
        + (f" (latest version {r['last']})" if r["last"] else "")
    )
    gate = figures.get("gate")
    if gate is not None:
        lines.append(
            f"last gate: {gate['version']} {gate['status']}, gain [80% interval] "
            f"{gate['summary']}: {gate['reason']}"
        )
    progress = "" if t["progress"] is None else f" {100 * float(t['progress']):.0f}%"
    phase = f" ({t['phase']})" if t.get("phase") else ""
    state_text = f"running{progress}{phase}" if t["running"] else "idle"
    queue = "unknown (ask the service: --url)" if t["queued"] is None else str(t["queued"])
    lines.append(f"training: {state_text}, queue {queue} (from {t['source']})")
    if figures.get("linking"):
        from training.embedding_progress import describe

        lines.append(f"linking: {describe(figures['linking'])}")
    if figures["stopping_hint"]:
        lines.append(f"hint: {figures['stopping_hint']}")
    return "\n".join(lines)


def _f(x) -> str:
    return "-" if x is None else f"{float(x):.3f}"
