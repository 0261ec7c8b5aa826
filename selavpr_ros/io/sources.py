"""A recorded drive as a stream of frames: a rosbag2 (image and pose topics) or an image folder.

Building a map and evaluating one read their frames the same way, so both open them here:
:class:`FrameSource` says where the frames are and which of them to use, :func:`open_frames`
yields them with their count (for progress bars) and closes the bag afterwards.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from selavpr_ros.errors import ConfigError
from selavpr_ros.io.folders import DEFAULT_RATE_HZ, DEFAULT_SPACING_M
from selavpr_ros.io.frames import Frame

_BAG_ONLY = ("image_topic", "pose_topic", "pose_tolerance_s", "camera_info_topic",
             "depth_topic")
_FOLDER_ONLY = ("images", "poses", "spacing", "rate_hz", "depth_folder")


@dataclass(frozen=True)
class FrameSource:
    """Where the frames come from and which of them are used.

    Attributes:
        bag: a rosbag2 directory (sqlite3 or mcap); exclusive with ``images``.
        image_topic, pose_topic: the bag's topics (None: the bag's only one of its kind).
        pose_tolerance_s: max seconds between an image and the poses around it.
        images: an image folder (natural file-name order).
        poses: the folder's poses CSV; without it frames get a pseudo-position
            ``index * spacing`` along x and stamps at ``rate_hz``.
        frame_id: the camera frame of folder images.
        stride: use every ``stride``-th frame.
        limit: stop after this many frames (after ``stride``; 0: no limit).
        camera_info_topic: the bag's CameraInfo topic (None: the only one, if any).
        depth_topic: the bag's registered depth images (16UC1 / 32FC1), matched by stamp.
        depth_folder: the folder's registered depth images (see FolderOptions).
    """

    bag: str | None = None
    image_topic: str | None = None
    pose_topic: str | None = None
    pose_tolerance_s: float = 0.1
    images: str | None = None
    poses: str | None = None
    spacing: float = DEFAULT_SPACING_M
    rate_hz: float = DEFAULT_RATE_HZ
    frame_id: str = "camera"
    stride: int = 1
    limit: int = 0
    camera_info_topic: str | None = None
    depth_topic: str | None = None
    depth_folder: str | None = None

    def __post_init__(self) -> None:
        if bool(self.bag) == bool(self.images):
            raise ConfigError("give exactly one source: --bag BAG or --images FOLDER")
        if self.stride < 1:
            raise ConfigError(f"--stride must be at least 1, got {self.stride}")
        if self.limit < 0:
            raise ConfigError(f"--limit must be >= 0, got {self.limit}")
        if not self.pose_tolerance_s >= 0:
            raise ConfigError(f"--pose-tolerance must be >= 0, got {self.pose_tolerance_s}")
        if self.images and (self.image_topic or self.pose_topic or self.camera_info_topic):
            raise ConfigError("--image-topic, --pose-topic and --camera-info-topic are for "
                              "--bag sources")
        if self.images and self.depth_topic:
            raise ConfigError("--depth-topic is for --bag sources (use --depth-folder)")
        if self.bag and self.depth_folder:
            raise ConfigError("--depth-folder is for --images sources")

    def describe(self) -> dict[str, Any]:
        """Return the settings that select the frames, for reports (unset ones left out)."""
        drop = _FOLDER_ONLY if self.bag else _BAG_ONLY
        return {k: v for k, v in asdict(self).items()
                if v not in (None, "") and k not in drop and k != "frame_id"}


@dataclass(frozen=True)
class OpenedFrames:
    """An opened :class:`FrameSource`.

    Attributes:
        frames: the frames, in order, after stride and limit.
        total: how many ``frames`` gives (None if unknown).
        image_topic: the bag's image topic ('' for a folder).
        pose_frame: the frame id of the bag's poses ('' for a folder).
        camera: the bag's camera model (CameraInfo), None without one.
    """

    frames: Iterator[Frame]
    total: int | None
    image_topic: str
    pose_frame: str
    camera: Any = None


@contextlib.contextmanager
def open_frames(source: FrameSource) -> Iterator[OpenedFrames]:
    """Open ``source``; the bag (if any) is closed when the block ends, however it ends."""
    with contextlib.ExitStack() as stack:
        if source.bag:
            from selavpr_ros.io.bags import IMAGE_TYPES, BagFrames

            bag = stack.enter_context(BagFrames(source.bag))
            topic, _ = bag.topic_of(source.image_topic, IMAGE_TYPES, "image")
            poses, pose_frame = bag.read_poses(source.pose_topic)
            if len(poses) == 0:
                raise ConfigError(f"the pose topic of {source.bag} has no usable poses")
            frames: Iterator[Frame] = bag.frames(topic, poses,
                                                 round(source.pose_tolerance_s * 1e9))
            if source.depth_topic:
                frames = bag.with_depth(frames, source.depth_topic,
                                        round(source.pose_tolerance_s * 1e9))
            total: int | None = bag.count(topic)
            camera, _ = bag.read_camera_info(source.camera_info_topic)
        else:
            from selavpr_ros.io.folders import FolderOptions, folder_frames, list_images

            assert source.images is not None  # checked by FrameSource
            options = FolderOptions(poses=Path(source.poses) if source.poses else None,
                                    spacing=source.spacing, rate_hz=source.rate_hz,
                                    frame_id=source.frame_id,
                                    depth_folder=Path(source.depth_folder)
                                    if source.depth_folder else None)
            frames = folder_frames(source.images, options)
            total, topic, pose_frame = len(list_images(source.images)), "", ""
            camera = None
        if source.stride > 1:
            frames = itertools.islice(frames, 0, None, source.stride)
            total = -(-total // source.stride) if total is not None else None
        if source.limit:
            frames = itertools.islice(frames, source.limit)
            total = min(total, source.limit) if total is not None else source.limit
        yield OpenedFrames(frames, total, topic, pose_frame, camera)
