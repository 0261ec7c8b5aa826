"""A map records its extractor: every command and the node default to it, and refuse another."""

from __future__ import annotations

import subprocess
from pathlib import Path

import ros_harness


def build_classical_map(root: Path) -> tuple[Path, list[str]]:
    """Build a classical map of 8 textured images with ``selavpr build-map``."""
    import cv2

    import node_testlib

    folder = root / "route"
    folder.mkdir()
    files = []
    for i, image in enumerate(node_testlib.place_images(8, seed=5, size=(240, 320))):
        files.append(str(folder / f"{i:03d}.png"))
        cv2.imwrite(files[-1], cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    path = root / "gp.selavpr"
    built = subprocess.run([ros_harness.executable("selavpr"), "build-map", str(path),
                            "--images", str(folder), "--extractor", "classical",
                            "--vocabulary-size", "16", "--no-progress"],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    return path, files


def test_commands_take_the_extractor_from_the_map_and_refuse_another(tmp_path):
    path, files = build_classical_map(tmp_path)
    selavpr = ros_harness.executable("selavpr")
    folder = str(Path(files[0]).parent)
    evaluated = subprocess.run([selavpr, "evaluate", str(path), "--images", folder, "--out",
                                str(tmp_path / "eval"), "--no-plots", "--no-progress"],
                               capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    assert "R@1 100.0%" in evaluated.stdout, evaluated.stdout  # map images find themselves
    appended = subprocess.run([selavpr, "build-map", str(path), "--images", folder,
                               "--append", "--no-progress"],
                              capture_output=True, text=True, timeout=300)
    assert appended.returncode == 0, appended.stdout + appended.stderr
    for command in (["evaluate", str(path), "--images", folder, "--out", str(tmp_path / "e2")],
                    ["build-map", str(path), "--images", folder, "--append"]):
        refused = subprocess.run([selavpr, *command, "--extractor", "selavpr", "--checkpoint",
                                  "x.pth"], capture_output=True, text=True, timeout=300)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "built by the classical extractor" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
