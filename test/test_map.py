"""Place map: round trip, append, index kinds, read-only/lock rules, and damaged maps."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from selavpr_ros.errors import ConfigError, MapFormatError
from selavpr_ros.extractors.base import ExtractorInfo, Features, RerankSettings
from selavpr_ros.map import IndexSpec, PlaceInfo, PlaceMap

INFO = ExtractorInfo("fake-grid", "weights-a", global_dim=32, local_count=16, local_dim=8,
                     local_grid=(4, 4))


def make_features(start: int, n: int, dim: int = 32, seed: int = 0) -> Features:
    """Place i's features depend only on i: a smooth route on the sphere plus noise."""
    g = np.empty((n, dim), np.float32)
    loc = np.empty((n, 16, 8), np.float32)
    for row, i in enumerate(range(start, start + n)):
        rng = np.random.default_rng([seed, i])
        g[row] = np.sin(0.05 * i * np.arange(1, dim + 1)) + 0.3 * rng.standard_normal(dim)
        loc[row] = rng.standard_normal((16, 8))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    loc /= np.linalg.norm(loc, axis=2, keepdims=True)
    return Features(g, loc)


def make_places(start: int, n: int) -> list[PlaceInfo]:
    return [
        PlaceInfo(
            stamp_ns=1_000_000_000 * i + 7,
            frame_id="camera",
            position=(float(i), 2.0 * i, 0.5) if i % 3 else None,
            orientation=(0.0, 0.0, 0.0, 1.0) if i % 3 else None,
            source="route.bag:/camera/image",
            source_ref=str(i),
            gps=(48.1 + i * 1e-5, 11.5, 520.0) if i % 2 else None,
        )
        for i in range(start, start + n)
    ]


