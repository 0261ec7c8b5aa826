r"""``selavpr build-map MAP``: build or extend a place map from a rosbag2 or an image folder.

Examples::

    selavpr build-map campus.selavpr --bag drive1 --image-topic /camera/image_raw \
        --pose-topic /odom --checkpoint SelaVPR_msls.safetensors
    selavpr build-map gp.selavpr --images gardens_point_walking/day_left --spacing 1 \
        --min-distance 0 --checkpoint SelaVPR_msls.safetensors
    selavpr build-map campus.selavpr --append --bag drive2 ...   # extend, or resume after Ctrl-C
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from selavpr_ros.errors import ConfigError, MapFormatError
from selavpr_ros.extractors.factory import (
    ExtractorSpec,
    add_extractor_arguments,
    spec_from_args,
)
from selavpr_ros.io.folders import DEFAULT_RATE_HZ, DEFAULT_SPACING_M
from selavpr_ros.io.frames import Frame

if TYPE_CHECKING:
    from selavpr_ros.extractor import Extractor
    from selavpr_ros.map import PlaceMap

log = logging.getLogger(__name__)


def _off_or_float(text: str) -> float | None:
    if text.strip().lower() in ("off", "none", "-1"):
        return None
    try:
        return float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a number or 'off', got '{text}'") from err


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "build-map",
        help="build or extend a place map from a rosbag2 or an image folder",
        description=(
            "Select keyframes from a recorded drive (a rosbag2 with an image and a pose topic, "
            "or an image folder with an optional poses CSV), extract their features and write "
            "them to a place map. Commits are atomic: an interrupted build keeps its last "
            "commit, and re-running with --append resumes it."
        ),
    )
    parser.add_argument("map", metavar="MAP", help="place map directory to create or extend")
    parser.add_argument("--append", action="store_true",
                        help="extend MAP if it exists (also resumes an interrupted build)")
    src = parser.add_argument_group("source (one of --bag or --images)")
    src.add_argument("--bag", help="rosbag2 directory (sqlite3 or mcap)")
    src.add_argument("--image-topic",
                     help="sensor_msgs/Image or CompressedImage topic (default: the only one)")
    src.add_argument("--pose-topic", help="Odometry, PoseStamped or PoseWithCovarianceStamped "
                                          "topic (default: the only one)")
    src.add_argument("--pose-tolerance", type=float, default=0.1, metavar="S",
                     help="max seconds between an image and the poses around it (default 0.1)")
    src.add_argument("--images", help="image folder (natural file-name order)")
    src.add_argument("--poses", help="CSV: file, timestamp, x, y, z[, qx, qy, qz, qw]; without "
                                     "it frames get pseudo-positions along x")
    src.add_argument("--spacing", type=float, default=DEFAULT_SPACING_M, metavar="M",
                     help=f"metres between pseudo-positions (default {DEFAULT_SPACING_M})")
    src.add_argument("--rate", type=float, default=DEFAULT_RATE_HZ, metavar="HZ",
                     help="frame rate for stamps of a folder without timestamps "
                          f"(default {DEFAULT_RATE_HZ})")
    src.add_argument("--frame-id", default="camera", help="camera frame of folder images")
    src.add_argument("--stride", type=int, default=1, metavar="N",
                     help="use every N-th frame of the source")
    src.add_argument("--limit", type=int, default=0, metavar="N",
                     help="stop after N frames of the source (after --stride)")
    kf = parser.add_argument_group("keyframes (a frame is a new place if ANY is met; 'off')")
    kf.add_argument("--min-distance", type=_off_or_float, default=0.5, metavar="M",
                    help="metres moved since the last place (default 0.5; 0 keeps every frame)")
    kf.add_argument("--min-rotation", type=_off_or_float, default=15.0, metavar="DEG",
                    help="degrees turned since the last place (default 15)")
    kf.add_argument("--min-interval", type=_off_or_float, default=None, metavar="S",
                    help="seconds since the last place (default off)")
    out = parser.add_argument_group("map")
    out.add_argument("--commit-every", type=int, default=100, metavar="N",
                     help="places per atomic commit (default 100)")
    out.add_argument("--map-frame", default="",
                     help="frame of the map's poses (default: the pose topic's frame, or map)")
    out.add_argument("--index", default="flat",
                     choices=("flat", "ivf", "ivfpq", "ivfsq8", "hnsw", "auto"),
                     help="faiss index of a new map (default flat); auto: chosen and tuned "
                          "from the map's own descriptors when the build ends")
    out.add_argument("--target-recall", type=float, default=0.95, metavar="R",
                     help="recall@100 against exact search that --index auto tunes for "
                          "(default 0.95)")
    out.add_argument("--local-format", default="fp16", metavar="FMT",
                     help="local features of a new map: fp16 (default, lossless), int8, "
                          "pca64, pca64-int8 (any pcaN)")
    out.add_argument("--local-stride", type=int, default=1, metavar="N",
                     help="keep every N-th row and column of a dense local grid (default 1)")
    out.add_argument("--local-codec-from", metavar="MAP",
                     help="reuse MAP's PCA projection (maps to be merged need the same one)")
    out.add_argument("--json", action="store_true", help="print the summary as JSON")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_extractor_arguments(parser)
    parser.set_defaults(handler=run)


def _frames(args: argparse.Namespace) -> tuple[Iterator[Frame], int | None, str, list[object]]:
    """(frames, their count if known, the poses' frame id, things to close)."""
    if bool(args.bag) == bool(args.images):
        raise ConfigError("give exactly one source: --bag BAG or --images FOLDER")
    if args.stride < 1:
        raise ConfigError(f"--stride must be at least 1, got {args.stride}")
    if args.limit < 0:
        raise ConfigError(f"--limit must be >= 0, got {args.limit}")
    if args.bag:
        from selavpr_ros.io.bags import IMAGE_TYPES, BagFrames

        if not args.pose_tolerance >= 0:
            raise ConfigError(f"--pose-tolerance must be >= 0, got {args.pose_tolerance}")
        bag = BagFrames(args.bag)
        try:
            image_topic, _ = bag.topic_of(args.image_topic, IMAGE_TYPES, "image")
            poses, pose_frame = bag.read_poses(args.pose_topic)
        except BaseException:
            bag.close()
            raise
        if len(poses) == 0:
            bag.close()
            raise ConfigError(f"the pose topic of {args.bag} has no usable poses")
        frames: Iterator[Frame] = bag.frames(image_topic, poses,
                                             round(args.pose_tolerance * 1e9))
        total: int | None = bag.count(image_topic)
        closers: list[object] = [bag]
    else:
        from selavpr_ros.io.folders import FolderOptions, folder_frames, list_images

        if args.image_topic or args.pose_topic:
            raise ConfigError("--image-topic and --pose-topic are for --bag sources")
        options = FolderOptions(poses=Path(args.poses) if args.poses else None,
                                spacing=args.spacing, rate_hz=args.rate, frame_id=args.frame_id)
        frames = folder_frames(args.images, options)
        total = len(list_images(args.images))
        pose_frame, closers = "", []
    if args.stride > 1:
        frames = itertools.islice(frames, 0, None, args.stride)
        total = -(-total // args.stride) if total is not None else None
    if args.limit:
        frames = itertools.islice(frames, args.limit)
        total = min(total, args.limit) if total is not None else args.limit
    return frames, total, pose_frame, closers


def _sample_images(args: argparse.Namespace, count: int) -> list[np.ndarray]:
    """Up to ``count`` decodable images spread evenly over the source (for fitting)."""
    from selavpr_ros.errors import ImageDecodeError

    frames, total, _, closers = _frames(args)
    try:
        total = total or 0
        wanted = set(np.linspace(0, max(total - 1, 0), num=min(count, total)).round().astype(int))
        images = []
        for i, frame in enumerate(frames):
            if i in wanted:
                try:
                    images.append(frame.load())
                except ImageDecodeError:
                    continue
        return images
    finally:
        for closer in closers:
            closer.close()  # type: ignore[attr-defined]


def _open_map(args: argparse.Namespace, spec: ExtractorSpec,
              pose_frame: str) -> tuple[PlaceMap, Extractor]:
    """Open the map to write and its extractor (restored from the map, or fitted if new)."""
    from selavpr_ros.extractors.factory import create_extractor
    from selavpr_ros.map import IndexSpec, PlaceMap, check_extractor
    from selavpr_ros.map.local_format import LocalFormat

    path = Path(args.map)
    exists = (path / "manifest.json").is_file()
    if exists and not args.append:
        raise MapFormatError(f"map {path} exists; pass --append to extend it")
    if exists:
        place_map = PlaceMap.open(path, writable=True)
        try:
            extractor = create_extractor(spec, place_map)
            check_extractor(place_map.extractor_info, extractor.info, path)
        except BaseException:
            place_map.close()
            raise
        frame = args.map_frame or pose_frame
        if frame and frame != place_map.map_frame:
            log.warning("poses are in frame '%s' but map %s is in '%s'", frame, path,
                        place_map.map_frame)
        return place_map, extractor
    local_format = LocalFormat.parse(args.local_format, args.local_stride)
    codec_state = None
    if args.local_codec_from:
        with PlaceMap.open(args.local_codec_from) as source:
            if source.local_format != local_format:
                raise ConfigError(f"--local-codec-from {args.local_codec_from} has local format "
                                  f"{source.local_format.name}, not {local_format.name}")
            codec_state = source.codec.state()
    extractor = create_extractor(spec)
    if extractor.needs_fit:
        sample = _sample_images(args, extractor.fit_sample_size)
        if not sample:
            raise ConfigError(
                f"no image of {args.bag or args.images} could be decoded; the {spec.kind} "
                "extractor needs images of the route to fit"
            )
        log.info("fitting the %s extractor on %d images of the route", spec.kind, len(sample))
        extractor = extractor.fit(sample)
    kind = "flat" if args.index == "auto" else args.index  # auto: tuned when the build ends
    place_map = PlaceMap.create(path, extractor, index=IndexSpec(kind=kind),
                                map_frame=args.map_frame or pose_frame or "map",
                                local_format=local_format, local_codec_state=codec_state)
    return place_map, extractor


def _places_in(path: Path) -> int:
    """Places committed to the map at ``path``; 0 when it has no readable manifest."""
    from selavpr_ros.map.manifest import read_manifest

    try:
        return read_manifest(path).count
    except MapFormatError:
        return 0


def run(args: argparse.Namespace) -> int:
    from selavpr_ros.mapping.builder import BuildConfig, MapBuilder, build
    from selavpr_ros.mapping.keyframes import KeyframeConfig

    spec = spec_from_args(args)
    config = BuildConfig(
        keyframes=KeyframeConfig(args.min_distance, args.min_rotation, args.min_interval),
        batch_size=spec.batch_size,
        commit_every=args.commit_every,
    )
    frames, total, pose_frame, closers = _frames(args)
    path = Path(args.map)
    new_directory = not path.exists()
    try:
        place_map, extractor = _open_map(args, spec, pose_frame)
        with place_map:
            builder = MapBuilder(place_map, extractor, config)
            summary = build(frames, builder, progress=not args.no_progress, total=total)
            if args.index == "auto" and not summary.interrupted and place_map.count:
                place_map.tune_index(args.target_recall)
    except Exception:
        # a failed first build leaves no empty map behind that would block a retry
        if new_directory and path.is_dir() and _places_in(path) == 0:
            shutil.rmtree(path, ignore_errors=True)
        raise
    finally:
        for closer in closers:
            closer.close()  # type: ignore[attr-defined]
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        for line in summary.lines():
            print(line)
    if summary.interrupted:
        print(f"re-run with --append to continue building {args.map}")
        return 130
    return 0
