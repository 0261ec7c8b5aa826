"""Image folders as drives: natural order, poses CSV variants, pseudo-positions, and builds."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from map_build_testlib import frame_image, make_checkpoint
from selavpr_ros.cli import main as cli
from selavpr_ros.errors import ConfigError
from selavpr_ros.io.folders import (
    FolderOptions,
    folder_frames,
    list_images,
    read_poses_csv,
    seconds_to_ns,
)
from selavpr_ros.map import PlaceMap


def write_folder(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        cv2.imwrite(str(folder / name), frame_image(i)[:, :, ::-1])  # PNG: lossless
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


def test_images_are_listed_in_natural_order(tmp_path: Path) -> None:
    write_folder(tmp_path, ["img10.png", "img2.png", "IMG1.png", "img2b.png"])
    (tmp_path / "notes.txt").write_text("not an image")
    assert [p.name for p in list_images(tmp_path)] == ["IMG1.png", "img2.png", "img2b.png",
                                                       "img10.png"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no images"):
        list_images(tmp_path / "empty")
    with pytest.raises(ConfigError, match="does not exist"):
        list_images(tmp_path / "missing")


def test_poses_csv_with_header_full_poses(tmp_path: Path) -> None:
    csv = tmp_path / "poses.csv"
    csv.write_text("filename,timestamp,x,y,z,qx,qy,qz,qw\n"
                   "a.png,1700000000.123456789,1,2,3,0,0,0,2\n"
                   "sub/b.png,1700000001,4,5,6,0,0,1,1\n")
    rows = read_poses_csv(csv)
    assert rows["a.png"].stamp_ns == 1_700_000_000_123_456_789  # exact, no float rounding
    assert rows["a.png"].position == (1.0, 2.0, 3.0)
    assert rows["a.png"].orientation == (0.0, 0.0, 0.0, 1.0)
    assert rows["b.png"].orientation == pytest.approx((0, 0, 2 ** -0.5, 2 ** -0.5))


@pytest.mark.parametrize("text, stamp, orientation", [
    ("a.png,2.5,1,2,3,0,0,0,1\n", 2_500_000_000, (0.0, 0.0, 0.0, 1.0)),
    ("a.png,2.5,1,2,3\n", 2_500_000_000, None),
    ("a.png,1,2,3\n", None, None),
    ("# a comment\nfile,x,y,z\na.png,1,2,3\n", None, None),
])
def test_poses_csv_variants(tmp_path: Path, text: str, stamp: int | None,
                            orientation: tuple | None) -> None:
    csv = tmp_path / "p.csv"
    csv.write_text(text)
    row = read_poses_csv(csv)["a.png"]
    assert (row.stamp_ns, row.position, row.orientation) == (stamp, (1.0, 2.0, 3.0), orientation)


@pytest.mark.parametrize("text, message", [
    ("a.png,1,2\n", "3 columns without a header"),
    ("file,x,y\na.png,1,2\n", "no 'z' column"),
    ("file,x,y,z,qx,qy\na.png,1,2,3,0,0\n", "needs all of qx"),
    ("file,x,y,z\na.png,1,2,3\nb.png,1,two,3\n", "line 3"),
    ("file,x,y,z\na.png,1,2,3\na.png,1,2,3\n", "listed twice"),
    ("", "empty"),
])
def test_bad_poses_csv_names_the_problem(tmp_path: Path, text: str, message: str) -> None:
    csv = tmp_path / "p.csv"
    csv.write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_poses_csv(csv)


def test_seconds_to_ns_is_exact() -> None:
    assert seconds_to_ns("1700000000.000000001") == 1_700_000_000_000_000_001
    assert seconds_to_ns(" 0.1 ") == 100_000_000


def test_frames_without_poses_get_pseudo_positions_and_rate_stamps(tmp_path: Path) -> None:
    write_folder(tmp_path, [f"{i}.png" for i in range(4)])
    frames = list(folder_frames(tmp_path, FolderOptions(spacing=2.5, rate_hz=4.0,
                                                        start_ns=10**9)))
    assert [f.source_ref for f in frames] == ["0.png", "1.png", "2.png", "3.png"]
    assert [f.pose.position for f in frames] == [(0, 0, 0), (2.5, 0, 0), (5, 0, 0), (7.5, 0, 0)]
    assert [f.stamp_ns for f in frames] == [10**9, 1_250_000_000, 1_500_000_000, 1_750_000_000]
    assert np.array_equal(frames[2].load(), frame_image(2))


def test_csv_naming_a_missing_image_is_refused(tmp_path: Path) -> None:
    write_folder(tmp_path / "imgs", ["a.png"])
    (tmp_path / "p.csv").write_text("a.png,1,2,3\nzz.png,1,2,3\n")
    with pytest.raises(ConfigError, match="1 images not in .* zz.png"):
        list(folder_frames(tmp_path / "imgs", FolderOptions(poses=tmp_path / "p.csv")))


def test_build_from_folder_without_poses(tmp_path: Path, checkpoint: Path, capsys) -> None:
    folder = write_folder(tmp_path / "imgs", [f"frame{i}.png" for i in range(12)])
    rc = cli(["build-map", str(tmp_path / "m"), "--images", str(folder), "--spacing", "0.5",
              "--min-distance", "1.0", "--checkpoint", str(checkpoint), "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "6 places added" in out and "not keyframe 6" in out
    with PlaceMap.open(tmp_path / "m", verify=True) as m:
        places = m.places(range(m.count))
    assert [p.source_ref for p in places] == [f"frame{i}.png" for i in (0, 2, 4, 6, 8, 10)]
    assert [p.position for p in places] == [(float(i), 0.0, 0.0) for i in range(6)]
    assert [p.stamp_ns for p in places] == [i * 200_000_000 for i in range(6)]  # 10 Hz
    assert all(p.orientation is None and p.frame_id == "camera" for p in places)


def test_build_from_folder_with_poses(tmp_path: Path, checkpoint: Path, capsys) -> None:
    folder = write_folder(tmp_path / "imgs", [f"{i:03d}.jpg" for i in range(6)])
    # 002 is not listed (no pose); 004 is corrupt (undecodable); 005 turned 90 deg in place
    (folder / "004.jpg").write_bytes(b"garbage")
    (tmp_path / "p.csv").write_text(
        "file,timestamp,x,y,z,qx,qy,qz,qw\n"
        "000.jpg,100.0,0,0,0,0,0,0,1\n"
        "001.jpg,100.5,3,0,0,0,0,0,1\n"
        "003.jpg,101.5,3.1,0,0,0,0,0,1\n"
        "004.jpg,102.0,9,0,0,0,0,0,1\n"
        "005.jpg,102.5,3.1,0,0,0,0,0.7071067811865476,0.7071067811865476\n")
    rc = cli(["build-map", str(tmp_path / "m"), "--images", str(folder), "--poses",
              str(tmp_path / "p.csv"), "--min-distance", "1", "--min-rotation", "30",
              "--checkpoint", str(checkpoint), "--no-progress", "--json"])
    assert rc == 0
    import json

    summary = json.loads(capsys.readouterr().out)
    assert summary["places_added"] == 3
    assert summary["skipped"] == {"no_pose": 1, "not_keyframe": 1, "undecodable": 1,
                                  "already_in_map": 0}
    with PlaceMap.open(tmp_path / "m") as m:
        places = m.places(range(m.count))
    assert [p.source_ref for p in places] == ["000.jpg", "001.jpg", "005.jpg"]
    assert [p.stamp_ns for p in places] == [100 * 10**9, 100_500_000_000, 102_500_000_000]
    assert places[2].orientation == pytest.approx((0, 0, 2 ** -0.5, 2 ** -0.5))


def test_build_from_gardens_point_day_left(gardens_point: Path, tmp_path: Path,
                                           checkpoint: Path, capsys) -> None:
    rc = cli(["build-map", str(tmp_path / "gp"), "--images", str(gardens_point / "day_left"),
              "--stride", "10", "--min-distance", "0", "--spacing", "1",
              "--checkpoint", str(checkpoint), "--no-progress"])
    assert rc == 0
    with PlaceMap.open(tmp_path / "gp", verify=True) as m:
        places = m.places(range(m.count))
        assert m.count == 20
    assert [p.source_ref for p in places] == [f"Image{i:03d}.jpg" for i in range(0, 200, 10)]
    # pseudo-positions count frames of the folder, so --stride 10 places them 10 m apart
    assert [p.position[0] for p in places] == [float(i) for i in range(0, 200, 10)]