def exact_topk(g: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    sims = q.astype(np.float64) @ g.T.astype(np.float64)
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def build(path: Path, sizes: list[int], spec: IndexSpec | None = None) -> PlaceMap:
    pm = PlaceMap.create(path, INFO, index=spec)
    start = 0
    for n in sizes:
        pm.append(make_features(start, n), make_places(start, n))
        start += n
    return pm


def test_round_trip_reopen_and_append(tmp_path: Path) -> None:
    queries = make_features(0, 60, seed=1).global_desc
    pm = build(tmp_path / "a.selavpr", [20, 25])
    before = pm.search(queries, 10)
    pm.close()

    with PlaceMap.open(tmp_path / "a.selavpr", verify=True) as ro:
        after = ro.search(queries, 10)
        assert np.array_equal(before.ids, after.ids)
        assert np.array_equal(before.similarities, after.similarities)
        # exact search = independent brute force (top-1 has no near ties here)
        assert np.array_equal(after.ids[:, 0], exact_topk(make_features(0, 45).global_desc,
                                                          queries, 1)[:, 0])
        ids = [44, 0, 21, 21]
        feats = ro.features(ids)
        expected = make_features(0, 45)
        assert np.array_equal(feats.global_desc, expected.global_desc[ids])
        assert feats.local.dtype == np.float16
        assert np.array_equal(feats.local, expected.local[ids].astype(np.float16))
        assert [p.id for p in ro.places(ids)] == ids
        stored = ro.place(22)
        want = make_places(22, 1)[0]
        assert (stored.stamp_ns, stored.position, stored.orientation, stored.gps) == (
            want.stamp_ns, want.position, want.orientation, want.gps)
        assert ro.place(21).position is None and not ro.place(21).has_pose

    with PlaceMap.open(tmp_path / "a.selavpr", writable=True) as rw:
        assert list(rw.append(make_features(45, 15), make_places(45, 15))) == list(range(45, 60))
        appended = rw.search(queries, 10)
    one_go = build(tmp_path / "b.selavpr", [60])
    fresh = one_go.search(queries, 10)
    one_go.close()
    assert np.array_equal(appended.ids, fresh.ids)
    assert np.array_equal(appended.similarities, fresh.similarities)
    with PlaceMap.open(tmp_path / "a.selavpr", verify=True) as ro:
        assert ro.count == 60
        assert np.array_equal(ro.search(queries, 10).ids, fresh.ids)


def test_manifest_content(tmp_path: Path) -> None:
    build(tmp_path / "m", [5, 4]).close()
    data = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert data["format_version"] == 2 and data["count"] == 9 and data["generation"] == 2
    assert data["extractor"]["name"] == "fake-grid"
    assert data["extractor"]["fingerprint"] == "weights-a"
    assert data["global"] == {"dim": 32, "dtype": "float32", "metric": "inner_product"}
    assert data["local"]["dtype"] == "float16" and data["local"]["grid"] == [4, 4]
    assert data["index"]["spec"]["kind"] == "flat"
    names = sorted(p.name for p in (tmp_path / "m").iterdir() if not p.name.startswith("."))
    assert names == sorted(["manifest.json", *data["files"]])
    seg = data["segments"][1]
    assert (seg["start"], seg["rows"]) == (5, 4)
    local = np.load(tmp_path / "m" / seg["files"]["local"]["name"], allow_pickle=False)
    assert local.shape == (4, 16, 8) and local.dtype == np.float16


@pytest.mark.parametrize(
    "spec",
    [IndexSpec("ivf", nlist=8, nprobe=8), IndexSpec("hnsw", hnsw_m=16), IndexSpec("ivfpq",
                                                                                  nlist=4,
                                                                                  pq_m=8,
                                                                                  pq_bits=4)],
)
def test_approximate_indexes(tmp_path: Path, spec: IndexSpec) -> None:
    queries = make_features(0, 30).global_desc
    pm = build(tmp_path / "x", [200, 40], spec)
    assert pm.manifest.index["spec"]["kind"] == spec.kind
    res = pm.search(queries, 5)
    pm.close()
    with PlaceMap.open(tmp_path / "x", verify=True) as ro:
        again = ro.search(queries, 5)
        assert np.array_equal(res.ids, again.ids)
        assert ro.count == 240
    # queries are stored descriptors: each finds itself (nprobe = nlist makes IVF exhaustive)
    if spec.kind != "ivfpq":
        assert np.array_equal(res.ids[:, 0], np.arange(30))
    else:
        assert np.mean(res.ids[:, :5] == np.arange(30)[:, None]) > 0.0


def test_rebuild_index_changes_kind(tmp_path: Path) -> None:
    pm = build(tmp_path / "r", [50])
    queries = make_features(0, 50).global_desc
    pm.rebuild_index(IndexSpec("hnsw"))
    pm.close()
    with PlaceMap.open(tmp_path / "r", verify=True) as ro:
        assert ro.index_spec.kind == "hnsw"
        assert np.array_equal(ro.search(queries, 1).ids[:, 0], np.arange(50))
    assert len(list((tmp_path / "r").glob("index-*.faiss"))) == 1  # the old one is gone


def test_ivf_needs_enough_places(tmp_path: Path) -> None:
    pm = PlaceMap.create(tmp_path / "s", INFO, index=IndexSpec("ivf", nlist=64))
    with pytest.raises(ConfigError, match="64 places"):
        pm.append(make_features(0, 10), make_places(0, 10))
    pm.close()
    with PlaceMap.open(tmp_path / "s") as ro:  # the failed append left the map as it was
        assert ro.count == 0


def test_empty_map_and_read_only_rules(tmp_path: Path) -> None:
    pm = PlaceMap.create(tmp_path / "e", INFO)
    assert pm.search(np.ones(32, np.float32) / np.sqrt(32), 5).ids.shape == (1, 0)
    with pytest.raises(MapFormatError, match="already open for writing"):
        PlaceMap.open(tmp_path / "e", writable=True)
    pm.close()
    with PlaceMap.open(tmp_path / "e") as ro, pytest.raises(MapFormatError, match="read-only"):
        ro.append(make_features(0, 1), make_places(0, 1))
    with pytest.raises(MapFormatError, match="not empty"):
        PlaceMap.create(tmp_path / "e", INFO)


def test_bad_appends_are_refused(tmp_path: Path) -> None:
    with PlaceMap.create(tmp_path / "b", INFO) as pm:
        with pytest.raises(ValueError, match="feature rows"):
            pm.append(make_features(0, 3), make_places(0, 2))
        with pytest.raises(ValueError, match="dims"):
            pm.append(make_features(0, 2, dim=16), make_places(0, 2))
        f = make_features(0, 2)
        with pytest.raises(ValueError, match="normalised"):
            pm.append(Features(f.global_desc * 2, f.local), make_places(0, 2))
        assert pm.count == 0


# ------------------------------------------------------------------ damaged or foreign maps
@pytest.fixture()
def saved_map(tmp_path: Path) -> Path:
    build(tmp_path / "d.selavpr", [6, 5]).close()
    return tmp_path / "d.selavpr"


def _manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def _edit_manifest(path: Path, **changes: object) -> None:
    data = _manifest(path)
    data.update(changes)
    (path / "manifest.json").write_text(json.dumps(data))


def test_other_extractor_name_is_refused(saved_map: Path) -> None:
    other = ExtractorInfo("rootsift-vlad", "weights-a", 32, 16, 8, local_grid=(4, 4))
    with pytest.raises(MapFormatError, match="built by extractor 'fake-grid'.*rootsift-vlad"):
        PlaceMap.open(saved_map, extractor=other)


def test_other_weights_are_refused(saved_map: Path) -> None:
    other = ExtractorInfo("fake-grid", "weights-b", 32, 16, 8, local_grid=(4, 4))
    with pytest.raises(MapFormatError, match="fingerprint: map has 'weights-a', extractor has "
                                             "'weights-b'"):
        PlaceMap.open(saved_map, extractor=other)
    filt = ExtractorInfo("fake-grid", "weights-a", 32, 16, 8, local_grid=(4, 4),
                         rerank=RerankSettings("ratio"))
    with pytest.raises(MapFormatError, match="rerank"):
        PlaceMap.open(saved_map, extractor=filt)
    PlaceMap.open(saved_map, extractor=INFO).close()  # the right one opens


def test_truncated_array_is_refused(saved_map: Path) -> None:
    name = _manifest(saved_map)["segments"][1]["files"]["local"]["name"]
    path = saved_map / name
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size - 100)
    with pytest.raises(MapFormatError, match=f"{name} is truncated: manifest says {size} bytes"):
        PlaceMap.open(saved_map)


