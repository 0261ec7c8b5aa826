"""selavpr evaluate-loops: metrics by hand, and the command on a revisit bag."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import loop_testlib as lt
from selavpr_ros.cli import main as cli
from selavpr_ros.eval.loops import KeyframeRecord, metrics, read_correspondences
from selavpr_ros.loop import LoopDetector
from selavpr_ros.map import PlaceMap
from selavpr_ros.synthetic.revisit import write_revisit_bag


def record(i: int, loop: bool, score: float, true: bool, positive: bool = True
           ) -> KeyframeRecord:
    return KeyframeRecord(i, i, str(i), (0.0, 0.0, 0.0), 0.0, loop, "", 0, 0, score, 2,
                          positive=positive, true_loop=true)


def test_metrics_precision_recall_and_the_curve() -> None:
    records = [record(0, True, 90, True), record(1, True, 80, False), record(2, True, 70, True),
               record(3, False, 0, False), record(4, False, 0, False, positive=False)]
    m = metrics(records)
    assert (m["positives"], m["loops"], m["true_loops"], m["false_loops"]) == (4, 3, 2, 1)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(0.5)
    # thresholds 70 (all three loops), 80 (two, one false), 90 (one, true)
    assert [p["min_mnn_score"] for p in m["pr_curve"]] == [70, 80, 90]
    assert m["pr_curve"][1]["precision"] == pytest.approx(0.5)
    assert m["recall_at_100_precision"] == pytest.approx(0.25)


def test_correspondence_file(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("# query, matches\na.jpg,b.jpg,c.jpg\n\na.jpg,d.jpg\n")
    assert read_correspondences(path) == {"a.jpg": {"b.jpg", "c.jpg", "d.jpg"}}
    path.write_text("lonely.jpg\n")
    with pytest.raises(ValueError, match="c.csv:1"):
        read_correspondences(path)


def test_command_on_a_revisit_bag_agrees_with_the_detector(tmp_path: Path) -> None:
    drive, extractor = lt.make_drive()
    vocabulary = tmp_path / "vocabulary.selavpr"
    PlaceMap.create(vocabulary, extractor).close()
    bag = tmp_path / "revisit_bag"
    write_revisit_bag(drive, str(bag))
    out = tmp_path / "report"
    assert cli(["evaluate-loops", "--bag", str(bag), "--prior-map", str(vocabulary),
                "--radius", str(lt.TRUE_LOOP_M), "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    offline = lt.run_detector(drive, LoopDetector(extractor, lt.test_config()))
    expected = [[r.keyframe.stamp_ns, r.then_stamp_ns] for _, r in offline if r.loop]
    assert [[x["now"], x["then"]] for x in report["loops_list"]] == expected
    assert report["false_loops"] == 0 and report["precision"] == 1.0
    second = sum(1 for i, _ in offline if drive.frames[i].traversal == 1)
    assert report["positives"] == second  # every pass-two keyframe revisits pass one
    assert report["recall"] >= 0.5
    for png in ("loops_pr.png", "loops_trajectory.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_make_revisit_writes_the_drive_with_camera_info_and_depth(tmp_path: Path) -> None:
    from rosbags.rosbag2 import Reader

    bag = tmp_path / "revisit"
    assert cli(["make-revisit", str(bag), "--frames", "6", "--width", "64", "--height", "48",
                "--depth"]) == 0
    with Reader(bag) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
        stamps: dict[str, list[int]] = {}
        for conn, stamp, _ in reader.messages():
            stamps.setdefault(conn.topic, []).append(stamp)
    assert counts["/camera/image_raw"] == 12  # two passes of 6 frames
    images = stamps["/camera/image_raw"]
    assert stamps["/camera/camera_info"] == images and stamps["/camera/depth/image_raw"] == images
    assert counts["/odom"] > 12  # the unseen return loop has odometry only
    assert images == sorted(images)


def test_local_stride_thins_the_fitted_extractors_local_features(tmp_path: Path) -> None:
    from selavpr_ros.extractors.classical import ClassicalConfig, working_size

    bag = tmp_path / "revisit"
    assert cli(["make-revisit", str(bag), "--frames", "24", "--seed", "5", "--width", "160",
                "--height", "120"]) == 0
    out = tmp_path / "report"
    assert cli(["evaluate-loops", "--bag", str(bag), "--extractor", "classical",
                "--local-stride", "2", "--radius", str(lt.TRUE_LOOP_M), "--out", str(out),
                "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    full = ClassicalConfig(image_size=working_size((120, 160), 320)).local_count
    assert 3.0 < full / report["local_features"] < 5.0  # every second point in x and y
    assert report["false_loops"] == 0
    assert cli(["evaluate-loops", "--bag", str(bag), "--prior-map", str(tmp_path / "none"),
                "--local-stride", "2"]) == 2  # a prior map fixes the extractor
