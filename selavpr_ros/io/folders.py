"""Image folders as camera drives: natural file order, a poses CSV, or pseudo-positions.

VPR data sets (Gardens Point, Nordland, ...) are folders of images in driving order, often
without metric poses; they are evaluated with pseudo-positions along a line (frame index times a
spacing), so a tolerance of N frames becomes a radius of N*spacing metres.

Poses CSV: one row per image, with a header naming the columns or, without a header, the
columns in this order::

    file, timestamp, x, y, z, qx, qy, qz, qw     (full poses)
    file, timestamp, x, y, z                     (positions only)
    file, x, y, z                                (positions only, no timestamps)

``timestamp`` is in seconds (decimal, e.g. ``1700000000.125``). Header names accepted:
``file``/``filename``/``image``/``name``, ``timestamp``/``time``/``stamp``/``t``, ``x``, ``y``,
``z``, ``qx``, ``qy``, ``qz``, ``qw``. Images without a row are skipped (no pose); rows without
an image are an error.
"""

from __future__ import annotations

import csv
import glob
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np

from selavpr_ros.errors import ConfigError
from selavpr_ros.io.frames import Frame
from selavpr_ros.io.images import read_image_file
from selavpr_ros.io.poses import MAX_STAMP_NS, Pose, check_stamp_ns

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
DEFAULT_RATE_HZ = 10.0
DEFAULT_SPACING_M = 1.0

_ALIASES = {
    "file": ("file", "filename", "file_name", "image", "name", "path"),
    "timestamp": ("timestamp", "time", "stamp", "t"),
    **{k: (k,) for k in ("x", "y", "z", "qx", "qy", "qz", "qw")},
}
_ORDERS = {
    9: ("file", "timestamp", "x", "y", "z", "qx", "qy", "qz", "qw"),
    5: ("file", "timestamp", "x", "y", "z"),
    4: ("file", "x", "y", "z"),
}


def natural_key(name: str) -> list[object]:
    """Sort key that puts ``img2`` before ``img10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_images(folder: str | Path) -> list[Path]:
    """List the image files of ``folder`` (not recursive), in natural order of their names."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"image folder {folder} does not exist or is not a directory")
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise ConfigError(f"image folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return sorted(files, key=lambda p: natural_key(p.name))


@dataclass(frozen=True)
class PoseRow:
    """One row of a poses CSV: the image's timestamp (ns, None if absent) and pose."""

    stamp_ns: int | None
    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float] | None


def seconds_to_ns(text: str) -> int:
    """Decimal seconds to integer ns without float rounding (epoch times need 19 digits).

    Raises:
        ValueError: not a number, not finite, negative or beyond 2**63-1 ns.
    """
    seconds = Decimal(text.strip())
    if not seconds.is_finite():
        raise ValueError(f"timestamp {text.strip()!r} is not a finite number of seconds")
    if seconds.adjusted() > 30:  # far beyond the range; keeps the product small
        raise ValueError(f"timestamp {text.strip()!r} s is outside 0 .. {MAX_STAMP_NS} ns")
    return check_stamp_ns(int((seconds * 1_000_000_000).to_integral_value()))


def _columns(header: list[str], path: Path) -> dict[str, int]:
    names = [h.strip().lower() for h in header]
    columns: dict[str, int] = {}
    for key, aliases in _ALIASES.items():
        for i, name in enumerate(names):
            if name in aliases:
                columns[key] = i
                break
    for required in ("file", "x", "y", "z"):
        if required not in columns:
            raise ConfigError(f"{path}: no '{required}' column in header {header}")
    quat = [k for k in ("qx", "qy", "qz", "qw") if k in columns]
    if quat and len(quat) != 4:
        raise ConfigError(f"{path}: orientation needs all of qx, qy, qz, qw, found {quat}")
    return columns