def test_wrong_checksum_is_refused(saved_map: Path) -> None:
    name = _manifest(saved_map)["segments"][0]["files"]["global"]["name"]
    path = saved_map / name
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # same size, one byte changed
    path.write_bytes(bytes(data))
    PlaceMap.open(saved_map).close()  # cheap checks pass (documented)
    with pytest.raises(MapFormatError, match=f"{name}: checksum mismatch"):
        PlaceMap.open(saved_map, verify=True)
    with PlaceMap.open(saved_map) as ro, pytest.raises(MapFormatError, match="damaged"):
        ro.validate()


def test_unknown_version_is_refused(saved_map: Path) -> None:
    _edit_manifest(saved_map, format_version=99)
    with pytest.raises(MapFormatError, match="format version 99 is not supported"):
        PlaceMap.open(saved_map)


def test_missing_file_is_refused(saved_map: Path) -> None:
    name = _manifest(saved_map)["index"]["file"]["name"]
    (saved_map / name).unlink()
    with pytest.raises(MapFormatError, match=f"{name} is missing"):
        PlaceMap.open(saved_map)


def test_truncated_index_is_refused(saved_map: Path) -> None:
    name = _manifest(saved_map)["index"]["file"]["name"]
    with open(saved_map / name, "r+b") as f:
        f.truncate(50)
    with pytest.raises(MapFormatError, match=f"{name} has 50 bytes"):
        PlaceMap.open(saved_map)


def test_broken_manifest_is_refused(saved_map: Path, tmp_path: Path) -> None:
    (saved_map / "manifest.json").write_text('{"format": "selavpr_ros.place_map", ')
    with pytest.raises(MapFormatError, match="not valid JSON"):
        PlaceMap.open(saved_map)
    with pytest.raises(MapFormatError, match="manifest.json is missing"):
        PlaceMap.open(tmp_path)
    with pytest.raises(MapFormatError, match="does not exist"):
        PlaceMap.open(tmp_path / "nowhere")


def test_inconsistent_count_is_refused(saved_map: Path) -> None:
    _edit_manifest(saved_map, count=12)
    with pytest.raises(MapFormatError, match="segments hold 11 places but count is 12"):
        PlaceMap.open(saved_map)


def test_metadata_damage_is_refused(saved_map: Path) -> None:
    db = sqlite3.connect(saved_map / "places.sqlite")
    with db:
        db.execute("UPDATE places SET px = 99.0 WHERE id = 7")
    db.close()
    with PlaceMap.open(saved_map) as ro, pytest.raises(MapFormatError, match=r"rows 6\.\.10"):
        ro.validate()
    db = sqlite3.connect(saved_map / "places.sqlite")
    with db:
        db.execute("DELETE FROM places WHERE id = 3")
    db.close()
    with pytest.raises(MapFormatError, match="holds 10 of the 11 places"):
        PlaceMap.open(saved_map)


def test_wrong_array_shape_is_refused(saved_map: Path) -> None:
    entry = _manifest(saved_map)["segments"][0]["files"]["local"]
    path = saved_map / entry["name"]
    np.save(path, np.zeros((6, 8, 16), np.float16), allow_pickle=False)  # same bytes, wrong shape
    assert path.stat().st_size == entry["bytes"]
    with pytest.raises(MapFormatError, match=r"holds \(6, 8, 16\) float16, manifest expects "
                                             r"\(6, 16, 8\)"):
        PlaceMap.open(saved_map)
