"""Bad input to ``selavpr build-map``: one line, nothing lost, and a retry that works.

Corrupt bag messages are made the way a damaged recording has them: a real rosbag2 (sqlite3)
is written with rosbags, then one message's bytes are cut or overwritten in the database.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from map_build_testlib import make_checkpoint, write_drive_bag
from selavpr_ros.cli import main as cli
from selavpr_ros.map import PlaceMap


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


def build(map_path: Path, checkpoint: Path, *args: str) -> int:
    return cli(["build-map", str(map_path), "--checkpoint", str(checkpoint), "--no-progress",
                *args])


def _one_line_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("selavpr: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _corrupt_message(bag: Path, topic: str, index: int, edit: str) -> None:
    """Damage message ``index`` of ``topic`` in the bag's sqlite3 storage."""
    (db_path,) = bag.glob("*.db3")
    db = sqlite3.connect(db_path)
    with db:
        (topic_id,) = db.execute("SELECT id FROM topics WHERE name = ?", (topic,)).fetchone()
        rows = db.execute("SELECT id, data FROM messages WHERE topic_id = ? ORDER BY timestamp",
                          (topic_id,)).fetchall()
        row_id, data = rows[index]
        if edit == "truncate":
            new = data[: len(data) // 3]
        else:  # an absurd sequence length right after the header: not decodable CDR
            new = data[:4] + b"\xff" * (len(data) - 4)
        db.execute("UPDATE messages SET data = ? WHERE id = ?", (new, row_id))
    db.close()


@pytest.mark.parametrize("edit", ["truncate", "garbage"])
def test_a_corrupt_bag_message_is_skipped_counted_and_append_proceeds(
        tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str], edit: str) -> None:
    bag = tmp_path / "drive"
    write_drive_bag(bag, 10, image="png")
    _corrupt_message(bag, "/camera/image_raw", 4, edit)
    _corrupt_message(bag, "/odom", 3, edit)  # poses around it still bracket every image
    args = ["--bag", str(bag), "--min-distance", "0", "--commit-every", "3", "--json"]
    assert build(tmp_path / "m", checkpoint, *args, "--limit", "6") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames_read"] == 6 and summary["places_added"] == 5
    assert summary["skipped"]["undecodable"] == 1
    # --append over the same bag resumes past the corrupt message and finishes the drive
    assert build(tmp_path / "m", checkpoint, *args, "--append") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["places_added"] == 4 and summary["skipped"]["already_in_map"] == 6
    with PlaceMap.open(tmp_path / "m", verify=True) as m:
        assert [p.source_ref for p in m.places(range(m.count))] == [
            "0", "1", "2", "3", "5", "6", "7", "8", "9"]


def _folder(tmp_path: Path, n: int, corrupt: bool = False) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        path = folder / f"f{i}.png"
        if corrupt:
            path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really" * 10)
        else:
            cv2.imwrite(str(path), rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    return folder


@pytest.mark.parametrize("stamp", ["inf", "nan", "-inf", "1e30", "-1", "9223372037"])
def test_timestamps_out_of_range_are_refused_in_one_line(
        tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str],
        stamp: str) -> None:
    folder = _folder(tmp_path, 3)
    poses = tmp_path / "poses.csv"
    poses.write_text("file,timestamp,x,y,z\n"
                     f"f0.png,1.0,0,0,0\nf1.png,{stamp},1,0,0\nf2.png,3.0,2,0,0\n")
    assert build(tmp_path / "m", checkpoint, "--images", str(folder), "--poses",
                 str(poses), "--min-distance", "0") == 2
    _one_line_error(capsys, "poses.csv, line 3", "timestamp")
    assert not (tmp_path / "m").exists()  # nothing half-made left behind


def test_a_failed_commit_keeps_the_places_and_says_so(tmp_path: Path) -> None:
    """A commit that fails leaves the places pending and the map at its last commit."""
    from selavpr_ros.errors import MapFormatError
    from selavpr_ros.io.frames import Frame
    from selavpr_ros.io.poses import Pose
    from selavpr_ros.mapping.builder import BuildConfig, MapBuilder
    from test_map import INFO, make_features

    class Fixed:
        info = INFO

        def extract(self, images: list[np.ndarray]) -> object:
            return make_features(0, len(images))

    pm = PlaceMap.create(tmp_path / "m", INFO)
    builder = MapBuilder(pm, Fixed(), BuildConfig(commit_every=100))  # type: ignore[arg-type]
    for i in range(3):
        builder.add(Frame(10 + i, Frame.of_array(np.zeros((4, 4, 3), np.uint8)),
                          Pose(10 + i, (float(i), 0.0, 0.0)), "src", str(i)))
    pm._store._db.execute("PRAGMA query_only = ON")  # the database refuses to write
    with pytest.raises(MapFormatError, match="commit of 3 places .* keeps its last commit"):
        builder.commit()
    assert builder.pending == 3 and pm.count == 0
    pm._store._db.execute("PRAGMA query_only = OFF")
    assert builder.commit() == 3 and pm.count == 3
    pm.close()


def test_nan_weights_give_one_line_and_no_empty_map(
        tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = load_file(str(checkpoint))
    weights = {k: np.full_like(v, np.nan) if v.dtype.kind == "f" else v
               for k, v in weights.items()}
    bad = tmp_path / "nan.safetensors"
    save_file(weights, str(bad))
    folder = _folder(tmp_path, 3)
    assert build(tmp_path / "m", bad, "--images", str(folder), "--min-distance", "0") == 2
    _one_line_error(capsys, "NaN")
    assert not (tmp_path / "m").exists()
    # the retry with good weights is not blocked by a leftover map
    assert build(tmp_path / "m", checkpoint, "--images", str(folder), "--min-distance",
                 "0") == 0


def test_a_folder_of_undecodable_images_gives_one_line_for_a_fitted_extractor(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _folder(tmp_path, 4, corrupt=True)
    assert cli(["build-map", str(tmp_path / "m"), "--images", str(folder), "--extractor",
                "classical", "--no-progress"]) == 2
    _one_line_error(capsys, "could be decoded", str(folder))
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("option", [("--rate", "1e-12"), ("--rate", "inf"),
                                    ("--spacing", "inf"), ("--spacing", "1e308")])
def test_folder_stamps_and_positions_out_of_range_are_one_line(
        tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str],
        option: tuple[str, str]) -> None:
    folder = _folder(tmp_path, 3)
    assert build(tmp_path / "m", checkpoint, "--images", str(folder), *option) == 2
    _one_line_error(capsys)
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("out", ["a", "."])
def test_writing_onto_the_local_codec_map_is_refused(tmp_path: Path, checkpoint: Path,
                                                     capsys: pytest.CaptureFixture[str],
                                                     out: str) -> None:
    """The map a PCA projection is read from is not the map written (nor inside it)."""
    folder = _folder(tmp_path, 3)
    common = ["--images", str(folder), "--min-distance", "0", "--local-format", "pca8"]
    assert build(tmp_path / "a", checkpoint, *common) == 0
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*")}
    target = tmp_path / out
    assert build(target, checkpoint, *common, "--append",
                 "--local-codec-from", str(tmp_path / "a")) == 2
    what = "is" if out == "a" else "holds"
    _one_line_error(capsys, f"build-map: refusing to write {target}: it {what} the "
                            f"--local-codec-from map in use ({tmp_path / 'a'})")
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*")} == before
