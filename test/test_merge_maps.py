"""``selavpr merge-maps``: the merged map holds exactly the inputs' places.

Places, poses and descriptors equal the inputs'; mismatches are refused in one line; a failed
merge leaves nothing at OUT.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from extractor_testlib import unit
from selavpr_ros.cli import main as cli
from selavpr_ros.errors import MapFormatError
from selavpr_ros.extractors.base import ExtractorInfo, Features
from selavpr_ros.map import IndexSpec, PlaceInfo, PlaceMap
from selavpr_ros.map.local_format import LocalFormat
from selavpr_ros.map.merge import merge_maps

INFO = ExtractorInfo("fake-grid", "weights-a", global_dim=16, local_count=16, local_dim=8,
                     local_grid=(4, 4))


def drive(path: Path, n: int, seed: int, *, info: ExtractorInfo = INFO, frame: str = "map",
          fmt: str = "fp16", commits: int = 2, codec_from: PlaceMap | None = None,
          index: IndexSpec | None = None) -> Path:
    rng = np.random.default_rng(seed)
    feats = Features(unit(rng.standard_normal((n, 16))), unit(rng.standard_normal((n, 16, 8))))
    infos = [PlaceInfo(stamp_ns=10**9 * (seed * 1000 + i), frame_id="cam",
                       position=(float(i), float(seed), 0.0), orientation=(0.0, 0.0, 0.0, 1.0),
                       source=f"drive{seed}.bag:/camera", source_ref=str(i),
                       gps=(48.0 + i * 1e-5, 11.0, 500.0) if i % 2 else None)
             for i in range(n)]
    state = codec_from.codec.state() if codec_from is not None else None
    with PlaceMap.create(path, info, map_frame=frame, local_format=LocalFormat.parse(fmt),
                         local_codec_state=state, index=index) as pm:
        bounds = np.linspace(0, n, commits + 1).astype(int)
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            pm.append(feats.select(slice(a, b)), infos[a:b])
    return path


def content(path: Path) -> tuple[list, np.ndarray, np.ndarray]:
    with PlaceMap.open(path, verify=True) as pm:
        ids = range(pm.count)
        codes, _, _ = pm.local_codes(ids)
        return pm.places(ids), pm.global_descriptors(), codes


@pytest.mark.parametrize("fmt", ["fp16", "pca4-int8", "int4"])
def test_merged_map_holds_both_inputs(tmp_path: Path, fmt: str, capsys) -> None:
    a = drive(tmp_path / "a", 9, 1, fmt=fmt, commits=3)
    with PlaceMap.open(a) as first:
        b = drive(tmp_path / "b", 5, 2, fmt=fmt, codec_from=first)
    assert cli(["merge-maps", str(tmp_path / "ab"), str(a), str(b), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"merged {tmp_path / 'ab'}: 14 places" in out
    pa, ga, la = content(a)
    pb, gb, lb = content(b)
    pm_places, g, loc = content(tmp_path / "ab")
    assert [p.id for p in pm_places] == list(range(14))
    strip = [(p.stamp_ns, p.frame_id, p.position, p.orientation, p.source, p.source_ref, p.gps)
             for p in pm_places]
    assert strip == [(p.stamp_ns, p.frame_id, p.position, p.orientation, p.source,
                      p.source_ref, p.gps) for p in pa + pb]
    np.testing.assert_array_equal(g, np.concatenate([ga, gb]))
    np.testing.assert_array_equal(loc, np.concatenate([la, lb]))
    with PlaceMap.open(tmp_path / "ab") as merged:
        assert merged.search(gb[3], 1).ids[0, 0] == 9 + 3  # renumbered after a's 9 places
        prov = merged.manifest.provenance
        assert [(p["path"], p["first_id"], p["places"]) for p in prov] == [
            (str(a), 0, 9), (str(b), 9, 5)]
        assert merged.local_format == LocalFormat.parse(fmt)
    info = json.loads(_run_json(["map-info", str(tmp_path / "ab"), "--json"], capsys))
    assert [p["first_id"] for p in info["provenance"]] == [0, 9]


def _run_json(argv: list[str], capsys) -> str:
    capsys.readouterr()
    assert cli(argv) == 0
    return capsys.readouterr().out


def test_merge_rebuilds_the_first_inputs_index_kind(tmp_path: Path) -> None:
    spec = IndexSpec("ivf", nprobe=8)
    a = drive(tmp_path / "a", 60, 1, index=spec, commits=1)
    b = drive(tmp_path / "b", 60, 2, index=spec, commits=1)
    summary = merge_maps(tmp_path / "ab", [a, b])
    assert summary.places == 120 and summary.index_kind == "ivf"
    with PlaceMap.open(tmp_path / "ab") as pm:
        assert pm.index_spec.nprobe == 8 and pm.load_index().ntotal == 120


@pytest.mark.parametrize("change, message", [
    ({"info": ExtractorInfo("other", "weights-a", 16, 16, 8, (4, 4))}, "extractor 'other'"),
    ({"info": ExtractorInfo("fake-grid", "weights-b", 16, 16, 8, (4, 4))},
     "fingerprint 'weights-b'"),
    ({"frame": "odom"}, "map frame 'odom'"),
    ({"fmt": "int8"}, "local format 'int8'"),
])
def test_mismatches_are_refused_in_one_line(tmp_path: Path, capsys, change: dict,
                                            message: str) -> None:
    a = drive(tmp_path / "a", 4, 1)
    b = drive(tmp_path / "b", 4, 2, **change)
    assert cli(["merge-maps", str(tmp_path / "ab"), str(a), str(b), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err and str(b) in err
    assert not (tmp_path / "ab").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_separately_fitted_pca_is_refused(tmp_path: Path) -> None:
    a = drive(tmp_path / "a", 6, 1, fmt="pca4")
    b = drive(tmp_path / "b", 6, 2, fmt="pca4")
    with pytest.raises(MapFormatError, match="PCA projection .* --local-codec-from"):
        merge_maps(tmp_path / "ab", [a, b])


def test_damaged_input_leaves_nothing_behind(tmp_path: Path) -> None:
    a = drive(tmp_path / "a", 4, 1)
    b = drive(tmp_path / "b", 4, 2)
    manifest = json.loads((b / "manifest.json").read_text())
    local = b / manifest["segments"][1]["files"]["local"]["name"]
    data = bytearray(local.read_bytes())
    data[-1] ^= 0x10
    local.write_bytes(bytes(data))
    with pytest.raises(MapFormatError, match="checksum mismatch .* the input map is damaged"):
        merge_maps(tmp_path / "ab", [a, b])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no OUT, no temporary


def test_out_must_be_new_and_inputs_two(tmp_path: Path) -> None:
    a = drive(tmp_path / "a", 4, 1)
    with pytest.raises(MapFormatError, match="at least two"):
        merge_maps(tmp_path / "x", [a])
    b = drive(tmp_path / "b", 4, 2)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("someone's file\n")
    with pytest.raises(MapFormatError, match="exists and is not empty"):
        merge_maps(tmp_path / "x", [a, b])
