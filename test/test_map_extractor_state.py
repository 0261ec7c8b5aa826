"""Extractor state stored in a place map: round trip, checksums, refusals, and the layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from selavpr_ros.errors import MapFormatError
from selavpr_ros.extractors.base import ExtractorInfo, Features
from selavpr_ros.map import PlaceInfo, PlaceMap

INFO = ExtractorInfo("fake-state", "vocab-a", global_dim=4, local_count=3, local_dim=2)


def _state() -> dict[str, np.ndarray]:
    return {
        "centroids": np.arange(12, dtype=np.float32).reshape(3, 4) / 7.0,
        "config": np.frombuffer(b'{"k": 3}', dtype=np.uint8).copy(),
    }


def _features(n: int) -> Features:
    g = np.eye(4, dtype=np.float32)[np.arange(n) % 4]
    loc = np.full((n, 3, 2), np.sqrt(0.5), np.float32)
    return Features(g, loc)


@pytest.fixture
def state_map(tmp_path: Path) -> Path:
    path = tmp_path / "m.selavpr"
    with PlaceMap.create(path, INFO, extractor_state=_state()) as pm:
        pm.append(_features(5), [PlaceInfo(stamp_ns=i) for i in range(5)])
    return path


def test_state_round_trip_after_appends_and_reopen(state_map: Path) -> None:
    with PlaceMap.open(state_map, writable=True, verify=True) as pm:
        pm.append(_features(2), [PlaceInfo(stamp_ns=9), PlaceInfo(stamp_ns=10)])
    with PlaceMap.open(state_map, verify=True) as pm:
        state = pm.extractor_state()
        assert pm.count == 7
    assert set(state) == {"centroids", "config"}
    assert state["centroids"].dtype == np.float32
    assert np.array_equal(state["centroids"], _state()["centroids"])
    assert state["config"].tobytes() == b'{"k": 3}'
    # stored as plain .npy under extractor/, listed with its checksum in the manifest
    manifest = json.loads((state_map / "manifest.json").read_text())
    assert manifest["extractor_state"]["centroids"]["name"] == "extractor/centroids.npy"
    assert "extractor/config.npy" in manifest["files"]
    loaded = np.load(state_map / "extractor" / "centroids.npy", allow_pickle=False)
    assert np.array_equal(loaded, _state()["centroids"])


def test_map_without_state_has_none(tmp_path: Path) -> None:
    with PlaceMap.create(tmp_path / "m", INFO) as pm:
        assert pm.extractor_state() == {}
    assert not (tmp_path / "m" / "extractor").exists()
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["extractor_state"] == {}


def test_state_comes_from_the_extractor_object(tmp_path: Path) -> None:
    from selavpr_ros.extractors.base import Extractor

    class Stateful(Extractor):
        info = INFO  # type: ignore[assignment]

        def extract(self, images):  # type: ignore[no-untyped-def]
            raise NotImplementedError

        def state(self) -> dict[str, np.ndarray]:
            return {"w": np.array([1.5, 2.5])}

    with PlaceMap.create(tmp_path / "m", Stateful()) as pm:
        assert np.array_equal(pm.extractor_state()["w"], [1.5, 2.5])


def test_damaged_state_file_is_refused(state_map: Path) -> None:
    path = state_map / "extractor" / "centroids.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, other content
    path.write_bytes(bytes(data))
    with PlaceMap.open(state_map) as pm:  # cheap checks pass: sizes are right
        with pytest.raises(MapFormatError, match="extractor state is damaged"):
            pm.extractor_state()
    with pytest.raises(MapFormatError, match="checksum mismatch"):
        PlaceMap.open(state_map, verify=True)


def test_truncated_or_missing_state_file_is_refused_on_open(state_map: Path) -> None:
    path = state_map / "extractor" / "config.npy"
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(MapFormatError, match="config.npy has .* bytes, manifest says"):
        PlaceMap.open(state_map)
    path.unlink()
    with pytest.raises(MapFormatError, match="config.npy is missing"):
        PlaceMap.open(state_map)


def test_manifest_pointing_state_elsewhere_is_refused(state_map: Path) -> None:
    manifest_path = state_map / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["extractor_state"]["centroids"]["name"] = "../outside.npy"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(MapFormatError, match="'../outside.npy' is not a plain name"):
        PlaceMap.open(state_map)


@pytest.mark.parametrize(
    "state, message",
    [
        ({"../x": np.zeros(2)}, "not a plain identifier"),
        ({"names": np.array(["a", "b"])}, "only bool, integer and float"),
        ({"objects": np.array([{}, None], dtype=object)}, "only bool, integer and float"),
    ],
)
def test_unstorable_state_is_refused(tmp_path: Path, state: dict, message: str) -> None:
    with pytest.raises(MapFormatError, match=message):
        PlaceMap.create(tmp_path / "m", INFO, extractor_state=state)
