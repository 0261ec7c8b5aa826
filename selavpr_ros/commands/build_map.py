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
import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from selavpr_ros.commands.extractor_options import add_extractor_arguments, spec_from_args
from selavpr_ros.commands.source_options import add_source_arguments, source_from_args
from selavpr_ros.errors import ConfigError, MapFormatError
from selavpr_ros.extractors.factory import ExtractorSpec
from selavpr_ros.io.sources import open_frames

if TYPE_CHECKING:
    from selavpr_ros.extractors.base import Extractor
    from selavpr_ros.map import PlaceMap

log = logging.getLogger(__name__)


def _off_or_float(text: str) -> float | None:
    if text.strip().lower() in ("off", "none", "-1"):
        return None
    try:
        return float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a number or 'off', got '{text}'") from err


def register(subparsers: argparse._SubParsersAction) -> None:
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
    add_source_arguments(parser, "source (one of --bag or --images)")
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
    out.add_argument("--camera-info", metavar="YAML",
                     help="ROS camera-calibration YAML of the images (stored in the map for "
                          "query poses; a bag's CameraInfo topic is used without it)")
    out.add_argument("--index", default="flat",
                     choices=("flat", "ivf", "ivfpq", "ivfsq8", "hnsw", "pqfs", "auto"),
                     help="faiss index of a new map (default flat); auto: chosen and tuned "
                          "from the map's own descriptors when the build ends")
    out.add_argument("--target-recall", type=float, default=0.95, metavar="R",
                     help="recall@100 against exact search that --index auto tunes for "
                          "(default 0.95)")
    out.add_argument("--local-format", default="fp16", metavar="FMT",
                     help="local features of a new map: fp16 (default, lossless), int8, int4, "
                          "pca64, pca64-int8, pca64-int4 (any pcaN)")
    out.add_argument("--local-stride", type=int, default=1, metavar="N",
                     help="keep every N-th row and column of a dense local grid (default 1)")
    out.add_argument("--local-codec-from", metavar="MAP",
                     help="reuse MAP's PCA projection (maps to be merged need the same one)")
    out.add_argument("--json", action="store_true", help="print the summary as JSON")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_extractor_arguments(parser)
    parser.set_defaults(handler=run)


def _sample_images(args: argparse.Namespace, count: int) -> list[np.ndarray]:
    """Up to ``count`` decodable images spread evenly over the source (for fitting)."""
    from selavpr_ros.errors import ImageDecodeError

    with open_frames(source_from_args(args)) as opened:
        total = opened.total or 0
        wanted = set(np.linspace(0, max(total - 1, 0), num=min(count, total)).round().astype(int))
        images = []
        for i, frame in enumerate(opened.frames):
            if i in wanted:
                try:
                    images.append(frame.load())
                except ImageDecodeError:
                    continue
        return images


def _open_map(args: argparse.Namespace, spec: ExtractorSpec,
              pose_frame: str) -> tuple[PlaceMap, Extractor]:
    """Return the map to write and its extractor (restored, or fitted for a new map)."""
    from selavpr_ros.map.local_format import LocalFormat
    from selavpr_ros.mapping.open_map import open_or_create

    def sample(count: int) -> list[np.ndarray]:
        images = _sample_images(args, count)
        if not images:
            raise ConfigError(f"no image of {args.bag or args.images} could be decoded; the "
                              "extractor needs images of the route to fit")
        log.info("fitting the extractor on %d images of the route", len(images))
        return images

    place_map, extractor = open_or_create(
        Path(args.map), spec, append=args.append, index=args.index,
        map_frame=args.map_frame or pose_frame or "map", fit_sample=sample,
        local_format=LocalFormat.parse(args.local_format, args.local_stride),
        local_codec_from=Path(args.local_codec_from) if args.local_codec_from else None)
    frame = args.map_frame or pose_frame
    if frame and frame != place_map.map_frame:
        log.warning("poses are in frame '%s' but map %s is in '%s'", frame, args.map,
                    place_map.map_frame)
    if place_map.map_frame == "odom":
        log.warning("building map %s in 'odom': odometry drifts and restarts at zero, so its "
                    "poses do not hold in a later session; record poses in 'map' (SLAM or "
                    "localisation) for re-localisation", args.map)
    return place_map, extractor


def _places_in(path: Path) -> int:
    """Places committed to the map at ``path``; 0 when it has no readable manifest."""
    from selavpr_ros.map.manifest import read_manifest

    try:
        return read_manifest(path).count
    except MapFormatError:
        return 0


def run(args: argparse.Namespace) -> int:
    from selavpr_ros.geometry.camera import CameraModel
    from selavpr_ros.map.fsutil import refuse_writing_onto
    from selavpr_ros.mapping.builder import BuildConfig, MapBuilder, build
    from selavpr_ros.mapping.keyframes import KeyframeConfig

    if args.local_codec_from:  # read while the map is written: never the same map
        refuse_writing_onto(args.map, {"--local-codec-from map": args.local_codec_from},
                            "build-map")
    spec = spec_from_args(args)
    config = BuildConfig(
        keyframes=KeyframeConfig(args.min_distance, args.min_rotation, args.min_interval),
        batch_size=spec.batch_size,
        commit_every=args.commit_every,
    )
    path = Path(args.map)
    new_directory = not path.exists()
    with open_frames(source_from_args(args)) as opened:
        try:
            place_map, extractor = _open_map(args, spec, opened.pose_frame)
            with place_map:
                camera = (CameraModel.from_yaml(args.camera_info) if args.camera_info
                          else opened.camera)
                if camera is not None:
                    place_map.set_camera(camera)
                elif args.depth_folder or args.depth_topic:
                    raise ConfigError("depth needs the camera model: give --camera-info (or "
                                      "a CameraInfo topic in the bag)")
                builder = MapBuilder(place_map, extractor, config)
                summary = build(opened.frames, builder, progress=not args.no_progress,
                                total=opened.total)
                if args.index == "auto" and not summary.interrupted and place_map.count:
                    place_map.tune_index(args.target_recall)
        except Exception:
            # a failed first build leaves no empty map behind that would block a retry
            if new_directory and path.is_dir() and _places_in(path) == 0:
                shutil.rmtree(path, ignore_errors=True)
            raise
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        for line in summary.lines():
            print(line)
    if summary.interrupted:
        print(f"re-run with --append to continue building {args.map}")
        return 130
    return 0
