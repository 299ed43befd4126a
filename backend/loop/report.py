"""The rounds report: the learning curve (each round's F1 gain over the model it had to
beat, on the same held-out posts), per-label F1 over rounds, every round's outcome, and a
stopping hint. HTML (plots embedded, one file to share) or Markdown (plots as PNG files
beside it).

Each round's held-out F1 is measured on the project's frozen held-out posts annotated by
then; the held-out set grows with the data, so F1s of different rounds are scores on
different posts and are never subtracted. The paired figure (`baseline_f1`: the model it
had to beat, on the same set at that time) is what the curve draws and the stopping hint
adds up, and the gate's paired bootstrap interval (backend.loop.gate) says whether a gain is
more than noise.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from backend.loop.gate import summary as gate_summary
from backend.loop.report_plots import PairedGain, plot_label_f1, plot_learning_curve

if TYPE_CHECKING:
    from labeling.curation.export_profiles import SkillSummary

FORMATS = ("html", "md")
WINDOW = 3  # rounds the stopping hint looks back over
MIN_GAIN = 0.005  # F1 per 100 annotations below which the curve counts as flat
CURVE_NOTE = (
    "Each round's F1 gain over the model it had to beat, both scored on that round's "
    "held-out posts (the held-out set grows, so F1s of different rounds are not compared)."
)
GAIN_NOTE = (
    "gain [80% interval]: a version's held-out F1 minus that of the model it had to beat, "
    "on the same posts, with the 10th and 90th percentiles of a paired bootstrap over posts "
    "(1,000 resamples). A version is promoted when the 10th percentile is at least minus "
    "the project's tolerance; 'not measured' when there were too few held-out posts."
)


def annotations_of(version) -> int | None:
    """How many annotated posts a version was trained on (its data snapshot)."""
    snapshot = version.snapshot or {}
    if snapshot.get("documents") is not None:
        return int(snapshot["documents"])
    if snapshot.get("annotation_ids") is not None:
        return len(snapshot["annotation_ids"])
    return None


def label_f1(version, label: str) -> float | None:
    """A label's strict entity F1 in a version's held-out report (EvalReport.to_dict())."""
    block = (version.metrics or {}).get("entity_strict") or {}
    score = block.get(label)
    return None if not isinstance(score, dict) else score.get("f1")


def version_labels(versions) -> list[str]:
    labels: dict[str, None] = {}
    for v in versions:
        for label in v.labels or (v.metrics or {}).get("labels") or []:
            labels[label] = None
    return list(labels)


def paired_gains(versions) -> list[PairedGain]:
    """Every version that was compared with a model on the same held-out posts, in order.
    F1 of different versions is never subtracted across rounds: the held-out set grows
    with the data, so two rounds' F1s are scores on different posts."""
    by_name = {v.version: v for v in versions}
    gains = []
    for v in versions:
        if v.heldout_f1 is None or v.baseline_f1 is None:
            continue  # the first model: nothing to compare with
        n = annotations_of(v)
        rival = v.baseline_version or v.parent or "base"
        before = (
            0 if rival == "base" else annotations_of(by_name[rival]) if rival in by_name else None
        )
        gate = v.gate or {}
        measured = gate.get("measured")
        gains.append(
            PairedGain(
                v.version,
                v.status,
                n,
                None if n is None or before is None else n - before,
                v.heldout_f1 - v.baseline_f1,
                gate.get("low") if measured else None,
                gate.get("high") if measured else None,
            )
        )
    return gains


@dataclass
class StoppingHint:
    rounds: int  # paired rounds looked at
    gain_per_100: float | None  # their paired F1 gain per 100 annotations they added
    flattened: bool
    last_round_gain: float | None  # latest round's F1 minus its baseline on the same set
    message: str
    last_step_per_100: float | None = None  # the latest round alone, per 100 annotations

    def to_dict(self) -> dict:
        return {
            "rounds": self.rounds,
            "gain_per_100": _r(self.gain_per_100),
            "last_step_per_100": _r(self.last_step_per_100),
            "flattened": self.flattened,
            "last_round_gain": _r(self.last_round_gain),
            "message": self.message,
        }


