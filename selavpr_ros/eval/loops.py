"""Loop-closure evaluation on one drive with revisits: run the detector, score its loops.

Ground truth, per keyframe: the earlier keyframes outside the exclusion window (the candidates
the detector could have matched) that are the same place, either within ``radius_m`` of the
keyframe's position or listed for it in a correspondence file (``query,match[,match...]`` by
frame reference: file name for folders, message index for bags). A keyframe with such a place
is a positive; a published loop is true when its matched keyframe is one of them.

The precision-recall curve sweeps a stricter MNN threshold over the loops that the configured
decision published (its first point is the configured operating point); recall at 100 %
precision is the largest recall among points without a false loop.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from selavpr_ros.errors import ConfigError, ImageDecodeError
from selavpr_ros.io.frames import Frame
from selavpr_ros.io.poses import PoseTrack
from selavpr_ros.loop import LoopDetector
from selavpr_ros.loop.odometry import PathTracker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyframeRecord:
    """One keyframe of the evaluated drive and what the detector said."""

    id: int
    stamp_ns: int
    ref: str
    position: tuple[float, float, float]
    path_m: float
    loop: bool
    reason: str
    then_id: int
    then_stamp_ns: int
    mnn_score: float
    consistency: int
    positive: bool = False  # an eligible true place exists
    true_loop: bool = False  # published and correct
    ms: float = 0.0  # insert + query + decide (without extraction)


def read_correspondences(path: str | Path) -> dict[str, set[str]]:
    """``query,match[,match...]`` rows (``#`` comments allowed) -> {query: {matches}}.

    A file without a row is refused: scoring against no positives would look like a result.
    """
    out: dict[str, set[str]] = {}
    n = 0
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for n, row in enumerate(csv.reader(f), 1):
                row = [c.strip() for c in row if c.strip()]
                if not row or row[0].startswith("#"):
                    continue
                if len(row) < 2:
                    raise ConfigError(f"{path}:{n}: a row needs a query and at least one match")
                out.setdefault(row[0], set()).update(row[1:])
    except UnicodeDecodeError as err:
        raise ConfigError(f"correspondence file {path} is not UTF-8 text (byte {err.start} "
                          f"is {err.object[err.start]:#04x}); save it as UTF-8 CSV") from err
    except csv.Error as err:
        raise ConfigError(f"{path}:{n + 1}: not CSV: {err}") from err
    except OSError as err:
        raise ConfigError(f"cannot read correspondence file {path}: {err}") from err
    if not out:
        raise ConfigError(f"correspondence file {path} is empty: it needs query,match[,match...] "
                          "rows")
    return out


def check_correspondences(correspondences: dict[str, set[str]], refs: Iterable[str],
                          path: str | Path, naming: str) -> None:
    """Refuse a correspondence file that names no frame of the drive; warn if it names some.

    ``refs`` are the drive's frame references and ``naming`` says how they are made ("file
    name in the image folder", "message index on the image topic"): names of another drive or
    scheme give no positive, and every loop would be scored false without a word.
    """
    names = set(correspondences).union(*correspondences.values())
    frames = set(refs)
    unknown = sorted(names - frames)
    if len(unknown) == len(names):
        example = min(frames) if frames else None
        raise ConfigError(
            f"correspondence file {path} names no frame of the drive (it names e.g. "
            f"'{unknown[0]}'); frames of this drive are named by their {naming}"
            + (f", e.g. '{example}'" if example is not None else " (the drive has no frame)"))
    if unknown:
        log.warning("%d of %d frame names in %s are not frames of the drive (e.g. '%s'; frames "
                    "are named by their %s): their rows give no positives", len(unknown),
                    len(names), path, unknown[0], naming)


def run_drive(frames: Iterable[Frame], detector: LoopDetector,
              track: PoseTrack | None = None, progress: bool = False,
              total: int | None = None) -> list[KeyframeRecord]:
    """Feed a drive's frames to ``detector``; distance travelled from ``track`` when given."""
    from tqdm import tqdm

    tracker = None
    if track is not None:
        tracker = PathTracker(max_speed_mps=1e9, max_gap_s=1e9)
        for pose in iter_poses(track):
            tracker.add(pose)
    records = []
    refs: list[str] = []
    for frame in tqdm(frames, total=total, unit="frame", disable=not progress):
        if frame.pose is None or frame.damaged:
            continue
        if not detector.is_keyframe(frame.pose):
            continue
        try:
            image = frame.load()
        except ImageDecodeError:
            continue
        path = tracker.path_at(frame.stamp_ns) if tracker is not None else None
        r = detector.process(frame.pose, image=image, frame_id=frame.frame_id, path_m=path)
        if r is None:
            continue
        refs.append(frame.source_ref)
        kf = r.keyframe
        records.append(KeyframeRecord(
            kf.id, kf.stamp_ns, frame.source_ref, kf.position, kf.path_m, r.loop, r.reason,
            r.then_id if r.map_id == "" else -1, r.then_stamp_ns, r.mnn_score, r.consistency,
            ms=r.timings_ms["query"] + r.timings_ms["insert"]))
    return records


def label(records: list[KeyframeRecord], detector: LoopDetector, *,
          radius_m: float | None = None,
          correspondences: dict[str, set[str]] | None = None) -> list[KeyframeRecord]:
    """Mark positives and true loops (by ``radius_m`` or by ``correspondences``)."""
    if (radius_m is None) == (correspondences is None):
        raise ConfigError("give ground truth by radius or by a correspondence file (one)")
    cfg = detector.config
    out = []
    for r in records:
        limit = detector.db.eligible(r.stamp_ns, r.path_m, cfg.min_age_s, cfg.min_path_m)
        earlier = records[:limit]
        if correspondences is not None:
            same = correspondences.get(r.ref, set())
            truth = {e.id for e in earlier if e.ref in same}
        else:
            assert radius_m is not None
            truth = {e.id for e in earlier if math.dist(e.position, r.position) <= radius_m}
        out.append(KeyframeRecord(**{**asdict(r), "positive": bool(truth),
                                     "true_loop": r.loop and r.then_id in truth}))
    return out


def metrics(records: list[KeyframeRecord]) -> dict[str, Any]:
    """Precision, recall, recall at 100 % precision and the PR curve (see the module doc)."""
    positives = sum(r.positive for r in records)
    loops = sorted((r for r in records if r.loop), key=lambda r: -r.mnn_score)
    curve = []
    true = 0
    for i, r in enumerate(loops):  # the threshold just at each loop's score
        true += r.true_loop
        if i + 1 < len(loops) and loops[i + 1].mnn_score == r.mnn_score:
            continue
        curve.append({"min_mnn_score": r.mnn_score, "precision": true / (i + 1),
                      "recall": true / positives if positives else 0.0})
    curve.reverse()  # loosest (the configured operating point) first
    tp = sum(r.true_loop for r in loops)
    perfect = [p["recall"] for p in curve if p["precision"] == 1.0]
    times = sorted(r.ms for r in records)
    return {
        "keyframes": len(records), "positives": positives, "loops": len(loops),
        "true_loops": tp, "false_loops": len(loops) - tp,
        "precision": tp / len(loops) if loops else 1.0,
        "recall": tp / positives if positives else 0.0,
        "recall_at_100_precision": max(perfect) if perfect else 0.0,
        "pr_curve": curve,
        "ms_per_keyframe_p50": times[len(times) // 2] if times else 0.0,
        "ms_per_keyframe_max": times[-1] if times else 0.0,
    }


def iter_poses(track: PoseTrack) -> Iterator[Any]:
    """Yield the poses of ``track`` in stamp order."""
    for i in range(len(track)):
        yield track._poses[i]  # noqa: SLF001 - read-only walk of the sorted track
