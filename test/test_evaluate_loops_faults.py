"""``selavpr evaluate-loops`` on a bad correspondence file, and without a prior map.

A correspondence file that names no frame of the drive, is not UTF-8 or is empty is refused in
one line (exit 2) instead of scoring against no positives; one that names only some frames is
counted in a warning. Without ``--prior-map`` the classical extractor is fitted on the drive.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import pytest

import loop_testlib as lt
from selavpr_ros.cli import main as cli
from selavpr_ros.synthetic.revisit import revisit_drive, write_revisit_bag
from test_train import one_line_error


@pytest.fixture(scope="module")
def drives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Write the test revisit drive as a bag (frames by message index) and as a folder."""
    root = tmp_path_factory.mktemp("drives")
    drive = revisit_drive(lt.ROUTE)
    write_revisit_bag(drive, str(root / "bag"))
    folder = root / "images"
    folder.mkdir()
    for i, f in enumerate(drive.frames):
        assert cv2.imwrite(str(folder / f"f{i:03d}.png"), f.image[:, :, ::-1])
    return {"bag": root / "bag", "images": folder}


def evaluate(source: str, drives: dict[str, Path], *args: str) -> list[str]:
    return ["evaluate-loops", f"--{source}", str(drives[source]), "--radius",
            str(lt.TRUE_LOOP_M), "--no-progress", *args]


@pytest.mark.parametrize("source, rows, naming, example", [
    ("images", "12,0\n13,1\n", "file name", "'f000.png'"),  # message indexes for a folder
    ("bag", "f012.png,f000.png\n", "message index", "'0'"),  # file names for a bag
])
def test_correspondences_that_name_no_frame_are_refused(
        tmp_path: Path, drives: dict[str, Path], capsys, source: str, rows: str, naming: str,
        example: str) -> None:
    path = tmp_path / "truth.csv"
    path.write_text(rows)
    one_line_error(evaluate(source, drives, "--correspondences", str(path), "--extractor",
                            "classical"), capsys,
                   f"{path} names no frame of the drive", naming, example)


def test_correspondences_that_name_some_frames_are_counted_in_a_warning(
        tmp_path: Path, drives: dict[str, Path], capsys, caplog) -> None:
    path = tmp_path / "truth.csv"
    path.write_text("f012.png,f000.png\nf013.png,f001.png,gone.png\n")
    out = tmp_path / "report"
    with caplog.at_level(logging.WARNING):
        assert cli(evaluate("images", drives, "--correspondences", str(path), "--out",
                            str(out), "--extractor", "classical", "--local-stride", "4")) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"1 of 5 frame names in {path} are not frames of the drive" in w
               and "'gone.png'" in w for w in warned), warned
    assert json.loads((out / "report.json").read_text())["positives"] <= 2


@pytest.mark.parametrize("content, says", [
    (b"\xff\xfe1\x000\x00,\x002\x00\n", "is not UTF-8 text"),  # UTF-16 from a spreadsheet
    (b"", "is empty"),
    (b"# query, matches\n\n", "is empty"),
])
def test_an_unreadable_or_empty_correspondence_file_is_refused(
        tmp_path: Path, drives: dict[str, Path], capsys, content: bytes, says: str) -> None:
    path = tmp_path / "truth.csv"
    path.write_bytes(content)
    one_line_error(evaluate("bag", drives, "--correspondences", str(path), "--extractor",
                            "classical"), capsys, f"correspondence file {path} {says}")


def test_without_a_prior_map_the_classical_extractor_is_fitted_on_the_drive(
        tmp_path: Path, drives: dict[str, Path], caplog) -> None:
    out = tmp_path / "report"
    with caplog.at_level(logging.INFO):
        assert cli(evaluate("bag", drives, "--out", str(out))) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["extractor"].startswith("'classical-")
    said = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("extractor 'classical-") and "fitted on the drive" in m
               for m in said), said
    assert report["keyframes"] > 0 and report["true_loops"] > 0  # it finds loops
