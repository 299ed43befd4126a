"""Learning-curve summaries and plots for the simulator's results (`labeling.active.simulate`).

Area under the learning curve (AULC) is normalised by the width of the x range, so it
reads as the mean F1 over that range. Strategies buy different numbers of tokens with the
same number of units, so each strategy's token AULC is compared with random's over the
token range both of them (every seed) cover.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

GRID = 200
TARGET = 0.95


def _token_curves(runs: list[dict], lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Each seed's F1 interpolated on a common token grid over [lo, hi]: (grid, (seeds, grid))."""
    grid = np.linspace(lo, hi, GRID)
    return grid, np.stack([np.interp(grid, r["tokens"], r["f1"]) for r in runs])


def _token_range(runs: list[dict]) -> tuple[float, float]:
    """The tokens every run covers: from the largest first point to the smallest last."""
    return max(r["tokens"][0] for r in runs), min(r["tokens"][-1] for r in runs)


def _item_curves(runs: list[dict], upto: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
    """Items (the same for every seed) and each seed's F1, up to `upto` items."""
    n = min(len(r["items"]) for r in runs)
    n = min(n, sum(1 for x in runs[0]["items"][:n] if x <= upto))
    return np.asarray(runs[0]["items"][:n], float), np.stack([r["f1"][:n] for r in runs])


def _area(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or x[-1] == x[0]:
        return float(y.mean())
    return float(np.trapezoid(y, x) / (x[-1] - x[0]))


def _first_reach(x: np.ndarray, y: np.ndarray, level: float) -> float | None:
    """The x where the curve first reaches `level`, linearly interpolated; None if never."""
    above = np.flatnonzero(y >= level)
    if above.size == 0:
        return None
    i = int(above[0])
    if i == 0:
        return float(x[0])
    x0, x1, y0, y1 = x[i - 1], x[i], y[i - 1], y[i]
    return float(x0 + (level - y0) * (x1 - x0) / (y1 - y0))


def summarize(result: dict) -> dict:
    """Per strategy: AULC by items and by tokens (and their gain over random, in F1 points),
    items and tokens needed to reach 95% of full-data F1, as counts and pool shares."""
    curves = result["curves"]
    full = float(np.mean(result["full_f1"])) if result["full_f1"] else None
    level = TARGET * full if full is not None else np.inf
    pool_items, pool_tokens = result["data"]["pool_items"], result["data"]["pool_tokens"]
    # random may run further than the rest (random_extra): unit areas use the common range
    items_hi = min(r["items"][-1] for runs in curves.values() for r in runs)
    items_lo = max(r["items"][0] for runs in curves.values() for r in runs)
    out: dict = {
        "full_f1": full,
        "target_f1": None if full is None else level,
        "item_range": [items_lo, items_hi],
        "strategies": {},
    }
    base = curves.get("random")
    for name, runs in curves.items():
        items_x, items_y = _item_curves(runs, items_hi)
        all_x, all_y = _item_curves(runs)
        own_lo, own_hi = _token_range(runs)
        own_grid, own_y = _token_curves(runs, own_lo, own_hi)
        items_95 = _first_reach(all_x, all_y.mean(axis=0), level)
        tokens_95 = _first_reach(own_grid, own_y.mean(axis=0), level)
        stats = {
            "aulc_items": _area(items_x, items_y.mean(axis=0)),
            "aulc_items_seeds": [_area(items_x, y) for y in items_y],
            "final_f1": float(items_y[:, -1].mean()),  # at the end of the common unit range
            "items_to_95": items_95,
            "tokens_to_95": tokens_95,
            "share_items_to_95": None if items_95 is None else items_95 / pool_items,
            "share_tokens_to_95": None if tokens_95 is None else tokens_95 / pool_tokens,
            "first_batch_mean_tokens": float(
                np.mean(
                    [r["batch_mean_tokens"][0] for r in runs if r["batch_mean_tokens"]] or [0.0]
                )
            ),
        }
        if base is not None:
            # token areas pairwise with random, over the tokens both cover (every seed)
            lo, hi = _token_range([*runs, *base])
            grid, tokens_y = _token_curves(runs, lo, hi)
            _, random_y = _token_curves(base, lo, hi)
            stats["token_range"] = [lo, hi]
            stats["aulc_tokens"] = _area(grid, tokens_y.mean(axis=0))
            stats["aulc_tokens_seeds"] = [_area(grid, y) for y in tokens_y]
            stats["random_aulc_tokens"] = _area(grid, random_y.mean(axis=0))
        out["strategies"][name] = stats
    base_stats = out["strategies"].get("random")
    for stats in out["strategies"].values():
        if base_stats is None:
            break
        stats["gain_items_points"] = 100 * (stats["aulc_items"] - base_stats["aulc_items"])
        stats["gain_tokens_points"] = 100 * (stats["aulc_tokens"] - stats["random_aulc_tokens"])
        ours, theirs = stats["tokens_to_95"], base_stats["tokens_to_95"]
        stats["tokens_to_95_vs_random"] = None if None in (ours, theirs) else ours / theirs
    out["mean_pool_tokens_per_item"] = pool_tokens / pool_items
    return out


def tokens_to_reach(result: dict, levels: list[float]) -> dict[str, list[float | None]]:
    """Per strategy, the words its mean curve needs to first reach each F1 level."""
    out = {}
    for name, runs in result["curves"].items():
        grid, y = _token_curves(runs, *_token_range(runs))
        out[name] = [_first_reach(grid, y.mean(axis=0), level) for level in levels]
    return out


def _span(bounds) -> str:
    return "n/a" if not bounds else f"{bounds[0]:,.0f}-{bounds[1]:,.0f}"


def table(summary: dict) -> str:
    """A Markdown table of `summarize`'s figures."""

    def share(v):
        return "not reached" if v is None else f"{100 * v:.1f}%"

    def ratio(v):
        return "n/a" if v is None else f"{v:.2f}"

    rows = [
        "| strategy | AULC items | gain | AULC tokens (random's) | gain | token range "
        "| final F1 | items to 95% | tokens to 95% | tokens vs random | 1st batch tokens/item |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in summary["strategies"].items():
        rows.append(
            f"| {name} | {s['aulc_items']:.4f} | {s.get('gain_items_points', 0):+.2f} "
            f"| {s.get('aulc_tokens', 0):.4f} ({s.get('random_aulc_tokens', 0):.4f}) "
            f"| {s.get('gain_tokens_points', 0):+.2f} "
            f"| {_span(s.get('token_range'))} "
            f"| {s['final_f1']:.4f} | {share(s['share_items_to_95'])} "
            f"| {share(s['share_tokens_to_95'])} | {ratio(s.get('tokens_to_95_vs_random'))} "
            f"| {s['first_batch_mean_tokens']:.1f} |"
        )
    return "\n".join(rows)


def plot(result: dict, summary: dict, path: str | Path) -> Path:
    """Two panels (F1 against labelled items, against labelled tokens): each strategy's
    mean over seeds with its min-max band, and the 95%-of-full-data line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_items, by_tokens) = plt.subplots(1, 2, figsize=(12, 4.5))
    unit = result["config"]["unit"]
    for name, runs in result["curves"].items():
        style = {"color": "black", "linestyle": "--"} if name == "random" else {}
        x, y = _item_curves(runs)
        (line,) = by_items.plot(x, y.mean(axis=0), label=name, **style)
        by_items.fill_between(x, y.min(axis=0), y.max(axis=0), alpha=0.15, color=line.get_color())
        grid, ty = _token_curves(runs, *_token_range(runs))
        by_tokens.plot(
            grid,
            ty.mean(axis=0),
            label=name,
            color=line.get_color(),
            linestyle=style.get("linestyle", "-"),
        )
        by_tokens.fill_between(
            grid, ty.min(axis=0), ty.max(axis=0), alpha=0.15, color=line.get_color()
        )
    for ax, xlabel in ((by_items, f"labelled {unit}s"), (by_tokens, "labelled tokens (words)")):
        if summary["target_f1"] is not None:
            ax.axhline(summary["target_f1"], color="grey", linewidth=0.8, linestyle=":")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("held-out entity F1 (strict)")
        ax.grid(alpha=0.3)
    by_items.legend(fontsize=8)
    mode = result["config"]["mode"]
    seeds = len(next(iter(result["curves"].values())))
    title = f"Active learning, {mode} mode, {seeds} seeds"
    if summary["full_f1"] is not None:
        title += f" (dotted: 95% of full-data F1 {summary['full_f1']:.3f})"
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(result: dict, out: Path) -> dict:
    """curves.json (curves + summary), curves.png and summary.md in `out`; prints the table."""
    summary = summarize(result)
    out.mkdir(parents=True, exist_ok=True)
    (out / "curves.json").write_text(json.dumps({**result, "summary": summary}, indent=1))
    plot(result, summary, out / "curves.png")
    text = table(summary)
    (out / "summary.md").write_text(text + "\n")
    print(text)
    full = "n/a" if summary["full_f1"] is None else f"{summary['full_f1']:.4f}"
    print(f"full-data F1 {full}; wrote {out / 'curves.json'} and {out / 'curves.png'}")
    return summary
