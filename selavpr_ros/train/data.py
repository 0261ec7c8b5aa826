"""Training drives: frames with poses from rosbag2 files or image folders, and their pixels.

A drive is a recorded traversal; every frame needs a pose, since positives and negatives are
defined by distance. Frames without a pose are dropped and counted; a drive left with fewer
than two posed frames is refused. Pixels are decoded lazily and kept in memory at the network
input size (resized with area averaging, i.e. antialiased, as the reference's PIL resize for
training does), so the mining rounds do not decode every image again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from selavpr_ros.errors import ConfigError, ImageDecodeError
from selavpr_ros.io.frames import Frame
from selavpr_ros.model.preprocess import normalize_image

log = logging.getLogger(__name__)

MIN_FRAMES = 2


@dataclass(frozen=True, eq=False)
class Drive:
    """One traversal: its frames (all with poses) and their (N, 3) positions in metres."""

    name: str
    frames: tuple[Frame, ...]
    positions: np.ndarray

    def __len__(self) -> int:
        return len(self.frames)


def drive_from_frames(name: str, frames: Iterable[Frame]) -> Drive:
    """Keep the posed frames of a source; refuse a drive without (enough) poses."""
    kept: list[Frame] = []
    unposed = 0
    for frame in frames:
        if frame.pose is None:
            unposed += 1
        else:
            kept.append(frame)
    if len(kept) < MIN_FRAMES:
        raise ConfigError(
            f"drive {name}: {len(kept)} frames with a pose ({unposed} without); training needs "
            f"poses for at least {MIN_FRAMES} frames of every drive")
    if unposed:
        log.warning("drive %s: %d frames without a pose are left out", name, unposed)
    positions = np.array([f.pose.position for f in kept if f.pose is not None], np.float64)
    return Drive(name, tuple(kept), positions)


def load_folder_drive(images: str | Path, poses: str | Path | None) -> Drive:
    """Load an image folder with its poses CSV (``file, timestamp, x, y, z[, qx..qw]``)."""
    from selavpr_ros.io.folders import FolderOptions, folder_frames

    if poses is None:
        raise ConfigError(f"drive {images}: training needs a poses CSV (--poses) for every "
                          "image folder; positives and negatives are found by distance")
    return drive_from_frames(str(images), folder_frames(images, FolderOptions(poses=Path(poses))))


def load_bag_drive(bag: str | Path, image_topic: str | None = None,
                   pose_topic: str | None = None, tolerance_s: float = 0.1) -> Drive:
    """Load a rosbag2 with an image topic and a pose topic (Odometry, PoseStamped, ...)."""
    from selavpr_ros.io.bags import IMAGE_TYPES, BagFrames

    with BagFrames(bag) as reader:
        topic, _ = reader.topic_of(image_topic, IMAGE_TYPES, "image")
        track, _ = reader.read_poses(pose_topic)
        frames = list(reader.frames(topic, track, round(tolerance_s * 1e9)))
    return drive_from_frames(str(bag), frames)


class ImageStore:
    """Network-ready images of all drives by global index, decoded once and kept (uint8).

    Indices run over the drives in order (drive 0's frames first). An image that cannot be
    decoded is refused with the drive and frame named: a training set must be readable.
    """

    def __init__(self, drives: list[Drive], input_hw: tuple[int, int]) -> None:
        self.frames = [frame for drive in drives for frame in drive.frames]
        self.input_hw = input_hw
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.frames)

    def image(self, index: int) -> np.ndarray:
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        frame = self.frames[index]
        try:
            rgb = frame.load()
        except ImageDecodeError as err:
            raise ImageDecodeError(f"{frame.source} {frame.source_ref}: {err}") from err
        h, w = self.input_hw
        if rgb.shape[:2] != (h, w):
            rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        self._cache[index] = rgb
        return rgb

    def batch(self, indices: Iterable[int], device: torch.device) -> torch.Tensor:
        """Normalised (B, 3, H, W) float32 on ``device``."""
        return torch.stack([normalize_image(torch.from_numpy(self.image(int(i))).to(device))
                            for i in indices])
