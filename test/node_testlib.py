"""Small real maps for the node tests (random weights, clearly untrained).

The extractor is the one-block ViT-S SelaVPR at 112x112 input (8x8 patches, 29x29 local
features) of ``map_build_testlib.make_checkpoint``: the same loading and extraction code as a
real checkpoint, cheap enough for a 2-core CPU. With random weights an image is only recognised
when it is (nearly) the same image, which is exactly what these tests send.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from selavpr_ros.extractors.factory import ExtractorSpec, create_extractor
from selavpr_ros.map import PlaceInfo, PlaceMap
from selavpr_ros.map.local_format import LocalFormat


def place_images(count: int, seed: int = 0, size: tuple[int, int] = (96, 128)) -> list[np.ndarray]:
    """Distinct textured images (random coloured rectangles over smooth noise)."""
    rng = np.random.default_rng(seed)
    h, w = size
    images = []
    for _ in range(count):
        base = cv2.resize(rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8), (w, h),
                          interpolation=cv2.INTER_CUBIC)
        for _ in range(6):
            x0, y0 = int(rng.integers(0, w - 10)), int(rng.integers(0, h - 10))
            x1, y1 = x0 + int(rng.integers(8, w // 2)), y0 + int(rng.integers(8, h // 2))
            color = tuple(int(c) for c in rng.integers(0, 256, 3))
            cv2.rectangle(base, (x0, y0), (x1, y1), color, thickness=-1)
        images.append(base)
    return images


def place_pose(i: int) -> tuple[tuple[float, float, float], tuple[float, float, float, float]]:
    """Place i sits 30 m after place i-1 along x (far enough to count as distinct places)."""
    return (30.0 * i, 0.5 * i, 0.0), (0.0, 0.0, 0.0, 1.0)


def build_map(path: Path, checkpoint: Path, images: list[np.ndarray],
              local_format: str = "fp16") -> Path:
    """Build a map with one place per image, stamps 1 s apart, poses from :func:`place_pose`."""
    extractor = create_extractor(ExtractorSpec(checkpoint=str(checkpoint), batch_size=8))
    with PlaceMap.create(path, extractor,
                         local_format=LocalFormat.parse(local_format)) as place_map:
        features = extractor.extract(images)
        places = [PlaceInfo(stamp_ns=(1_000 + i) * 10**9, frame_id="camera",
                            position=place_pose(i)[0], orientation=place_pose(i)[1],
                            source="test", source_ref=f"image{i}")
                  for i in range(len(images))]
        place_map.append(features, places)
    return path


class OdometryTf:
    """A robot's odometry node in a test process: odom -> base_link from each Odometry message.

    The synthetic drives record the camera's pose as the odometry of ``base_link``, so
    base_link -> camera is published once as an identity static transform.
    """

    def __init__(self, node: Any, odom_topic: str = "/odom") -> None:
        from geometry_msgs.msg import TransformStamped
        from nav_msgs.msg import Odometry
        from tf2_ros import StaticTransformBroadcaster, TransformBroadcaster

        self._broadcaster = TransformBroadcaster(node)
        static = TransformStamped(child_frame_id="camera")
        static.header.frame_id = "base_link"
        static.transform.rotation.w = 1.0
        self._static = StaticTransformBroadcaster(node)
        self._static.sendTransform(static)
        self._sub = node.create_subscription(Odometry, odom_topic, self._relay, 100)

    def _relay(self, msg: Any) -> None:
        from geometry_msgs.msg import TransformStamped

        t = TransformStamped(header=msg.header, child_frame_id="base_link")
        p = msg.pose.pose
        t.transform.translation.x, t.transform.translation.y = p.position.x, p.position.y
        t.transform.translation.z = p.position.z
        t.transform.rotation = p.orientation
        self._broadcaster.sendTransform(t)


def revisit_bag_and_map(root: Path, frames: int, rate: float) -> tuple[Path, Path]:
    """Render the revisit drive with depth into a bag and map its first pass (classical).

    The map keeps the drive's 'odom' frame: a node that publishes map -> odom from it is given
    ``map_frame`` (the map's coordinates become the robot's map frame).
    """
    from selavpr_ros.cli import main as cli

    bag, place_map = root / "drive", root / "map.selavpr"
    assert cli(["make-revisit", str(bag), "--frames", str(frames), "--rate", str(rate),
                "--depth"]) == 0
    assert cli(["build-map", str(place_map), "--bag", str(bag), "--image-topic",
                "/camera/image_raw", "--depth-topic", "/camera/depth/image_raw",
                "--extractor", "classical", "--min-distance", "0", "--limit", str(frames),
                "--no-progress"]) == 0
    return bag, place_map


# a sim-time consumer's TF buffer is cleared by its own /clock jump, which may come after the
# first transforms of a new replay reached it: LiveConsumer skips a replay's first second
SETTLE_NS = 10**9


def stamp_ns(stamp: Any) -> int:
    return stamp.sec * 10**9 + stamp.nanosec


class LiveConsumer:
    """What a robot's other nodes see of the localizer under sim time, on a test's probe node.

    Answers, poses, map -> odom samples (with the /clock at their arrival) and diagnostics
    levels; odometry is relayed to TF (:class:`OdometryTf`) and a TF buffer listens as Nav2's
    does under sim time: it is cleared when /clock jumps back.
    """

    def __init__(self, probe: Any) -> None:
        import tf2_ros
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseWithCovarianceStamped
        from rclpy.duration import Duration
        from rclpy.parameter import Parameter
        from rosgraph_msgs.msg import Clock
        from tf2_msgs.msg import TFMessage

        from selavpr_msgs.msg import PlaceRecognition

        node = probe.node
        node.set_parameters([Parameter("use_sim_time", Parameter.Type.BOOL, True)])
        self.lock = threading.Lock()
        self.answers: list[Any] = []
        self.poses: list[Any] = []
        self.map_odom: list[tuple[float, int, int]] = []  # (arrival, stamp, clock at arrival)
        self.diagnostics: list[tuple[float, dict[str, int]]] = []
        self.clock_ns = 0
        self.odometry = OdometryTf(node)
        # lookups are made after each replay: keep the whole drive
        self.buffer = tf2_ros.Buffer(cache_time=Duration(seconds=600), node=node)
        self.listener = tf2_ros.TransformListener(self.buffer, node)
        node.create_subscription(PlaceRecognition, "/place_recognition",
                                 self._keep(self.answers), 100)
        node.create_subscription(PoseWithCovarianceStamped, "/pose", self._keep(self.poses), 100)
        node.create_subscription(TFMessage, "/tf", self._on_tf, 100)
        node.create_subscription(Clock, "/clock", self._on_clock, 100)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 100)

    def _keep(self, into: list[Any]) -> Any:
        def store(msg: Any) -> None:
            with self.lock:
                into.append(msg)
        return store

    def _on_clock(self, msg: Any) -> None:
        with self.lock:
            self.clock_ns = stamp_ns(msg.clock)

    def _on_tf(self, msg: Any) -> None:
        for t in msg.transforms:
            if t.header.frame_id == "map" and t.child_frame_id == "odom":
                with self.lock:
                    self.map_odom.append((time.monotonic(), stamp_ns(t.header.stamp),
                                          self.clock_ns))

    def _on_diagnostics(self, msg: Any) -> None:
        levels = {s.name: int.from_bytes(s.level, "little") if isinstance(s.level, bytes)
                  else int(s.level) for s in msg.status if s.name.startswith("localizer_node")}
        if levels:
            with self.lock:
                self.diagnostics.append((time.monotonic(), levels))

    def counts(self) -> tuple[int, int, int]:
        with self.lock:
            return len(self.answers), len(self.poses), len(self.map_odom)

    def lookups(self, since: int) -> tuple[int, list[str]]:
        """Look up map -> base_link at answers[since:]'s stamps once map -> odom was known."""
        from rclpy.time import Time

        with self.lock:
            stamps = [stamp_ns(a.header.stamp) for a in self.answers[since:]]
            samples = [stamp for _, stamp, _ in self.map_odom]
        first = min((s for s in samples if s >= min(stamps)), default=None)
        assert first is not None, "no map -> odom during the replay"
        first = max(first, min(stamps) + SETTLE_NS)
        ok, failed = 0, []
        for stamp in (s for s in stamps if s >= first):
            try:
                self.buffer.lookup_transform("map", "base_link", Time(nanoseconds=stamp))
                ok += 1
            except Exception as err:  # noqa: BLE001 - tf2 raises several unrelated types
                failed.append(f"{stamp}: {err}")
        return ok, failed
