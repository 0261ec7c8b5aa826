"""``selavpr make-bag``: folders become bags that rosbags reads back with the right content."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

from map_build_testlib import frame_image
from selavpr_ros.cli import main as cli

TS = get_typestore(Stores.ROS2_JAZZY)


def write_folder(folder: Path, count: int) -> Path:
    folder.mkdir()
    for i in range(count):
        cv2.imwrite(str(folder / f"f{i}.png"), frame_image(i)[:, :, ::-1])
    return folder


def read_bag(path: Path) -> dict[str, list[tuple[int, object]]]:
    out: dict[str, list[tuple[int, object]]] = {}
    with AnyReader([path], default_typestore=TS) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        for conn, stamp, raw in reader.messages():
            out.setdefault(conn.topic, []).append((stamp, reader.deserialize(raw, conn.msgtype)))
    out["types"] = types  # type: ignore[assignment]
    return out


def header_ns(msg: object) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec  # type: ignore[attr-defined]


@pytest.mark.parametrize("storage, encoding", [("sqlite3", "bgr8"), ("mcap", "rgb8")])
def test_raw_bag_without_poses(tmp_path: Path, storage: str, encoding: str) -> None:
    folder = write_folder(tmp_path / "imgs", 5)
    assert cli(["make-bag", str(folder), str(tmp_path / "bag"), "--storage", storage,
                "--encoding", encoding, "--rate", "4", "--start", "1700000000.5",
                "--spacing", "2"]) == 0
    assert (tmp_path / "bag" / "metadata.yaml").read_text().count(f"storage_identifier: "
                                                                  f"{storage}") == 1
    bag = read_bag(tmp_path / "bag")
    assert bag["types"] == {"/camera/image_raw": "sensor_msgs/msg/Image",
                            "/odom": "nav_msgs/msg/Odometry"}
    expected = [1_700_000_000_500_000_000 + i * 250_000_000 for i in range(5)]
    images, odom = bag["/camera/image_raw"], bag["/odom"]
    assert [s for s, _ in images] == [header_ns(m) for _, m in images] == expected
    assert [s for s, _ in odom] == [header_ns(m) for _, m in odom] == expected
    for i, (_, msg) in enumerate(images):
        assert msg.encoding == encoding and msg.header.frame_id == "camera"
        pixels = msg.data.reshape(msg.height, msg.width, 3)
        rgb = pixels[:, :, ::-1] if encoding == "bgr8" else pixels
        assert np.array_equal(rgb, frame_image(i))
    for i, (_, msg) in enumerate(odom):
        assert msg.header.frame_id == "odom" and msg.child_frame_id == "base_link"
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        assert (p.x, p.y, p.z) == (2.0 * i, 0.0, 0.0)
        assert (q.x, q.y, q.z, q.w) == (0.0, 0.0, 0.0, 1.0)


def test_compressed_bag_with_poses_csv(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "imgs", 3)
    (tmp_path / "p.csv").write_text("file,timestamp,x,y,z,qx,qy,qz,qw\n"
                                    "f0.png,10.0,1,2,3,0,0,0,1\n"
                                    "f2.png,10.25,4,5,6,0,0,1,0\n")
    assert cli(["make-bag", str(folder), str(tmp_path / "bag"), "--poses",
                str(tmp_path / "p.csv"), "--format", "compressed", "--compression", "png",
                "--odom-topic", "/robot/odom", "--camera-frame", "cam0"]) == 0
    bag = read_bag(tmp_path / "bag")
    assert bag["types"] == {"/camera/image_raw/compressed": "sensor_msgs/msg/CompressedImage",
                            "/robot/odom": "nav_msgs/msg/Odometry"}
    images, odom = bag["/camera/image_raw/compressed"], bag["/robot/odom"]
    assert [s for s, _ in images] == [s for s, _ in odom] == [10 * 10**9, 10_250_000_000]
    decoded = cv2.imdecode(images[1][1].data, cv2.IMREAD_COLOR)[:, :, ::-1]
    assert np.array_equal(decoded, frame_image(2))  # f1.png has no pose and is left out
    assert images[1][1].format == "png" and images[1][1].header.frame_id == "cam0"
    p, q = odom[1][1].pose.pose.position, odom[1][1].pose.pose.orientation
    assert (p.x, p.y, p.z, q.z, q.w) == (4.0, 5.0, 6.0, 1.0, 0.0)


def test_made_bag_builds_the_same_map_as_the_folder(tmp_path: Path) -> None:
    from map_build_testlib import make_checkpoint
    from selavpr_ros.map import PlaceMap

    ckpt = make_checkpoint(tmp_path / "tiny.safetensors")
    folder = write_folder(tmp_path / "imgs", 6)
    assert cli(["make-bag", str(folder), str(tmp_path / "bag")]) == 0
    common = ["--min-distance", "2", "--checkpoint", str(ckpt), "--no-progress"]
    assert cli(["build-map", str(tmp_path / "a"), "--images", str(folder), *common]) == 0
    assert cli(["build-map", str(tmp_path / "b"), "--bag", str(tmp_path / "bag"), *common]) == 0
    with PlaceMap.open(tmp_path / "a") as a, PlaceMap.open(tmp_path / "b") as b:
        assert a.count == b.count == 3
        pa, pb = a.places(range(3)), b.places(range(3))
        assert [p.position for p in pa] == [p.position for p in pb] == [
            (0.0, 0, 0), (2.0, 0, 0), (4.0, 0, 0)]
        assert [p.stamp_ns for p in pa] == [p.stamp_ns for p in pb]
        assert np.allclose(a.global_descriptors(), b.global_descriptors(), atol=1e-6)


def test_existing_output_is_refused(tmp_path: Path, capsys) -> None:
    folder = write_folder(tmp_path / "imgs", 1)
    (tmp_path / "bag").mkdir()
    assert cli(["make-bag", str(folder), str(tmp_path / "bag")]) == 2
    assert "already exists" in capsys.readouterr().err