def stopping_hint(versions, window: int = WINDOW, min_gain: float = MIN_GAIN) -> StoppingHint:
    """Paired F1 gain per 100 annotations over the last `window` compared rounds (their
    gains over the models they had to beat, summed, over the annotations each added), and
    whether the curve has flattened: that gain below `min_gain`. A single weak round is
    reported but is not yet a plateau."""
    gains = paired_gains(versions)
    last = versions[-1] if versions else None
    paired = None
    if last is not None and last.heldout_f1 is not None and last.baseline_f1 is not None:
        paired = last.heldout_f1 - last.baseline_f1
    steps = [g for g in gains if g.added]
    if not steps:
        return StoppingHint(
            0, None, False, paired, "no round compared on the same posts yet: run more rounds"
        )
    recent = steps[-window:]
    gain = sum(g.gain for g in recent) / sum(g.added or 0 for g in recent) * 100
    step = steps[-1].gain / (steps[-1].added or 1) * 100
    flattened = len(recent) >= window and gain < min_gain
    trend = (
        f"{gain:+.4f} F1 per 100 annotations over the last {len(recent)} rounds "
        f"({', '.join(g.version for g in recent)}; each round against the model it had to "
        "beat, on the same held-out posts)"
    )
    if flattened:
        advice = (
            "the curve has flattened: more of the same annotations buy little; "
            "stop, or change what is labelled (strategy, guidelines, weak labels)"
        )
    elif len(recent) > 1 and step < min_gain:
        advice = (
            f"but the latest round gained {step:+.4f} per 100: one weak round is not "
            "yet a plateau; judge after the next one"
        )
    elif len(recent) < window:
        advice = f"fewer than {window} compared rounds to judge a plateau"
    else:
        advice = "still rising: another round is likely worth it"
    return StoppingHint(len(recent), gain, flattened, paired, f"{trend}: {advice}", step)


def round_rows(versions, labels: list[str]) -> list[dict]:
    """One row per version: lineage, data, held-out scores, outcome."""
    rows = []
    for v in versions:
        snapshot = v.snapshot or {}
        rows.append(
            {
                "version": v.version,
                "parent": v.parent or "base",
                "created_at": v.created_at,
                "trigger": v.trigger or "",
                "annotations": annotations_of(v),
                "snapshot": (snapshot.get("sha256") or "")[:12],
                "heldout_f1": _r(v.heldout_f1),
                "baseline_f1": _r(v.baseline_f1),
                # F1(version) - F1(the model it had to beat) [80% bootstrap interval]
                "gate": gate_summary(v.gate),
                "per_label_f1": {label: _r(label_f1(v, label)) for label in labels},
                "status": v.status,
                "reason": v.reason,
            }
        )
    return rows


# ---------------------------------------------------------------- the report


