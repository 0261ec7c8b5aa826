"""PNG plots of a loop-closure evaluation (matplotlib, Agg backend).

- ``loops_pr.png``: precision against recall as the MNN threshold tightens;
- ``loops_trajectory.png``: the drive from above, true loops in green, false loops in red.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selavpr_ros.eval.loops import KeyframeRecord
from selavpr_ros.eval.plots import DPI, _pyplot


def plot_pr(report: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4), dpi=DPI)
    curve = report["pr_curve"]
    if curve:
        ax.plot([p["recall"] for p in curve], [p["precision"] for p in curve], "o-",
                color="#1f77b4", markersize=3)
        ax.plot([curve[0]["recall"]], [curve[0]["precision"]], "s", color="#d62728",
                label="configured")
        ax.legend(loc="lower left")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("loop recall")
    ax.set_ylabel("precision")
    ax.set_title(f"loops: recall at 100 % precision {report['recall_at_100_precision']:.2f}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_trajectory(records: list[KeyframeRecord], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5), dpi=DPI)
    xs = [r.position[0] for r in records]
    ys = [r.position[1] for r in records]
    ax.plot(xs, ys, ".", color="#9a9a9a", markersize=3, label="keyframes")
    by_id = {r.id: r for r in records}
    for kind, colour in (("true", "#2ca02c"), ("false", "#d62728")):
        first = True
        for r in records:
            if not r.loop or r.then_id not in by_id or (kind == "true") != r.true_loop:
                continue
            t = by_id[r.then_id]
            ax.plot([r.position[0], t.position[0]], [r.position[1], t.position[1]], "-",
                    color=colour, linewidth=1.2, label=f"{kind} loop" if first else None)
            first = False
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.legend(loc="best", fontsize=8)
    ax.set_title("loop closures (top view)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
