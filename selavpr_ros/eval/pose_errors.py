"""Translation and rotation errors of the query poses, per pose source, keyframe baseline beside.

For every accepted query with a ground-truth pose: the error of the published pose (``pnp``,
``two_view`` or ``keyframe``) and, on the same frames, of the matched place's stored pose (what
the node published before metric poses: the baseline). Rotation errors need orientations on
both sides; a pose without one has a translation error only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from selavpr_ros.io.poses import rotation_angle


def _errors(position: Sequence[float] | None, orientation: Sequence[float] | None,
            truth_position: Sequence[float], truth_orientation: Sequence[float] | None,
            ) -> tuple[float, float]:
    t = math.nan if position is None else float(np.linalg.norm(
        np.subtract(position, truth_position)))
    r = math.nan
    if orientation is not None and truth_orientation is not None:
        r = math.degrees(rotation_angle(tuple(orientation), tuple(truth_orientation)))
    return t, r


def _summary(t: list[float], r: list[float]) -> dict[str, Any]:
    tt = np.asarray([v for v in t if math.isfinite(v)])
    rr = np.asarray([v for v in r if math.isfinite(v)])

    def pct(a: np.ndarray, q: float) -> float | None:
        return float(np.percentile(a, q)) if a.size else None

    return {"frames": len(t), "translation_m": {"median": pct(tt, 50), "p90": pct(tt, 90)},
            "rotation_deg": {"median": pct(rr, 50), "p90": pct(rr, 90),
                             "frames": int(rr.size)}}


def pose_errors(records: Sequence[Any]) -> dict[str, Any] | None:
    """Errors of accepted records' poses (None when no record has a pose and ground truth).

    Per source and overall: frames, translation median / p90 (m), rotation median / p90 (deg);
    ``keyframe_baseline`` is the matched place's pose on the same frames; ``errors`` lists the
    per-frame values (for the CDF plot).
    """
    rows = []
    for r in records:
        if not (r.answered and r.accepted and r.position is not None
                and r.pose_position is not None):
            continue
        t, rot = _errors(r.pose_position, r.pose_orientation, r.position, r.orientation)
        kt, kr = (math.nan, math.nan)
        if r.keyframe_position is not None:
            kt, kr = _errors(r.keyframe_position, r.keyframe_orientation, r.position,
                             r.orientation)
        rows.append((r.index, r.pose_source, t, rot, kt, kr))
    if not rows:
        return None
    sources = sorted({row[1] for row in rows})
    return {
        "all": _summary([row[2] for row in rows], [row[3] for row in rows]),
        "by_source": {s: _summary([row[2] for row in rows if row[1] == s],
                                  [row[3] for row in rows if row[1] == s]) for s in sources},
        "keyframe_baseline": _summary([row[4] for row in rows], [row[5] for row in rows]),
        "errors": [{"index": i, "source": s, "translation_m": _finite(t),
                    "rotation_deg": _finite(rot), "keyframe_translation_m": _finite(kt),
                    "keyframe_rotation_deg": _finite(kr)} for i, s, t, rot, kt, kr in rows],
    }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def markdown_lines(section: dict[str, Any]) -> list[str]:
    """Return the report's "Query pose" table as markdown lines."""
    def fmt(v: float | None, digits: int) -> str:
        return "n/a" if v is None else f"{v:.{digits}f}"

    lines = ["", "## Query pose (accepted frames with ground truth)", "",
             "| pose | frames | translation median / p90 (m) | rotation median / p90 (deg) |",
             "|---|---|---|---|"]
    rows = [("all", section["all"]), *section["by_source"].items(),
            ("keyframe baseline (same frames)", section["keyframe_baseline"])]
    for name, s in rows:
        t, r = s["translation_m"], s["rotation_deg"]
        lines.append(f"| {name} | {s['frames']} | {fmt(t['median'], 3)} / {fmt(t['p90'], 3)} "
                     f"| {fmt(r['median'], 2)} / {fmt(r['p90'], 2)} |")
    return lines