def write_report(
    project: str,
    versions,
    out: str | Path,
    fmt: str = "html",
    labels: list[str] | None = None,
    summary: dict | None = None,
    skills: SkillSummary | None = None,
) -> Path:
    """Write the report to `out` (a file path; PNGs go beside it) and return its path.
    `skills`: the most frequent linked skills of the annotated posts (backend.profiles)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r}: choose html or md")
    if not versions:
        raise ValueError(f"project {project!r} has no recorded rounds yet: nothing to report")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    labels = labels or version_labels(versions)
    curve = plot_learning_curve(
        paired_gains(versions), out.with_name(f"{out.stem}-learning-curve.png")
    )
    per_label = plot_label_f1(
        [v.version for v in versions],
        {label: [label_f1(v, label) for v in versions] for label in labels},
        out.with_name(f"{out.stem}-label-f1.png"),
    )
    hint = stopping_hint(versions)
    rows = round_rows(versions, labels)
    facts = {
        "project": project,
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        **(summary or {}),
    }
    header = [
        "version",
        "parent",
        "trigger",
        "annotations",
        "snapshot",
        "held-out F1",
        "baseline F1",
        "gain [80% interval]",
        *labels,
        "status",
        "reason",
    ]
    table = [
        [
            r["version"],
            r["parent"],
            r["trigger"],
            r["annotations"],
            r["snapshot"],
            r["heldout_f1"],
            r["baseline_f1"],
            r["gate"],
            *r["per_label_f1"].values(),
            r["status"],
            r["reason"],
        ]
        for r in rows
    ]
    text = (_html if fmt == "html" else _markdown)(facts, hint, curve, per_label, header, table)
    if skills is not None:
        text = _with_skills(text, skills, fmt)
    out.write_text(text, encoding="utf-8")
    return out


SKILLS_TITLE = "Most frequent linked skills"


def _with_skills(text: str, skills: SkillSummary, fmt: str) -> str:
    """The report with its linked-skills section appended (before </body> in HTML)."""
    header = ["entry", "label", "spans", "posts"]
    note = f"Spans of the annotated posts linked to the taxonomy: {skills.line()}"
    attribution = f"Taxonomy: {skills.attribution}." if skills.attribution else ""
    if fmt == "md":
        lines = ["", f"## {SKILLS_TITLE}", "", note]
        lines += ["", attribution] if attribution else []
        lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += [f"| {i} | {label} | {n} | {p} |" for i, label, n, p in skills.top]
        return text + "\n".join(lines) + "\n"
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(i)}</td><td>{e(label)}</td><td>{n}</td><td>{p}</td></tr>"
        for i, label, n, p in skills.top
    )
    head = "".join(f"<th>{h}</th>" for h in header)
    section = (
        f"<h2>{SKILLS_TITLE}</h2><p>{e(note)}</p>"
        + (f"<p>{e(attribution)}</p>" if attribution else "")
        + f"<table><tr>{head}</tr>{rows}</table>\n"
    )
    return text.replace("</body>", section + "</body>")


def _cell(value) -> str:
    return "-" if value is None or value == "" else str(value)


def _markdown(facts, hint, curve, per_label, header, table) -> str:
    lines = [f"# Rounds report: {facts['project']}", ""]
    lines += [f"- {key}: {_cell(value)}" for key, value in facts.items() if key != "project"]
    lines += ["", "## Stopping hint", "", hint.message]
    lines += ["", GAIN_NOTE]
    if hint.last_round_gain is not None:
        lines += [
            "",
            f"Latest round vs the model it was compared with, same held-out set: "
            f"{hint.last_round_gain:+.4f} F1.",
        ]
    lines += ["", "## Learning curve", "", CURVE_NOTE, "", f"![learning curve]({curve.name})", ""]
    lines += ["## Per-label F1 over rounds", "", f"![per-label F1]({per_label.name})", ""]
    lines += ["## Rounds", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c).replace("|", "/") for c in row) + " |" for row in table]
    return "\n".join(lines) + "\n"


def _html(facts, hint, curve, per_label, header, table) -> str:
    e = html.escape

    def image(path: Path, alt: str) -> str:
        data = base64.b64encode(path.read_bytes()).decode()
        return f'<img alt="{e(alt)}" src="data:image/png;base64,{data}">'

    items = "".join(f"<li>{e(k)}: {e(_cell(v))}</li>" for k, v in facts.items() if k != "project")
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{e(_cell(c))}</td>" for c in row) + "</tr>" for row in table
    )
    paired = ""
    if hint.last_round_gain is not None:
        paired = (
            f"<p>Latest round vs the model it was compared with, same held-out set: "
            f"{hint.last_round_gain:+.4f} F1.</p>"
        )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Rounds report: {e(facts["project"])}</title>
<style>body{{font-family:sans-serif;max-width:960px;margin:2em auto}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 6px}}
</style></head><body>
<h1>Rounds report: {e(facts["project"])}</h1><ul>{items}</ul>
<h2>Stopping hint</h2><p>{e(hint.message)}</p>{paired}<p>{e(GAIN_NOTE)}</p>
<h2>Learning curve</h2><p>{e(CURVE_NOTE)}</p>{image(curve, "learning curve")}
<h2>Per-label F1 over rounds</h2>{image(per_label, "per-label F1")}
<h2>Rounds</h2><table><tr>{head}</tr>{body}</table>
</body></html>
"""


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)
