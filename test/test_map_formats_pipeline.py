"""Every local format through the real pipeline: build-map, map-info --verify, evaluate.

A one-block SelaVPR with random weights recognises identical images, so every format must
answer each map image's copy with that place first after re-ranking (R@1 100 %).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

import eval_testlib
import node_testlib
from selavpr_ros.cli import main as cli

FORMATS = [("fp16", "1"), ("int8", "1"), ("int4", "1"), ("pca64", "1"), ("pca64-int8", "1"),
           ("pca64-int4", "1"), ("pca64-int8", "2")]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("formats")
    world = eval_testlib.make_world(root)
    folder = root / "images"
    folder.mkdir()
    for i, rgb in enumerate(node_testlib.place_images(eval_testlib.PLACES, seed=3)):
        cv2.imwrite(str(folder / f"{i:03d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    world["images"] = folder
    return world


@pytest.mark.parametrize("fmt, stride", FORMATS)
def test_build_verify_and_evaluate(world: dict[str, Path], tmp_path: Path, capsys,
                                   fmt: str, stride: str) -> None:
    path = tmp_path / "m.selavpr"
    assert cli(["build-map", str(path), "--images", str(world["images"]), "--spacing", "30",
                "--min-distance", "0", "--checkpoint", str(world["checkpoint"]),
                "--local-format", fmt, "--local-stride", stride, "--index", "auto",
                "--no-progress"]) == 0
    capsys.readouterr()
    assert cli(["map-info", str(path), "--verify", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["statistics"]["places"] == eval_testlib.PLACES
    assert info["local"]["format"]["name"] == fmt + ("" if stride == "1" else f"/stride{stride}")
    h, w = info["local"]["grid"]
    assert info["local"]["stored_count"] == -(-h // int(stride)) * -(-w // int(stride))
    assert info["index"]["kind"] == "flat" and info["index"]["target_recall"] == 0.95
    out = tmp_path / "eval"
    assert cli(["evaluate", str(path), "--images", str(world["images"]), "--checkpoint",
                str(world["checkpoint"]), "--out", str(out), "--no-progress",
                "--frame-tolerance", "0"]) == 0
    report = json.loads((out / "evaluation.json").read_text())
    assert report["recall"]["after_rerank"]["recall"]["1"] == 1.0
    assert [q["ids"][0] for q in report["queries"]] == list(range(eval_testlib.PLACES))


def test_bad_local_format_is_one_line(world: dict[str, Path], tmp_path: Path, capsys) -> None:
    assert cli(["build-map", str(tmp_path / "m"), "--images", str(world["images"]),
                "--checkpoint", str(world["checkpoint"]), "--local-format", "pca999",
                "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "PCA to 999 dims" in err
    assert not (tmp_path / "m").exists()


def test_drives_built_with_one_projection_merge(world: dict[str, Path], tmp_path: Path,
                                                capsys) -> None:
    """PCA maps of two drives merge only when the second reuses the first's projection."""
    common = ["--images", str(world["images"]), "--min-distance", "0", "--checkpoint",
              str(world["checkpoint"]), "--local-format", "pca64-int8", "--no-progress"]
    a, b, c = (tmp_path / name for name in ("a", "b", "c"))
    assert cli(["build-map", str(a), *common]) == 0
    assert cli(["build-map", str(b), *common, "--local-codec-from", str(a)]) == 0
    # another drive (here: fewer images) fits another projection
    assert cli(["build-map", str(c), *common, "--limit", "5"]) == 0
    assert cli(["merge-maps", str(tmp_path / "ab"), str(a), str(b), "--no-progress"]) == 0
    capsys.readouterr()
    assert cli(["map-info", str(tmp_path / "ab"), "--verify", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["statistics"]["places"] == 2 * eval_testlib.PLACES
    assert cli(["merge-maps", str(tmp_path / "ac"), str(a), str(c), "--no-progress"]) == 2
    assert "--local-codec-from" in capsys.readouterr().err
    assert not (tmp_path / "ac").exists()