def read_poses_csv(path: str | Path) -> dict[str, PoseRow]:
    """Rows of a poses CSV by image file name (see the module docstring for the format)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f) if r and not r[0].lstrip().startswith("#")]
    except OSError as err:
        raise ConfigError(f"cannot read poses file {path}: {err}") from err
    if not rows:
        raise ConfigError(f"poses file {path} is empty")
    first = [c.strip().lower() for c in rows[0]]
    if any(name in _ALIASES["file"] for name in first):
        columns, body, line0 = _columns(rows[0], path), rows[1:], 2
    elif len(rows[0]) in _ORDERS:
        columns = {k: i for i, k in enumerate(_ORDERS[len(rows[0])])}
        body, line0 = rows, 1
    else:
        raise ConfigError(
            f"{path}: {len(rows[0])} columns without a header; expected 9 (file, timestamp, x, "
            "y, z, qx, qy, qz, qw), 5 (file, timestamp, x, y, z) or 4 (file, x, y, z)"
        )
    out: dict[str, PoseRow] = {}
    for line, row in enumerate(body, start=line0):
        try:
            cells = [row[i].strip() for i in range(len(row))]
            stamp = seconds_to_ns(cells[columns["timestamp"]]) if "timestamp" in columns else None
            position = tuple(float(cells[columns[k]]) for k in ("x", "y", "z"))
            orientation = (
                tuple(float(cells[columns[k]]) for k in ("qx", "qy", "qz", "qw"))
                if "qx" in columns
                else None
            )
            # tuples of 3 and 4 values by the column names above (Pose checks the sizes)
            pose = Pose(stamp or 0, position, orientation)  # type: ignore[arg-type]
        except (IndexError, ValueError, InvalidOperation, OverflowError) as err:
            raise ConfigError(f"{path}, line {line}: cannot read {row}: {err}") from err
        name = Path(cells[columns["file"]]).name
        if name in out:
            raise ConfigError(f"{path}, line {line}: image '{name}' is listed twice")
        out[name] = PoseRow(stamp, pose.position, pose.orientation)
    return out


def pseudo_position(index: int, spacing: float) -> tuple[float, float, float]:
    """Frame ``index`` placed ``index * spacing`` metres along x."""
    return (index * spacing, 0.0, 0.0)


def sequence_stamp_ns(index: int, rate_hz: float, start_ns: int = 0) -> int:
    """Stamp of frame ``index`` of a sequence recorded at ``rate_hz`` from ``start_ns``."""
    return int(start_ns) + round(index * 1e9 / rate_hz)


@dataclass(frozen=True)
class FolderOptions:
    """How an image folder becomes a drive.

    Attributes:
        poses: a poses CSV, or None for pseudo-positions ``index * spacing`` along x.
        spacing: metres between consecutive frames for pseudo-positions.
        rate_hz: frame rate for stamps when the CSV has no timestamps (or there is no CSV).
        start_ns: stamp of the first frame in that case.
        frame_id: camera frame recorded for every image.
        depth_folder: registered depth images named like the colour images (any extension;
            16-bit PNG = 16UC1 millimetres, float32 TIFF or .npy = 32FC1 metres).
    """

    poses: Path | None = None
    spacing: float = DEFAULT_SPACING_M
    rate_hz: float = DEFAULT_RATE_HZ
    start_ns: int = 0
    frame_id: str = "camera"
    depth_folder: Path | None = None

    def __post_init__(self) -> None:
        if not 0 < self.spacing < math.inf:
            raise ConfigError(f"spacing must be positive and finite, got {self.spacing}")
        if not 0 < self.rate_hz < math.inf:
            raise ConfigError(f"rate must be positive and finite, got {self.rate_hz}")


def folder_frames(folder: str | Path, options: FolderOptions = FolderOptions()) -> Iterator[Frame]:
    """Frames of an image folder in natural name order (``source_ref`` is the file name).

    With a poses CSV, images it does not list get no pose (the builder skips and counts them);
    a CSV row naming a missing image raises ConfigError before any frame is produced.
    """
    folder = Path(folder)
    files = list_images(folder)
    rows = read_poses_csv(options.poses) if options.poses is not None else None
    if rows is not None:
        names = {p.name for p in files}
        missing = sorted(set(rows) - names, key=natural_key)
        if missing:
            raise ConfigError(
                f"{options.poses} lists {len(missing)} images not in {folder}, e.g. {missing[0]}"
            )
    source = str(folder.resolve())
    for index, file in enumerate(files):
        stamp = sequence_stamp_ns(index, options.rate_hz, options.start_ns)
        try:
            if rows is None:
                pose: Pose | None = Pose(stamp, pseudo_position(index, options.spacing))
            else:
                row = rows.get(file.name)
                if row is None:
                    pose = None
                else:
                    stamp = row.stamp_ns if row.stamp_ns is not None else stamp
                    pose = Pose(stamp, row.position, row.orientation)
            stamp = check_stamp_ns(stamp)
        except ValueError as err:  # a stamp or position beyond range from --rate, --spacing
            raise ConfigError(f"{folder}: frame {index} ({file.name}): {err}") from err
        yield Frame(
            stamp_ns=stamp,
            load=_reader(file),
            pose=pose,
            source=source,
            source_ref=file.name,
            frame_id=options.frame_id,
            depth=None if options.depth_folder is None else _depth_reader(
                options.depth_folder, file.stem),
        )


def _depth_reader(folder: Path, stem: str) -> Callable[[], tuple[np.ndarray, str]]:
    def load() -> tuple[np.ndarray, str]:
        import cv2

        from selavpr_ros.geometry.depth import DepthImageError

        found = sorted(p for p in folder.glob(f"{glob.escape(stem)}.*") if p.is_file())
        if not found:
            raise DepthImageError(f"no depth image {stem}.* in {folder}")
        path = found[0]
        if path.suffix == ".npy":
            try:
                depth = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as err:
                raise DepthImageError(f"{path} is not a readable .npy array: {err}") from err
        else:
            depth = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if depth is None:
                raise DepthImageError(f"{path} is not a readable image")
        encoding = {np.dtype(np.uint16): "16UC1", np.dtype(np.float32): "32FC1"}.get(
            depth.dtype)
        if encoding is None:
            raise DepthImageError(f"{path}: depth must be uint16 (mm) or float32 (m), got "
                                  f"{depth.dtype}")
        return depth, encoding

    return load


def _reader(path: Path) -> Callable[[], np.ndarray]:
    return lambda: read_image_file(path)
