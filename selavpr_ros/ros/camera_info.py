"""CameraInfo messages to camera models, matched to images by stamp.

message_filters' synchronisers only deliver images that have a partner, so a camera without
(or with broken) camera info would stop the node answering; this cache keeps the last CameraInfo
messages keyed by stamp and an image takes the one with its stamp (or the nearest within
``tolerance_s``), and without one the frame still gets a place and a labelled keyframe pose.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from selavpr_ros.geometry import CameraModel, CameraModelError


def camera_info_fields(msg: Any) -> dict[str, Any]:
    """Return the CameraInfo fields CameraModel.from_camera_info reads."""
    return {
        "width": int(msg.width), "height": int(msg.height),
        "distortion_model": str(msg.distortion_model),
        "d": [float(v) for v in msg.d], "k": [float(v) for v in msg.k],
        "r": [float(v) for v in msg.r], "p": [float(v) for v in msg.p],
        "binning_x": int(msg.binning_x), "binning_y": int(msg.binning_y),
        "roi": {"x_offset": int(msg.roi.x_offset), "y_offset": int(msg.roi.y_offset),
                "width": int(msg.roi.width), "height": int(msg.roi.height)},
    }


class CameraInfoCache:
    """The last ``size`` CameraInfo messages by stamp; models parsed once per calibration."""

    def __init__(self, size: int = 64, tolerance_s: float = 0.1) -> None:
        self.size = size
        self.tolerance_ns = int(tolerance_s * 1e9)
        self._by_stamp: OrderedDict[int, tuple[CameraModel | None, str]] = OrderedDict()
        self._parsed: dict[str, tuple[CameraModel | None, str]] = {}
        self._lock = threading.Lock()
        self.received = 0

    def add(self, stamp_ns: int, msg: Any) -> None:
        fields = camera_info_fields(msg)
        key = repr(sorted(fields.items()))
        parsed = self._parsed.get(key)
        if parsed is None:
            try:
                parsed = (CameraModel.from_camera_info(fields), "")
            except CameraModelError as err:
                parsed = (None, f"camera info refused: {err}")
            if len(self._parsed) > 16:
                self._parsed.clear()
            self._parsed[key] = parsed
        with self._lock:
            self.received += 1
            self._by_stamp[int(stamp_ns)] = parsed
            self._by_stamp.move_to_end(int(stamp_ns))
            while len(self._by_stamp) > self.size:
                self._by_stamp.popitem(last=False)

    def lookup(self, stamp_ns: int) -> tuple[CameraModel | None, str]:
        """Return the camera model for an image stamp, or None and why."""
        with self._lock:
            if not self._by_stamp:
                return None, "no camera info received"
            found = self._by_stamp.get(int(stamp_ns))
            if found is None:
                nearest = min(self._by_stamp, key=lambda s: abs(s - stamp_ns))
                if abs(nearest - stamp_ns) > self.tolerance_ns:
                    return None, (f"no camera info within {self.tolerance_ns / 1e9:g} s of the "
                                  "image stamp")
                found = self._by_stamp[nearest]
        return found
