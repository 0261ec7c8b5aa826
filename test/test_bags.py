"""Reading frames and poses from real rosbag2 files (sqlite3 and mcap) written in the test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from map_build_testlib import (
    assert_same_rotation,
    frame_image,
    true_pose,
    write_drive_bag,
)
from selavpr_ros.errors import BagReadError, ConfigError, ImageDecodeError
from selavpr_ros.io.bags import BagFrames, BagWriter

TOL_NS = 50_000_000  # odometry at 25 Hz: neighbours are at most 40 ms away


@pytest.mark.parametrize("storage, image", [("sqlite3", "raw"), ("mcap", "png"),
                                            ("mcap", "raw"), ("sqlite3", "jpeg")])
def test_frames_get_the_pose_interpolated_at_their_stamp(tmp_path: Path, storage: str,
                                                         image: str) -> None:
    bag = tmp_path / "drive"
    stamps = write_drive_bag(bag, 12, storage=storage, image=image)
    with BagFrames(bag) as reader:
        poses, frame_id = reader.read_poses("/odom")
        assert frame_id == "odom" and len(poses) > 12 * 2  # 25 Hz odometry vs 10 Hz images
        frames = list(reader.frames(None, poses, TOL_NS))  # the bag's only image topic
    assert [f.stamp_ns for f in frames] == stamps
    assert [f.source_ref for f in frames] == [str(i) for i in range(12)]
    assert all(f.frame_id == "cam" for f in frames)
    for i, frame in enumerate(frames):
        position, orientation = true_pose(stamps[i])
        assert frame.pose is not None
        assert np.allclose(frame.pose.position, position, atol=1e-9)
        assert_same_rotation(frame.pose.orientation, orientation, 1e-12)
        rgb = frame.load()
        if image == "jpeg":
            assert np.abs(rgb.astype(int) - frame_image(i)).mean() < 12
        else:
            assert np.array_equal(rgb, frame_image(i))


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16"])
def test_raw_encodings_decode_to_the_same_rgb(tmp_path: Path, encoding: str) -> None:
    bag = tmp_path / "drive"
    write_drive_bag(bag, 2, encoding=encoding)
    with BagFrames(bag) as reader:
        poses, _ = reader.read_poses()
        rgb = next(iter(reader.frames("/camera/image_raw", poses, TOL_NS))).load()
    source = frame_image(0)
    expected = np.repeat(source[:, :, :1], 3, axis=2) if encoding.startswith("mono") else source
    assert np.array_equal(rgb, expected)


@pytest.mark.parametrize("kind", ["pose", "pose_cov"])
def test_pose_stamped_topics_are_pose_sources(tmp_path: Path, kind: str) -> None:
    bag = tmp_path / "drive"
    stamps = write_drive_bag(bag, 3, pose_kind=kind, pose_topic="/robot_pose")
    with BagFrames(bag) as reader:
        poses, _ = reader.read_poses(None)
        frames = list(reader.frames("/camera/image_raw", poses, TOL_NS))
    assert np.allclose(frames[2].pose.position, true_pose(stamps[2])[0], atol=1e-9)


def test_frames_without_poses_around_them_get_none(tmp_path: Path) -> None:
    bag = tmp_path / "drive"
    # odometry at 0, 200, 400 ms; images at 13, 113, ..., 513 ms
    stamps = write_drive_bag(bag, 6, odom_rate=5.0, odom_extra_s=0.0)
    with BagFrames(bag) as reader:
        poses, _ = reader.read_poses()
        tight = [f.pose for f in reader.frames(None, poses, 100_000_000)]
        loose = [f.pose for f in reader.frames(None, poses, 250_000_000)]
    assert sum(p is not None for p in tight) == 0
    # with 250 ms, images are bracketed up to the last odometry sample, none after it
    assert [p is not None for p in loose] == [True] * 4 + [False] * 2
    assert np.allclose(loose[3].position, true_pose(stamps[3])[0], atol=1e-9)


def test_missing_topic_names_the_topics_of_the_bag(tmp_path: Path) -> None:
    bag = tmp_path / "drive"
    write_drive_bag(bag, 2)
    with BagFrames(bag) as reader:
        with pytest.raises(BagReadError, match=r"no image topic '/cam'.*/camera/image_raw "
                                               r"\[sensor_msgs/msg/Image\].*/odom"):
            reader.topic_of("/cam", ("sensor_msgs/msg/Image",), "image")
        with pytest.raises(BagReadError, match="'/odom' .* is nav_msgs/msg/Odometry, not a"):
            list(reader.frames("/odom", reader.read_poses()[0], TOL_NS))
        with pytest.raises(BagReadError, match="'/camera/image_raw' .* not a pose topic"):
            reader.read_poses("/camera/image_raw")
    with pytest.raises(BagReadError, match="does not exist"):
        BagFrames(tmp_path / "nothing")
    (tmp_path / "junk").mkdir()
    with pytest.raises(BagReadError, match="cannot read bag"):
        BagFrames(tmp_path / "junk")


def test_undecodable_image_raises_image_decode_error(tmp_path: Path) -> None:
    bag = tmp_path / "drive"
    write_drive_bag(bag, 3, image="png", corrupt=(1,))
    with BagFrames(bag) as reader:
        frames = list(reader.frames(None, reader.read_poses()[0], TOL_NS))
    frames[0].load()
    with pytest.raises(ImageDecodeError):
        frames[1].load()


def test_writer_refuses_existing_output_and_unknown_storage(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="storage"):
        BagWriter(tmp_path / "x", "rosbag1")
    (tmp_path / "exists").mkdir()
    with pytest.raises(ConfigError, match="already exists"):
        BagWriter(tmp_path / "exists")
