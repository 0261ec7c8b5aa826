"""The camera model: intrinsics and lens distortion, as ``sensor_msgs/CameraInfo`` has them.

Three sources give the same :class:`CameraModel`: a dict shaped like a CameraInfo message (the
node converts the message into one), a ROS camera-calibration YAML file (what
``camera_calibration`` writes, for image folders), and the model's own JSON form (stored in a
map). Pixel coordinates follow OpenCV and ROS: the centre of the top-left pixel is (0, 0).

Features are found on the *raw* (distorted) image, so ``k`` and ``d`` are used, not ``p``:
:meth:`CameraModel.normalized` removes the distortion with OpenCV (``cv2.undistortPoints``, or
``cv2.fisheye.undistortPoints`` for ``equidistant``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from selavpr_ros.errors import SelaVPRError

# CameraInfo distortion model -> accepted coefficient counts (OpenCV orders)
DISTORTION_MODELS: dict[str, tuple[int, ...]] = {
    "plumb_bob": (0, 4, 5),  # k1 k2 p1 p2 [k3]; empty = no distortion
    "rational_polynomial": (8, 12, 14),  # k1 k2 p1 p2 k3 k4 k5 k6 [s1..s4 [tx ty]]
    "equidistant": (4,),  # fisheye k1..k4
}
_UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
_MODEL_ALIASES = {"": "plumb_bob", "none": "plumb_bob"}  # simulated cameras often send ""


class CameraModelError(SelaVPRError, ValueError):
    """Camera intrinsics or distortion are missing, inconsistent or unsupported."""


def _numbers(value: Any, name: str, count: int | None = None) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise CameraModelError(f"camera {name} must be numbers, got {value!r:.60}") from err
    if count is not None and array.size != count:
        raise CameraModelError(f"camera {name} must have {count} values, got {array.size}")
    if not np.all(np.isfinite(array)):
        raise CameraModelError(f"camera {name} has non-finite values: {array.tolist()}")
    return array


def _size(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise CameraModelError(f"camera {name} must be a positive integer, got {value!r}")
    return int(value)


@dataclass(frozen=True, eq=False)
class CameraModel:
    """A pinhole camera with lens distortion, for images of ``width`` x ``height`` pixels.

    Attributes:
        width, height: image size the intrinsics refer to.
        k: 3x3 camera matrix (fx, skew, cx; 0, fy, cy; 0, 0, 1).
        distortion_model: ``plumb_bob``, ``rational_polynomial`` or ``equidistant``.
        d: distortion coefficients in OpenCV's order for the model.
        name: camera name (from a calibration file), informational.
    """

    width: int
    height: int
    k: np.ndarray
    distortion_model: str = "plumb_bob"
    d: np.ndarray = field(default_factory=lambda: np.zeros(0))
    name: str = ""

    def __post_init__(self) -> None:
        width, height = _size(self.width, "width"), _size(self.height, "height")
        k = _numbers(self.k, "K", 9).reshape(3, 3)
        model = _MODEL_ALIASES.get(self.distortion_model, self.distortion_model)
        if model not in DISTORTION_MODELS:
            raise CameraModelError(
                f"distortion model {self.distortion_model!r} is not supported "
                f"(use one of {sorted(DISTORTION_MODELS)})"
            )
        d = _numbers(self.d, "D")
        if d.size not in DISTORTION_MODELS[model]:
            raise CameraModelError(
                f"distortion model {model!r} takes {DISTORTION_MODELS[model]} coefficients, "
                f"got {d.size}"
            )
        if not k.any():
            raise CameraModelError("camera is not calibrated: K is all zeros")
        fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
        if fx <= 0 or fy <= 0:
            raise CameraModelError(f"camera focal lengths must be > 0, got fx={fx} fy={fy}")
        if k[1, 0] != 0 or k[2, 0] != 0 or k[2, 1] != 0 or k[2, 2] != 1:
            raise CameraModelError(
                f"K must be upper triangular with K[2][2] = 1, got {k.tolist()}"
            )
        if not (-0.5 <= cx <= width - 0.5 and -0.5 <= cy <= height - 0.5):
            raise CameraModelError(
                f"principal point ({cx:g}, {cy:g}) lies outside the {width}x{height} image"
            )
        object.__setattr__(self, "width", width)
        object.__setattr__(self, "height", height)
        object.__setattr__(self, "k", k)
        object.__setattr__(self, "distortion_model", model)
        object.__setattr__(self, "d", d)
        object.__setattr__(self, "name", str(self.name))
        k.setflags(write=False)
        d.setflags(write=False)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def pinhole(cls, width: int, height: int, focal_px: float, name: str = "") -> CameraModel:
        """Make an ideal camera with the principal point at the image centre."""
        k = np.array([[focal_px, 0.0, width / 2.0 - 0.5],
                      [0.0, focal_px, height / 2.0 - 0.5],
                      [0.0, 0.0, 1.0]])
        return cls(width, height, k, "plumb_bob", np.zeros(5), name)

    @classmethod
    def from_camera_info(cls, info: Mapping[str, Any]) -> CameraModel:
        """Read a dict with ``sensor_msgs/CameraInfo`` fields.

        Used: ``width``, ``height``, ``distortion_model``, ``d``, ``k``; ``r``, ``p``,
        ``binning_x/y`` and ``roi`` when present.

        ``p`` is checked for consistency only (a projection matrix whose focal length is 0 or
        far from ``k``'s is refused). Binning scales the intrinsics to the binned image; a
        region of interest other than the full image is refused.
        """
        missing = [f for f in ("width", "height", "k") if f not in info]
        if missing:
            raise CameraModelError(f"camera info lacks {', '.join(missing)}")
        width, height = _size(info["width"], "width"), _size(info["height"], "height")
        roi = info.get("roi") or {}
        if any(int(roi.get(f, 0) or 0) for f in ("x_offset", "y_offset", "height", "width")):
            if (int(roi.get("x_offset", 0)), int(roi.get("y_offset", 0)),
                    int(roi.get("width", 0)), int(roi.get("height", 0))) != (0, 0, width, height):
                raise CameraModelError(f"camera info with a region of interest {dict(roi)} "
                                       "is not supported")
        model = cls(width, height, _numbers(info["k"], "K", 9).reshape(3, 3),
                    str(info.get("distortion_model", "plumb_bob")),
                    _numbers(info.get("d", ()), "D"), str(info.get("name", "")))
        if "r" in info and len(info["r"]):
            r = _numbers(info["r"], "R", 9).reshape(3, 3)
            if r.any() and not np.allclose(r @ r.T, np.eye(3), atol=1e-4):
                raise CameraModelError("camera info R is not a rotation matrix")
        if "p" in info and len(info["p"]):
            p = _numbers(info["p"], "P", 12).reshape(3, 4)
            if p.any() and (p[0, 0] <= 0 or p[1, 1] <= 0):
                raise CameraModelError(
                    f"camera info P has a focal length <= 0 ({p[0, 0]:g}, {p[1, 1]:g})"
                )
            # a monocular camera's P is K, or K adjusted for rectification (a few % apart)
            if p.any() and not 0.5 < p[0, 0] / model.fx < 2.0:
                raise CameraModelError(
                    f"camera info P (fx {p[0, 0]:g}) and K (fx {model.fx:g}) disagree"
                )
        bx = int(info.get("binning_x", 0) or 0)
        by = int(info.get("binning_y", 0) or 0)
        if bx > 1 or by > 1:  # K refers to the full-resolution sensor
            model = model.scaled(math.ceil(width / max(bx, 1)), math.ceil(height / max(by, 1)),
                                 full_size=(width, height))
        return model

    @classmethod
    def from_yaml(cls, path: str | Path) -> CameraModel:
        """Read a ROS camera-calibration YAML file (``camera_calibration``'s format)."""
        import yaml

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as err:
            raise CameraModelError(f"cannot read camera calibration {path}: {err}") from err
        except yaml.YAMLError as err:
            where = getattr(err, "problem_mark", None)
            raise CameraModelError(
                f"camera calibration {path} is not valid YAML"
                + (f" (line {where.line + 1})" if where is not None else "")
            ) from err
        if not isinstance(data, dict):
            raise CameraModelError(f"camera calibration {path} is not a YAML mapping")
        missing = [f for f in ("image_width", "image_height", "camera_matrix",
                               "distortion_coefficients") if f not in data]
        if missing:
            raise CameraModelError(f"camera calibration {path} lacks {', '.join(missing)}")
        info: dict[str, Any] = {
            "width": data["image_width"],
            "height": data["image_height"],
            "distortion_model": data.get("distortion_model", "plumb_bob"),
            "k": _yaml_matrix(data["camera_matrix"], "camera_matrix", (3, 3), path),
            "d": _yaml_matrix(data["distortion_coefficients"], "distortion_coefficients",
                              None, path),
            "name": data.get("camera_name", ""),
        }
        if "rectification_matrix" in data:
            info["r"] = _yaml_matrix(data["rectification_matrix"], "rectification_matrix",
                                     (3, 3), path)
        if "projection_matrix" in data:
            info["p"] = _yaml_matrix(data["projection_matrix"], "projection_matrix", (3, 4),
                                     path)
        try:
            return cls.from_camera_info(info)
        except CameraModelError as err:
            raise CameraModelError(f"camera calibration {path}: {err}") from err

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (CameraInfo field names), read back by :meth:`from_dict`."""
        return {
            "name": self.name,
            "width": self.width,
            "height": self.height,
            "distortion_model": self.distortion_model,
            "d": [float(v) for v in self.d],
            "k": [float(v) for v in self.k.reshape(-1)],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CameraModel:
        """Read the :meth:`to_dict` form; unknown keys are refused (maps are untrusted)."""
        if not isinstance(data, Mapping):
            raise CameraModelError(f"camera model must be a mapping, got {type(data).__name__}")
        unknown = set(data) - {"name", "width", "height", "distortion_model", "d", "k"}
        if unknown:
            raise CameraModelError(f"unknown camera model fields: {sorted(unknown)}")
        return cls.from_camera_info(data)

    # ------------------------------------------------------------------ properties
    @property
    def fx(self) -> float:
        return float(self.k[0, 0])

    @property
    def fy(self) -> float:
        return float(self.k[1, 1])

    @property
    def focal_px(self) -> float:
        """Mean focal length in pixels (converts pixel thresholds to normalised ones)."""
        return 0.5 * (self.fx + self.fy)

    @property
    def has_distortion(self) -> bool:
        return bool(np.any(self.d != 0))

    def same_as(self, other: CameraModel) -> bool:
        """Equal size, model and (exactly) equal coefficients."""
        return (self.width, self.height, self.distortion_model) == (
            other.width, other.height, other.distortion_model
        ) and np.array_equal(self.k, other.k) and np.array_equal(self.d, other.d)

    # ------------------------------------------------------------------ operations
    def scaled(self, width: int, height: int,
               full_size: tuple[int, int] | None = None) -> CameraModel:
        """Describe the same camera for the image resized to ``width`` x ``height``.

        Pixel centres map as ``(x + 0.5) * s - 0.5`` (the mapping the extractors use);
        distortion acts on normalised coordinates and does not change.
        """
        w0, h0 = full_size or (self.width, self.height)
        sx, sy = _size(width, "width") / w0, _size(height, "height") / h0
        k = self.k.copy()
        k[0, :] *= sx
        k[1, :] *= sy
        k[0, 2] = (self.k[0, 2] + 0.5) * sx - 0.5
        k[1, 2] = (self.k[1, 2] + 0.5) * sy - 0.5
        return CameraModel(width, height, k, self.distortion_model, self.d.copy(), self.name)

    def normalized(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 2) pixel coordinates of the raw image -> (N, 2) undistorted normalised ones.

        A point (x, y) of the result lies on the ray (x, y, 1) of the optical frame.
        """
        pts = np.asarray(pixels, np.float64).reshape(-1, 1, 2)
        if pts.shape[0] == 0:
            return np.zeros((0, 2))
        if not self.has_distortion:
            out = np.linalg.solve(self.k, np.vstack([pts[:, 0].T, np.ones(len(pts))]))
            return (out[:2] / out[2]).T
        if self.distortion_model == "equidistant":
            und = cv2.fisheye.undistortPoints(pts, self.k, self.d, criteria=_UNDISTORT_CRITERIA)
        else:  # OpenCV's default of 5 iterations leaves ~0.01 px with strong distortion
            und = cv2.undistortPointsIter(pts, self.k, self.d, np.eye(3), np.eye(3),
                                         _UNDISTORT_CRITERIA)
        return np.asarray(und, np.float64).reshape(-1, 2)

    def ideal_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 2) raw pixels -> pixels of a distortion-free camera with the same ``k``."""
        n = self.normalized(pixels)
        return n @ self.k[:2, :2].T + self.k[:2, 2]

    def project(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) points in the optical frame -> (N, 2) raw (distorted) pixel coordinates."""
        pts = np.asarray(points, np.float64).reshape(-1, 1, 3)
        zero = np.zeros(3)
        if self.distortion_model == "equidistant":
            out, _ = cv2.fisheye.projectPoints(pts, zero, zero, self.k, self.d)
        else:
            out, _ = cv2.projectPoints(pts, zero, zero, self.k, self.d)
        return np.asarray(out, np.float64).reshape(-1, 2)


def _yaml_matrix(entry: Any, name: str, shape: tuple[int, int] | None,
                 path: Path) -> Sequence[float]:
    if not isinstance(entry, dict) or "data" not in entry:
        raise CameraModelError(f"camera calibration {path}: {name} needs rows, cols and data")
    data = _numbers(entry["data"], name)
    rows, cols = entry.get("rows"), entry.get("cols")
    if not isinstance(rows, int) or not isinstance(cols, int) or rows * cols != data.size:
        raise CameraModelError(
            f"camera calibration {path}: {name} is {rows}x{cols} but has {data.size} values"
        )
    if shape is not None and (rows, cols) != shape:
        raise CameraModelError(
            f"camera calibration {path}: {name} must be {shape[0]}x{shape[1]}, got {rows}x{cols}"
        )
    return [float(v) for v in data]
