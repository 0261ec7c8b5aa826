"""``selavpr build-map`` from real bags: places, interpolated poses, keyframes, append, crashes.

Expected poses come from the analytic trajectory in map_build_testlib, expected features from
running the extractor directly on the original images.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from map_build_testlib import (
    VELOCITY,
    assert_same_rotation,
    frame_image,
    make_checkpoint,
    true_pose,
    write_drive_bag,
)
from selavpr_ros.cli import main as cli
from selavpr_ros.extractors.selavpr import SelaVPRExtractor
from selavpr_ros.map import PlaceMap

SPEED = math.hypot(*VELOCITY)  # 0.854 m/s: 0.0854 m between images at 10 Hz
assert 0.0854 < SPEED / 10 < 0.0855  # the keyframe expectations below rely on it


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture(scope="module")
def extractor(checkpoint: Path) -> SelaVPRExtractor:
    return SelaVPRExtractor.from_checkpoint(checkpoint)


def build(map_path: Path, checkpoint: Path, *args: str) -> int:
    return cli(["build-map", str(map_path), "--checkpoint", str(checkpoint), "--no-progress",
                *args])


def read_map(path: Path) -> tuple[list, np.ndarray, np.ndarray]:
    with PlaceMap.open(path, verify=True) as m:
        feats = m.features(range(m.count))
        return m.places(range(m.count)), feats.global_desc.copy(), feats.local.copy()


@pytest.mark.parametrize("storage, image", [("sqlite3", "raw"), ("mcap", "png")])
def test_bag_build_has_the_right_places_poses_and_features(
        tmp_path: Path, checkpoint: Path, extractor: SelaVPRExtractor, storage: str,
        image: str) -> None:
    bag = tmp_path / "drive"
    stamps = write_drive_bag(bag, 14, storage=storage, image=image)
    # 0.0854 m per image: min-distance 0.3 keeps every 4th image (0.342 m); rotation: 0.4 rad/s
    # is 2.3 deg per image, so 10 deg fires after 5 images -- distance fires first
    rc = build(tmp_path / "m", checkpoint, "--bag", str(bag), "--image-topic",
               "/camera/image_raw", "--pose-topic",
               "/odom", "--min-distance", "0.3", "--min-rotation", "10", "--pose-tolerance",
               "0.05", "--batch-size", "3")
    assert rc == 0
    places, glob, local = read_map(tmp_path / "m")
    kept = [0, 4, 8, 12]
    assert [p.source_ref for p in places] == [str(i) for i in kept]
    assert [p.stamp_ns for p in places] == [stamps[i] for i in kept]
    for place, i in zip(places, kept, strict=True):
        position, orientation = true_pose(stamps[i])
        assert np.allclose(place.position, position, atol=1e-9)
        assert_same_rotation(place.orientation, orientation, 1e-12)
        assert place.frame_id == "cam" and place.source.endswith("drive#/camera/image_raw")
    expected = extractor.extract([frame_image(i) for i in kept])
    assert np.allclose(glob, expected.global_desc, atol=1e-5)
    assert np.allclose(local.astype(np.float32), expected.local, atol=2e-3)
    with PlaceMap.open(tmp_path / "m") as m:
        assert m.map_frame == "odom"


def test_rotation_and_interval_rules_on_a_bag(tmp_path: Path, checkpoint: Path) -> None:
    bag = tmp_path / "drive"
    write_drive_bag(bag, 14)
    assert build(tmp_path / "rot", checkpoint, "--bag", str(bag), "--min-distance", "off",
                 "--min-rotation", "10") == 0
    # 2.29 deg per image: 10 deg after 5 images
    assert [p.source_ref for p in read_map(tmp_path / "rot")[0]] == ["0", "5", "10"]
    assert build(tmp_path / "int", checkpoint, "--bag", str(bag), "--min-distance", "off",
                 "--min-rotation", "off", "--min-interval", "0.3") == 0
    assert [p.source_ref for p in read_map(tmp_path / "int")[0]] == ["0", "3", "6", "9", "12"]


def test_skips_are_counted_by_reason(tmp_path: Path, checkpoint: Path, capsys) -> None:
    bag = tmp_path / "drive"
    # odometry ends at 600 ms: the images at 613 and 713 ms have no pose after them
    write_drive_bag(bag, 8, image="jpeg", corrupt=(3,), odom_extra_s=-0.1)
    assert build(tmp_path / "m", checkpoint, "--bag", str(bag), "--min-distance", "0",
                 "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["places_added"] == 5 and summary["frames_read"] == 8
    assert summary["skipped"] == {"no_pose": 2, "not_keyframe": 0, "undecodable": 1,
                                  "already_in_map": 0}
    assert summary["bytes_on_disk"] > 0 and summary["images_per_s"] > 0


def test_append_extends_with_a_second_drive_and_refuses_without_flag(
        tmp_path: Path, checkpoint: Path, capsys) -> None:
    write_drive_bag(tmp_path / "a", 6)
    write_drive_bag(tmp_path / "b", 4, storage="mcap", image="png",
                    image_topic="/cam/compressed")
    assert build(tmp_path / "m", checkpoint, "--bag", str(tmp_path / "a"),
                 "--min-distance", "0") == 0
    capsys.readouterr()
    assert build(tmp_path / "m", checkpoint, "--bag", str(tmp_path / "b"),
                 "--min-distance", "0") == 2
    assert "exists; pass --append" in capsys.readouterr().err
    assert build(tmp_path / "m", checkpoint, "--bag", str(tmp_path / "b"),
                 "--min-distance", "0", "--append") == 0
    places, _, _ = read_map(tmp_path / "m")
    assert len(places) == 10
    assert [p.source.rsplit("#", 1)[1] for p in places] == ["/camera/image_raw"] * 6 + [
        "/cam/compressed"] * 4
    # the same drive again adds nothing: every frame is already in the map
    capsys.readouterr()
    assert build(tmp_path / "m", checkpoint, "--bag", str(tmp_path / "b"),
                 "--min-distance", "0", "--append", "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["places_added"] == 0 and summary["skipped"]["already_in_map"] == 4


def test_append_with_another_extractor_is_refused(tmp_path: Path, checkpoint: Path,
                                                  capsys) -> None:
    write_drive_bag(tmp_path / "a", 3)
    assert build(tmp_path / "m", checkpoint, "--bag", str(tmp_path / "a")) == 0
    other = make_checkpoint(tmp_path / "other.safetensors", seed=1)
    capsys.readouterr()
    assert build(tmp_path / "m", other, "--bag", str(tmp_path / "a"), "--append") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("selavpr: error: map") and "fingerprint" in err and "\n" not in err


def test_missing_topic_is_one_line_listing_the_topics(tmp_path: Path, checkpoint: Path,
                                                      capsys) -> None:
    write_drive_bag(tmp_path / "a", 2)
    assert build(tmp_path / "m", checkpoint, "--bag", str(tmp_path / "a"),
                 "--image-topic", "/front/image") == 2
    err = capsys.readouterr().err.strip()
    assert "no image topic '/front/image'" in err and "/odom [nav_msgs/msg/Odometry]" in err
    assert not (tmp_path / "m").exists()


def test_killed_build_leaves_an_intact_map_and_append_resumes(
        tmp_path: Path, checkpoint: Path) -> None:
    bag = tmp_path / "drive"
    write_drive_bag(bag, 30, image="png")
    common = ["--bag", str(bag), "--min-distance", "0.15", "--commit-every", "3",
              "--checkpoint", str(checkpoint), "--no-progress"]
    # the reference: one uninterrupted build (batching does not change the features)
    assert cli(["build-map", str(tmp_path / "ref"), *common]) == 0
    ref_places, ref_glob, _ = read_map(tmp_path / "ref")
    assert len(ref_places) == 15  # every 2nd image (0.171 m)
    common += ["--batch-size", "1"]  # slow enough to be killed part-way

    target = tmp_path / "m"
    proc = subprocess.Popen([sys.executable, "-m", "selavpr_ros.cli", "build-map", str(target),
                             *common], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            manifest = target / "manifest.json"
            if manifest.is_file() and json.loads(manifest.read_text())["count"] >= 3:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the build finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    with PlaceMap.open(target, verify=True) as m:  # intact: every checksum holds
        count = m.count
    assert 3 <= count < 15 and count % 3 == 0

    assert cli(["build-map", str(target), "--append", *common]) == 0
    places, glob, _ = read_map(target)
    assert [(p.source_ref, p.stamp_ns, p.position) for p in places] == [
        (p.source_ref, p.stamp_ns, p.position) for p in ref_places]
    assert np.allclose(glob, ref_glob, atol=1e-6)


def test_ctrl_c_keeps_the_last_commit(tmp_path: Path, checkpoint: Path) -> None:
    # 300 frames, one per batch: far more than a fast CPU extracts between the first commit
    # and the signal, so the build is always interrupted part-way
    frames = 300
    bag = tmp_path / "drive"
    write_drive_bag(bag, frames, image="png")
    target = tmp_path / "m"
    proc = subprocess.Popen([sys.executable, "-m", "selavpr_ros.cli", "build-map", str(target),
                             "--bag", str(bag), "--min-distance", "0", "--commit-every", "2",
                             "--batch-size", "1", "--checkpoint", str(checkpoint),
                             "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            manifest = target / "manifest.json"
            if manifest.is_file() and json.loads(manifest.read_text())["count"] >= 2:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the build finished before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert "interrupted" in out and "--append" in out
    with PlaceMap.open(target, verify=True) as m:
        assert 2 <= m.count < frames and m.count % 2 == 0


def test_map_info_text_and_json(tmp_path: Path, checkpoint: Path, capsys) -> None:
    bag = tmp_path / "drive"
    stamps = write_drive_bag(bag, 5)
    assert build(tmp_path / "m", checkpoint, "--bag", str(bag), "--min-distance", "0") == 0
    capsys.readouterr()
    assert cli(["map-info", str(tmp_path / "m"), "--json", "--verify"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format_version"] == 2 and info["map_frame"] == "odom"
    assert info["extractor"]["name"] == "selavpr-vits14-d1-112x112"
    assert info["extractor"]["fingerprint"].startswith("untrained-")
    assert info["global"]["dim"] == 384 and info["local"]["grid"] == [29, 29]
    st = info["statistics"]
    assert st["places"] == 5 and st["verified"]
    assert st["time_span"]["first_ns"] == stamps[0] and st["time_span"]["last_ns"] == stamps[4]
    last = true_pose(stamps[4])[0]
    assert st["bounding_box"]["max"][:2] == pytest.approx(list(last[:2]))
    assert st["bytes_on_disk"] == sum(p.stat().st_size for p in (tmp_path / "m").iterdir())
    assert cli(["map-info", str(tmp_path / "m")]) == 0
    text = capsys.readouterr().out
    assert "places      5 (5 with a position)" in text and "selavpr-vits14-d1-112x112" in text
    assert "local form  fp16 (841 x 128 float16 per place, lossless)" in text
    assert cli(["map-info", str(tmp_path / "nothing")]) == 2
