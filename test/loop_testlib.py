"""A small revisit drive, a classical extractor fitted on it, and ground truth by distance."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from selavpr_ros.extractors.classical import ClassicalConfig, ClassicalExtractor
from selavpr_ros.io.poses import Pose
from selavpr_ros.loop import LoopConfig, LoopDetector, LoopResult
from selavpr_ros.loop.odometry import PathTracker
from selavpr_ros.synthetic import Camera, RouteConfig
from selavpr_ros.synthetic.revisit import RevisitDrive, revisit_drive

ROUTE = RouteConfig(seed=5, frames=24, spacing_m=2.0, rate_hz=2.0,
                    camera=Camera(width=160, height=120))  # revisits after > 30 s
EXTRACTOR = ClassicalConfig(long_side=160, vocabulary_size=32, fit_descriptors_per_image=300,
                            kmeans_iterations=10)
TRUE_LOOP_M = 6.0  # passes are 3 m apart; a loop farther than this is false


@dataclass
class Run:
    drive: RevisitDrive
    extractor: ClassicalExtractor
    results: list[tuple[int, LoopResult]]  # (frame index in drive.frames, result)


def make_drive() -> tuple[RevisitDrive, ClassicalExtractor]:
    drive = revisit_drive(ROUTE)
    extractor = ClassicalExtractor(EXTRACTOR).fit([f.image for f in drive.frames[::3]])
    return drive, extractor


def run_detector(drive: RevisitDrive, detector: LoopDetector,
                 depths: list[np.ndarray] | None = None) -> list[tuple[int, LoopResult]]:
    """Feed the drive in time order: odometry (return loop included) and posed images."""
    tracker = PathTracker()
    events: list[tuple[int, int]] = [(f.stamp_ns, i) for i, f in enumerate(drive.frames)]
    events += [(p.stamp_ns, -1 - j) for j, p in enumerate(drive.return_poses)]
    out = []
    for _, key in sorted(events):
        if key < 0:
            tracker.add(drive.return_poses[-1 - key])
            continue
        f = drive.frames[key]
        pose = Pose(f.stamp_ns, f.position, f.orientation)
        if tracker.add(pose) == "jump":
            detector.restart_consistency()
        r = detector.process(pose, image=f.image, path_m=tracker.path_at(f.stamp_ns),
                             depth_m=None if depths is None else depths[key])
        if r is not None:
            out.append((key, r))
    return out


def test_config() -> LoopConfig:
    return LoopConfig()  # the defaults


def loop_distance(r: LoopResult) -> float:
    assert r.then_position is not None
    return math.dist(r.keyframe.position, r.then_position)
