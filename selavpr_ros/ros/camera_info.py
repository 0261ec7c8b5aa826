"""CameraInfo messages to camera models, matched to images by stamp.

message_filters' synchronisers only deliver images that have a partner, so a camera without
(or with broken) camera info would stop the node answering; this cache keeps the last CameraInfo
messages keyed by stamp and an image takes the one with its stamp (or the nearest within
``tolerance_s``), and without one the frame still gets a place and a labelled keyframe pose.
While every cached message holds one calibration, an image takes it whatever its stamp: the
image's own CameraInfo may not have been delivered yet (two topics, two callbacks), and a
camera's calibration does not change between frames. The stamp decides only when the camera
has published more than one calibration (a zoom, a re-calibration).
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
        self._by_stamp: OrderedDict[int, str] = OrderedDict()  # stamp -> calibration key
        self._parsed: dict[str, tuple[CameraModel | None, str]] = {}
        self._lock = threading.Lock()
        self.received = 0

    def add(self, stamp_ns: int, msg: Any) -> None:
        fields = camera_info_fields(msg)
        key = repr(sorted(fields.items()))
        with self._lock:
            if key not in self._parsed:
                try:
                    self._parsed[key] = (CameraModel.from_camera_info(fields), "")
                except CameraModelError as err:
                    self._parsed[key] = (None, f"camera info refused: {err}")
            self.received += 1
            self._by_stamp[int(stamp_ns)] = key
            self._by_stamp.move_to_end(int(stamp_ns))
            while len(self._by_stamp) > self.size:
                self._by_stamp.popitem(last=False)
            if len(self._parsed) > 16:  # forget calibrations no cached stamp uses
                used = set(self._by_stamp.values())
                self._parsed = {k: v for k, v in self._parsed.items() if k in used}

    def lookup(self, stamp_ns: int) -> tuple[CameraModel | None, str]:
        """Return the camera model for an image stamp, or None and why."""
        with self._lock:
            if not self._by_stamp:
                return None, "no camera info received"
            key = self._by_stamp.get(int(stamp_ns))
            if key is None:
                nearest = min(self._by_stamp, key=lambda s: abs(s - stamp_ns))
                key = self._by_stamp[nearest]
                if abs(nearest - stamp_ns) > self.tolerance_ns \
                        and any(k != key for k in self._by_stamp.values()):
                    return None, (f"no camera info within {self.tolerance_ns / 1e9:g} s of the "
                                  "image stamp (the camera has published several "
                                  "calibrations)")
            return self._parsed[key]
