"""PNG plots of an evaluation report, drawn with matplotlib's Agg backend (no display needed).

Each plot answers one question a person asks of a place recognizer:
- ``precision_recall.png``: which threshold can I trust, and what recall does it leave me?
- ``recall_at_n.png``: does the right place appear among the first N, and does re-ranking help?
- ``latency.png``: how long does a frame take, and which stage costs most?
- ``trajectory.png``: where along the route does it work, fail, or refuse to answer?
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

DPI = 100
COLORS = {"correct": "#2ca02c", "wrong": "#d62728", "rejected": "#9a9a9a",
          "no_ground_truth": "#1f77b4", "unanswered": "#f0b400"}
SCORE_COLORS = {"confidence": "#1f77b4", "mnn_score": "#ff7f0e", "score_fraction": "#9467bd",
                "global_similarity": "#8c564b"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _title(report: dict[str, Any]) -> str:
    p = report["protocol"]
    q = p["queries"]
    src = Path(str(q.get("bag") or q.get("images") or "queries")).name
    pos = p["positives"]
    rule = (f"±{pos['frames']} frames" if pos["by"] == "frame_tolerance"
            else f"{pos['radius_m']:g} m")
    return f"{Path(p['map']['path']).name} vs {src} ({p['extractor']['name']}, positives {rule})"


def plot_precision_recall(report: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 7.5), dpi=DPI)
    headline = report["protocol"]["pr_score"]
    for name, pr in report["precision_recall"].items():
        curve = pr["curve"]
        rec = [0.0] + [r or 0.0 for r in curve["recall"]]
        prec = [1.0] + [p or 0.0 for p in curve["precision"]]
        auc = pr["auc"]
        label = f"{name} (AUC {auc:.3f})" if auc is not None else name
        ax.step(rec, prec, where="post", color=SCORE_COLORS.get(name),
                lw=2.5 if name == headline else 1.3, label=label)
        r100, thr = pr["recall_at_100_precision"], pr["threshold_at_100_precision"]
        if name == headline and thr is not None:
            ax.plot([r100], [1.0], "o", ms=10, mfc="none", mew=2, color="black",
                    label=f"100 % precision: recall {100 * r100:.1f} % at {name} >= {thr:.3g}")
    acc_p, acc_r = (report["precision_recall"][headline]["precision_at_accept"],
                    report["precision_recall"][headline]["recall_at_accept"])
    if acc_p is not None:
        ax.plot([acc_r], [acc_p], "s", ms=9, color="black",
                label=f"as accepted: precision {100 * acc_p:.1f} %, recall {100 * acc_r:.1f} %")
    ax.set(xlim=(0, 1.02), ylim=(0, 1.05), xlabel="recall (correct accepted / queries with a "
           "positive)", ylabel="precision (correct / accepted)",
           title="Precision-recall of the accept decision\n" + _title(report))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=9)
    return _save(fig, path)


def plot_recall_at_n(report: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    before, after = report["recall"]["before_rerank"], report["recall"]["after_rerank"]
    ns = before["ns"]
    fig, ax = plt.subplots(figsize=(10, 6.5), dpi=DPI)
    x = np.arange(len(ns))
    width = 0.38
    for offset, data, label, color in ((-width / 2, before, "global retrieval", "#aec7e8"),
                                       (width / 2, after, "after MNN re-ranking", "#1f77b4")):
        values = [100 * (data["recall"][str(n)] or 0.0) for n in ns]
        bars = ax.bar(x + offset, values, width, label=label, color=color)
        for bar, v in zip(bars, values, strict=True):
            ax.annotate(f"{v:.1f}", (bar.get_x() + bar.get_width() / 2, v), ha="center",
                        va="bottom", fontsize=9, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(x, [f"R@{n}" for n in ns])
    ax.set(ylim=(0, 110), ylabel="recall (%)",
           title=f"Recall@N over {after['queries_evaluated']} queries with a positive "
                 f"({after['queries_without_positive']} without)\n" + _title(report))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_latency(report: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    e2e = [q["latency_ms"] for q in report["queries"] if q.get("latency_ms") is not None]
    stages = report["latency"]["stages_ms"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 6), dpi=DPI,
                                   gridspec_kw={"width_ratios": [3, 2]})
    if e2e:
        ax1.hist(e2e, bins=min(60, max(10, len(e2e) // 5)), color="#1f77b4", alpha=0.8)
        s = report["latency"]["end_to_end_ms"]
        for key, style in (("p50", "-"), ("p95", "--"), ("p99", ":")):
            ax1.axvline(s[key], color="black", ls=style, label=f"{key} {s[key]:.1f} ms")
        ax1.legend()
    what = "publish to result over DDS" if report["mode"] == "live" else "decode + query"
    ax1.set(xlabel="end-to-end latency (ms)", ylabel="queries",
            title=f"End-to-end latency ({what}), {len(e2e)} queries")
    ax1.grid(alpha=0.3)
    names = [n for n, s in stages.items() if s["count"]]
    y = np.arange(len(names))
    p50 = [stages[n]["p50"] for n in names]
    p95 = [stages[n]["p95"] for n in names]
    ax2.barh(y - 0.2, p50, 0.4, label="p50", color="#1f77b4")
    ax2.barh(y + 0.2, p95, 0.4, label="p95", color="#ff7f0e")
    # numbers, so that sub-millisecond stages show too
    for yi, a, b in zip(y, p50, p95, strict=True):
        ax2.annotate(f"{a:.1f} / {b:.1f} ms", (max(a, b), yi), xytext=(4, 0),
                     textcoords="offset points", va="center", fontsize=8)
    ax2.set_xlim(0, max(p95, default=1.0) * 1.35 or 1.0)
    ax2.set_yticks(y, names)
    ax2.invert_yaxis()
    ax2.set(xlabel="ms", title="Per-stage latency")
    ax2.grid(axis="x", alpha=0.3)
    ax2.legend(loc="lower right")
    fig.suptitle(_title(report))
    return _save(fig, path)


def plot_trajectory(report: dict[str, Any], map_positions: np.ndarray, path: Path) -> Path:
    """Top-down query positions by outcome, with lines to the matched places.

    Routes without a lateral extent (image folders with pseudo-positions along x) are drawn
    as query position against matched position instead, where correct answers form the
    diagonal band.
    """
    plt = _pyplot()
    queries = [q for q in report["queries"] if q.get("position") is not None]
    m = np.asarray(map_positions, dtype=float).reshape(-1, 3)
    known = np.isfinite(m).all(axis=1)
    all_xy = np.concatenate([m[known, :2], np.array([q["position"][:2] for q in queries])
                             .reshape(-1, 2)])
    span = np.ptp(all_xy, axis=0) if len(all_xy) else np.zeros(2)
    linear = span[1] <= 1e-6 * max(span[0], 1e-9)
    fig, ax = plt.subplots(figsize=(12, 9) if not linear else (11, 9), dpi=DPI)
    counts = {k: 0 for k in COLORS}
    for q in queries:
        counts[q["outcome"]] = counts.get(q["outcome"], 0) + 1
    if linear:
        ax.set(xlabel="query position along the route (m)",
               ylabel="position of the top candidate (m)")
        xs = np.array([q["position"][0] for q in queries])
        if len(xs):
            lo, hi = float(min(xs.min(), m[known, 0].min(initial=xs.min()))), float(
                max(xs.max(), m[known, 0].max(initial=xs.max())))
            ax.plot([lo, hi], [lo, hi], color="black", lw=0.8, alpha=0.4, label="same place")
        for outcome, color in COLORS.items():
            pts = [(q["position"][0], m[q["ids"][0], 0]) for q in queries
                   if q["outcome"] == outcome and q["ids"] and known[q["ids"][0]]]
            if pts:
                a = np.array(pts)
                ax.scatter(a[:, 0], a[:, 1], s=18, color=color,
                           label=f"{outcome.replace('_', ' ')} ({counts[outcome]})")
    else:
        ax.set(xlabel="x (m)", ylabel="y (m)")
        ax.set_aspect("equal", adjustable="datalim")
        ax.scatter(m[known, 0], m[known, 1], s=60, marker="s", facecolors="none",
                   edgecolors="#777777", linewidths=0.8, zorder=1,
                   label=f"map places ({int(known.sum())})")
        for outcome, color in (("correct", COLORS["correct"]), ("wrong", COLORS["wrong"])):
            for q in queries:
                if q["outcome"] == outcome and q["ids"] and known[q["ids"][0]]:
                    px, py = m[q["ids"][0], :2]
                    ax.plot([q["position"][0], px], [q["position"][1], py], color=color,
                            lw=0.8, alpha=0.6, zorder=2)
        for outcome, color in COLORS.items():
            xy = np.array([q["position"][:2] for q in queries if q["outcome"] == outcome])
            if len(xy):
                ax.scatter(xy[:, 0], xy[:, 1], s=22, color=color, zorder=3,
                           edgecolors="black", linewidths=0.3,
                           label=f"query: {outcome.replace('_', ' ')} ({counts[outcome]})")
    ax.set_title("Queries by outcome (lines: query to its accepted match)\n" + _title(report)
                 if not linear else
                 "Top candidate against query position (accepted: correct / wrong)\n"
                 + _title(report))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=9)
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def write_plots(report: dict[str, Any], map_positions: np.ndarray, out_dir: Path
                ) -> dict[str, str]:
    """All plots into ``out_dir``; returns {name: file name}."""
    out = {}
    for name, draw in (("precision_recall", plot_precision_recall),
                       ("recall_at_n", plot_recall_at_n), ("latency", plot_latency)):
        out[name] = draw(report, out_dir / f"{name}.png").name
    out["trajectory"] = plot_trajectory(report, map_positions, out_dir / "trajectory.png").name
    if report.get("pose"):
        out["pose_errors"] = plot_pose_cdf(report, out_dir / "pose_errors.png").name
    return out


def plot_pose_cdf(report: dict[str, Any], path: Path) -> Path:
    """Plot CDFs of the query poses' errors per source, the keyframe baseline beside."""
    plt = _pyplot()
    errors = report["pose"]["errors"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    sources = sorted({e["source"] for e in errors})
    for ax, key, unit in ((axes[0], "translation_m", "m"), (axes[1], "rotation_deg", "deg")):
        series = [(s, [e[key] for e in errors if e["source"] == s]) for s in sources]
        series.append(("keyframe baseline", [e[f"keyframe_{key}"] for e in errors]))
        for label, values in series:
            v = np.sort([x for x in values if x is not None])
            if v.size:
                ax.step(v, np.arange(1, v.size + 1) / v.size, where="post",
                        label=f"{label} ({v.size})")
        ax.set_xlabel(f"{key.split('_')[0]} error ({unit})")
        ax.set_ylabel("fraction of accepted frames")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no pose with ground truth", ha="center", va="center",
                    transform=ax.transAxes)
    fig.suptitle(_title(report))
    return _save(fig, path)
