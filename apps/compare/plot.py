"""plot.png: each system's win rate against the candidate, with its interval, against its cost.

The candidate sits at 50% (a tie with itself). A baseline above the line beats it; one to its
left is cheaper. Up and to the left of the candidate means the mixture does not pay. The x axis is
cost per answer in USD, or tokens per answer when a cost is unknown or every model is free.

Drawn with matplotlib's object API on the Agg canvas: no display, no pyplot global state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langgraph_moa.core.batch.outputs import atomic_writer

WIDTH_IN, HEIGHT_IN, DPI = 8.0, 5.0, 100  # an 800 x 500 PNG


def axis(results: dict[str, Any]) -> tuple[str, str]:
    """The x axis: (field of a system summary, label)."""
    costs = [s["cost_per_answer"] for s in results["systems"] if s["answers"]]
    if costs and all(c is not None for c in costs) and any(costs):
        return "cost_per_answer", "cost per answer (USD)"
    return "tokens_per_answer", "tokens per answer (all calls)"


def draw(results: dict[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cand = results["candidate"]
    field, label = axis(results)
    systems = {s["name"]: s for s in results["systems"]}
    fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.axhline(50, color="0.6", linestyle="--", linewidth=1)
    xs: list[float] = []
    first_raw = first_lc = True
    for p in results["pairs"]:
        base = systems[p["baseline"]]
        x = base[field]
        if x is None:
            continue
        xs.append(x)
        if p["win_rate"] is None:  # nothing judged: shown on the line, marked as such
            ax.annotate(f"{p['baseline']} (not judged)", (x, 50), fontsize=8, color="0.4")
            continue
        # The baseline's rate against the candidate: 100 minus the candidate's against it.
        y = 100 - p["win_rate"]
        # No interval when every judged pair was alike (stats.py): a bare point.
        low, high = (100 - p["ci"][1], 100 - p["ci"][0]) if p["ci"] is not None else (y, y)
        ax.errorbar(
            [x],
            [y],
            yerr=[[y - low], [high - y]],
            fmt="o",
            color="tab:blue",
            capsize=4,
            label="win rate, 95% CI" if first_raw else None,
        )
        ax.plot(
            [x],
            [100 - p["lc_win_rate"]],
            marker="D",
            markerfacecolor="none",
            color="tab:orange",
            linestyle="none",
            label="length-controlled" if first_lc else None,
        )
        first_raw = first_lc = False
        # Alternate the labels' sides: systems of about the same cost and rate stay readable.
        dy = 6 if len(xs) % 2 else -14
        ax.annotate(p["baseline"], (x, y), xytext=(6, dy), textcoords="offset points", fontsize=9)
    mine = systems[cand][field]
    if mine is not None:
        xs.append(mine)
        ax.plot(
            [mine],
            [50],
            marker="*",
            markersize=14,
            color="tab:red",
            linestyle="none",
            label=f"{cand} (the reference: 50%)",
        )
        ax.annotate(cand, (mine, 50), xytext=(6, -14), textcoords="offset points", fontsize=9)
    positive = [x for x in xs if x > 0]
    if positive and min(positive) * 20 < max(positive) and len(positive) == len(xs):
        ax.set_xscale("log")
    elif xs:
        ax.set_xlim(0, max(xs) * 1.25 or 1)
    ax.set_ylim(0, 100)
    ax.set_xlabel(label)
    ax.set_ylabel(f"win rate against {cand} (%)")
    ax.set_title(f"Quality against cost: each system judged against {cand}", fontsize=11)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8)
    with atomic_writer(path) as f:
        fig.savefig(f, format="png", dpi=DPI)
