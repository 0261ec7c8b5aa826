"""The camera frame as the map builder sees it, whatever it came from (bag, folder, topic).

Bags, image folders and the live node all turn their input into :class:`Frame` objects and feed
one builder, so identical frames give identical maps. Pixels are decoded lazily: most frames of
a drive are dropped by the keyframe rules, and decoding them would be wasted work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from selavpr_ros.io.poses import Pose


@dataclass(frozen=True, eq=False)
class Frame:
    """One camera frame.

    Attributes:
        stamp_ns: capture time (ns).
        load: returns the (H, W, 3) uint8 RGB pixels; raises ImageDecodeError when it cannot.
        pose: the camera's pose at ``stamp_ns`` in the map frame, or None when unknown (then
            the frame is skipped: a place needs a position).
        source: where the frame comes from (bag path and topic, folder, live topic); together
            with ``source_ref`` it identifies the frame, so an interrupted build can resume.
        source_ref: the frame within its source (message index, file name).
        frame_id: the camera frame of the image.
        damaged: why the frame's record could not be read at all (a corrupt bag message);
            empty for a readable frame. A damaged frame is skipped as undecodable.
        depth: returns the registered depth image and its encoding (16UC1 / 32FC1), or
            raises DepthImageError; None when the source has no depth.
    """

    stamp_ns: int
    load: Callable[[], np.ndarray]
    pose: Pose | None
    source: str
    source_ref: str
    frame_id: str = ""
    damaged: str = ""
    depth: Callable[[], tuple[np.ndarray, str]] | None = None

    @staticmethod
    def of_array(rgb: np.ndarray) -> Callable[[], np.ndarray]:
        """Return a ``load`` for pixels already in memory."""
        return lambda: rgb
