"""The rounds report's two plots (PNG, matplotlib Agg): the learning curve, drawn as each
round's paired gain, and per-label F1 over rounds (backend.loop.report writes them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class PairedGain:
    """A round's gain where it was measured fairly: the version's held-out F1 minus that of
    the model it had to beat, both scored on the same held-out posts in that round."""

    version: str
    status: str
    annotations: int | None  # annotated posts in the version's training snapshot
    added: int | None  # annotated posts it had beyond the model it had to beat
    gain: float
    low: float | None = None  # the gate's paired bootstrap interval, when it measured one
    high: float | None = None


CURVE_TITLE = "Learning curve: each round's gain, measured on the same held-out posts"
CURVE_Y = "F1 gain over the model it had to beat\n(strict entity, paired; bars: 80% interval)"
CURVE_X = "annotated posts in the training snapshot"


def plot_learning_curve(gains: Sequence[PairedGain], path: Path) -> Path:
    """Each compared round's paired gain (backend.loop.report.paired_gains) against its
    annotations, with the gate's bootstrap interval; never F1s of different rounds joined
    by a line, which would compare scores on different posts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    points = [(g.annotations, g) for g in gains if g.annotations is not None]
    ax.axhline(0, color="#999", lw=1, zorder=1)
    styles = {
        "serving": ("#2ca02c", "o"),
        "retired": ("#1f77b4", "o"),
        "refused": ("#d62728", "x"),
        "candidate": ("#7f7f7f", "s"),
    }
    for status, (colour, marker) in styles.items():
        chosen = [(x, g) for x, g in points if g.status == status]
        if chosen:
            ax.scatter(
                [x for x, _ in chosen],
                [g.gain for _, g in chosen],
                color=colour,
                marker=marker,
                label=status,
                zorder=3,
            )
    for x, g in points:
        if g.low is not None and g.high is not None:
            ax.vlines(x, g.low, g.high, color="#555", lw=1, zorder=2)
        ax.annotate(
            g.version,
            (x, g.gain),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=7,
        )
    ax.set_xlabel(CURVE_X)
    ax.set_ylabel(CURVE_Y)
    ax.set_title(CURVE_TITLE, fontsize=10)
    ax.margins(x=0.1)  # room for the last version's name
    ax.grid(alpha=0.3)
    if points:
        ax.legend(loc="best", fontsize=8)
    return _save(fig, path)


def plot_label_f1(versions: list[str], f1: dict[str, list[float | None]], path: Path) -> Path:
    """Each label's held-out F1 (`f1`: label -> one value per version) over the versions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for label, ys in f1.items():
        ax.plot(versions, [float("nan") if y is None else y for y in ys], marker="o", label=label)
    ax.set_xlabel("round (model version)")
    ax.set_ylabel("held-out F1 (strict entity)")
    ax.set_title("Per-label F1, each on its round's held-out posts", fontsize=10)
    ax.grid(alpha=0.3)
    if f1:
        ax.legend(fontsize=8)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
