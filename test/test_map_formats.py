"""Compact local formats (int8, int4, PCA, grid stride), version-1 maps, and the tuned index.

Bounds are stated against the lossless fp16 map built from the same features, never against
bit patterns: int8/int4 codes are within half a quantisation step, PCA features within the energy
the projection drops, and MNN counts within a stated fraction of the fp16 counts.
"""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch

from extractor_testlib import unit
from selavpr_ros.cli import main as cli
from selavpr_ros.errors import ConfigError, MapFormatError
from selavpr_ros.extractors.base import ExtractorInfo, Features
from selavpr_ros.map import IndexSpec, PlaceInfo, PlaceMap
from selavpr_ros.map import index as idx
from selavpr_ros.map.local_format import (
    LocalFormat,
    dequantize,
    expand_int4_tensor,
    pack_int4,
    quantize,
    unpack_int4,
)
from selavpr_ros.matching import mnn_scores

GRID = (8, 8)
C = 32
INFO = ExtractorInfo("fake-grid", "weights-a", global_dim=16, local_count=64, local_dim=C,
                     local_grid=GRID)
FORMATS = ["fp16", "int8", "int4", "pca16", "pca16-int8", "pca16-int4"]


def route_features(n: int, seed: int = 0) -> Features:
    """Make local features near a 12-d subspace of C=32 (as learned features are).

    PCA to 16 then keeps what matters; each place is its own random draw.
    """
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(np.random.default_rng(99).standard_normal((C, 12)))[0].T
    latent = rng.standard_normal((n, GRID[0] * GRID[1], 12))
    local = unit(latent @ basis + 0.05 * rng.standard_normal((n, GRID[0] * GRID[1], C)))
    return Features(unit(rng.standard_normal((n, 16))), local)


def places(n: int, start: int = 0) -> list[PlaceInfo]:
    return [PlaceInfo(stamp_ns=10**9 * (start + i), position=(float(start + i), 0.0, 0.0),
                      orientation=(0.0, 0.0, 0.0, 1.0), source="drive", source_ref=str(i))
            for i in range(n)]


def make_map(path: Path, fmt: str, feats: Features, stride: int = 1) -> PlaceMap:
    pm = PlaceMap.create(path, INFO, local_format=LocalFormat.parse(fmt, stride))
    pm.append(feats, places(len(feats)))
    return pm


def test_format_names_and_bad_formats() -> None:
    assert LocalFormat.parse("pca64-int8") == LocalFormat("int8", 64, 1)
    assert LocalFormat.parse("int8", 2).name == "int8/stride2"
    assert LocalFormat.parse("pca64-int4") == LocalFormat("int4", 64, 1)
    assert LocalFormat.parse("int4").name == "int4" and LocalFormat("int4", 8).name == "pca8-int4"
    with pytest.raises(ConfigError, match="odd"):
        LocalFormat.parse("pca15-int4")
    with pytest.raises(ConfigError, match="two channels per byte"):
        LocalFormat.parse("int4").check(ExtractorInfo("odd", "f", 16, 50, 33))
    with pytest.raises(ConfigError, match="unknown local format"):
        LocalFormat.parse("pca-int4")
    classical = ExtractorInfo("c", "f", 16, 50, 32, variable_local_count=True)
    with pytest.raises(ConfigError, match="dense grid"):
        LocalFormat.parse("fp16", 2).check(classical)
    with pytest.raises(ConfigError, match="more dims"):
        LocalFormat.parse("pca32").check(classical)


def test_quantize_is_within_half_a_step() -> None:
    x = unit(np.random.default_rng(1).standard_normal((200, 64)))
    codes, scale = quantize(x)
    assert codes.dtype == np.int8 and scale.dtype == np.float16
    error = np.abs(dequantize(codes, scale, "float32") - x)
    assert np.all(error <= 0.5 * scale[:, None].astype(np.float32) * 1.01 + 1e-6)
    # a scale is the peak over 127 (up to fp16 rounding): codes use the full int8 range
    assert np.all(np.abs(codes).max(axis=1) >= 126)
    codes, scale = quantize(x, bits=4)
    error = np.abs(dequantize(codes, scale, "float32") - x)
    assert np.all(error <= 0.5 * scale[:, None].astype(np.float32) * 1.01 + 1e-6)
    assert np.abs(codes).max() == 7 and np.all(np.abs(codes).max(axis=1) >= 6)


def test_int4_packing_round_trips_every_pair_of_codes() -> None:
    pairs = np.array([(a, b) for a in range(-8, 8) for b in range(-8, 8)], np.int8)
    codes = np.concatenate([pairs[:, :1], np.zeros((256, 2), np.int8), pairs[:, 1:],
                            np.ones((256, 2), np.int8)], axis=1)  # C = 6: j and j + 3 share
    packed = pack_int4(codes)
    assert packed.dtype == np.uint8 and packed.shape == (256, 3)
    assert len(np.unique(packed[:, 0])) == 256  # every pair is its own byte
    assert packed[1, 0] == 0x98 and packed[255, 0] == 0x77  # nibbles -8, -7 and 7, 7
    out = np.zeros((256, 6), np.int8)
    out[:, :3] = packed.view(np.int8)
    unpack_int4(out)
    np.testing.assert_array_equal(out, codes)
    with pytest.raises(ValueError, match="C-contiguous int8"):
        unpack_int4(np.zeros((4, 12), np.int8)[:, ::2])


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_round_trips_and_passes_verify(tmp_path: Path, fmt: str) -> None:
    feats = route_features(30)
    make_map(tmp_path / "m", fmt, feats).close()
    with PlaceMap.open(tmp_path / "m", verify=True) as pm:
        assert pm.local_format == LocalFormat.parse(fmt)
        codec = pm.codec
        want = np.stack([codec.query(f)[0] for f in feats.local])  # the stored space
        got = pm.features(range(30)).local.astype(np.float32)
        dim = 16 if "pca" in fmt else C
        assert got.shape == (30, 64, dim)
        # fp16 rounding (<= 2^-11 relative), plus half a step (1/254 or 1/14 of the peak)
        step = {"int8": 1 / 254, "int4": 1 / 14}.get(fmt[-4:], 0.0)
        bound = 1e-3 + (step + 1e-3 if step else 0.0)
        assert np.abs(got - want).max() <= bound
        np.testing.assert_array_equal(pm.global_descriptors(), feats.global_desc)
        if "pca" in fmt:  # the projection keeps most of what a 12-d subspace holds
            kept = np.linalg.norm(feats.local.reshape(-1, C) @ codec.components, axis=1)
            assert kept.min() > 0.9
    assert cli(["map-info", str(tmp_path / "m"), "--verify"]) == 0


def test_int4_map_stores_packed_bytes_and_reads_codes(tmp_path: Path) -> None:
    feats = route_features(10)
    make_map(tmp_path / "m", "int4", feats).close()
    with PlaceMap.open(tmp_path / "m", verify=True) as pm:
        files = pm.manifest.segments[0].files
        stored = np.load(tmp_path / "m" / files["local"].name, mmap_mode="r")
        assert stored.shape == (10, 64, C // 2) and stored.dtype == np.uint8
        assert pm.local_format.place_bytes(INFO) == 64 * (C // 2 + 2)  # codes + fp16 scales
        ids = np.array([7, 2, 2, 9])
        codes, scale, mask = pm.local_codes(ids)
        want_codes, want_scale = quantize(feats.local[ids], bits=4)
        np.testing.assert_array_equal(codes, want_codes)
        np.testing.assert_array_equal(scale, want_scale)
        buf = np.full((4, 64, C), 99, np.int8)
        assert pm.local_codes(ids, out=buf)[0] is buf and mask is None
        np.testing.assert_array_equal(buf, want_codes)
        with pytest.raises(ValueError, match="out is"):
            pm.local_codes(ids, out=np.empty((4, 64, C // 2), np.uint8))
        raw, _, _ = pm.local_codes(ids, packed=True)
        np.testing.assert_array_equal(raw, stored[ids])
        expanded = expand_int4_tensor(torch.from_numpy(raw))
        np.testing.assert_array_equal(expanded.numpy(), want_codes)


def test_pca_projection_is_checksummed(tmp_path: Path) -> None:
    make_map(tmp_path / "m", "pca16-int8", route_features(10)).close()
    path = tmp_path / "m" / "codec" / "pca_components.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(MapFormatError, match="pca_components.npy: checksum mismatch"):
        PlaceMap.open(tmp_path / "m", verify=True)
    with PlaceMap.open(tmp_path / "m") as pm, pytest.raises(MapFormatError, match="checksum"):
        pm.codec  # noqa: B018 - reading the projection checks it


@pytest.mark.parametrize("fmt, stride, tolerance", [
    ("int8", 1, 0.05), ("int4", 1, 0.06), ("pca16", 1, 0.10), ("pca16-int8", 1, 0.10),
    ("pca16-int4", 1, 0.10), ("fp16", 2, 0.0),
])
def test_reranking_stays_close_to_fp16(tmp_path: Path, fmt: str, stride: int,
                                       tolerance: float) -> None:
    """Compact maps' MNN counts stay within ``tolerance`` of fp16 counts.

    Relative, summed over candidates; and the best candidate is the same place.
    """
    feats = route_features(12, seed=3)
    rng = np.random.default_rng(4)
    query = unit(feats.local[5] + 0.08 * rng.standard_normal(feats.local[5].shape))
    with make_map(tmp_path / "ref", "fp16", feats, stride) as ref, \
            make_map(tmp_path / "c", fmt, feats, stride) as pm:
        ids = np.arange(12)
        ref_codes, _, _ = ref.local_codes(ids)
        q_ref, _ = ref.codec.query(query)
        codes, scale, _ = pm.local_codes(ids)
        q, _ = pm.codec.query(query)
        assert codes.dtype == (np.int8 if "int" in fmt else np.float16)
        base = mnn_scores(q_ref, ref_codes)
        counts = mnn_scores(q, codes, candidate_scale=scale)
        chunked = mnn_scores(q, codes, candidate_scale=scale, method="chunked")
    np.testing.assert_array_equal(counts, chunked)  # both methods apply the scales alike
    assert counts.argmax() == base.argmax() == 5
    if stride == 1:
        assert np.abs(counts - base).sum() <= tolerance * base.sum()
    else:  # a stride-2 grid keeps a quarter of the features on both sides
        assert base.max() <= 16 and pm.local_format.stored_count(INFO) == 16


def write_v1_map(path: Path, feats: Features) -> None:
    """Write a map as the previous release did.

    Its manifest has no local format, codec or provenance and says format_version 1 (the
    data files were already the same).
    """
    make_map(path, "fp16", feats).close()
    manifest_path = path / "manifest.json"
    data = json.loads(manifest_path.read_text())
    for key in ("local_codec", "provenance"):
        del data[key]
    for key in ("format", "stored_count", "stored_dim"):
        del data["local"][key]
    for key in ("coarse", "train_max", "target_recall", "tuned_recall"):
        del data["index"]["spec"][key]
    data["format_version"] = 1
    manifest_path.write_text(json.dumps(data, indent=2))


def test_version_1_map_opens_unchanged_and_upgrades_on_commit(tmp_path: Path) -> None:
    feats = route_features(6)
    write_v1_map(tmp_path / "old", feats)
    before = (tmp_path / "old" / "manifest.json").read_bytes()
    with PlaceMap.open(tmp_path / "old", verify=True) as pm:
        assert pm.manifest.format_version == 1 and pm.local_format == LocalFormat("float16")
        np.testing.assert_array_equal(pm.features([2]).local[0],
                                      feats.local[2].astype(np.float16))
        assert pm.search(feats.global_desc[3], 1).ids[0, 0] == 3
    assert (tmp_path / "old" / "manifest.json").read_bytes() == before  # read, not rewritten
    with PlaceMap.open(tmp_path / "old", writable=True) as pm:
        pm.append(route_features(2, seed=8), places(2, 6))
    data = json.loads((tmp_path / "old" / "manifest.json").read_text())
    assert data["format_version"] == 2 and data["local"]["format"]["name"] == "fp16"
    with PlaceMap.open(tmp_path / "old", verify=True) as pm:
        assert pm.count == 8


def clustered(rng: np.random.Generator, n: int = 3000, dim: int = 32, count: int = 40
              ) -> np.ndarray:
    centres = unit(rng.standard_normal((count, dim)))
    return unit(centres[rng.integers(0, count, n)] + 0.1 * rng.standard_normal((n, dim)))


def test_auto_index_reaches_its_target_on_held_out_places() -> None:
    rng = np.random.default_rng(5)
    vectors = clustered(rng)
    index, result = idx.tune_index(vectors, 0.95, k=20, flat_max=1000, compare_exact=False)
    spec = result.spec
    assert spec.kind == "ivfsq8" and spec.coarse == "hnsw"
    assert spec.target_recall == 0.95 and spec.tuned_recall >= 0.95
    assert result.sweep[-1][:3] == ("ivfsq8", spec.nprobe, spec.tuned_recall)
    assert all(r < 0.95 for _, _, r, _ in result.sweep[:-1])  # the smallest nprobe that reached
    # fresh queries (perturbed places, not the tuning sample) see about the same recall
    queries = unit(vectors[rng.integers(0, 3000, 100)] + 0.1 * rng.standard_normal((100, 32)))
    exact = np.argsort(-(queries.astype(np.float64) @ vectors.T.astype(np.float64)), axis=1)
    found = index.search(queries, 20)[1]
    hits = sum(len(set(f) & set(e[:20])) for f, e in zip(found, exact, strict=True))
    assert hits / found.size >= 0.9
    small, small_result = idx.tune_index(vectors[:500], 0.95, flat_max=1000)
    assert small_result.spec.kind == "flat" and small_result.spec.tuned_recall == 1.0


def test_auto_choice_follows_the_structure_and_is_deterministic() -> None:
    """Clusters: IVF within 1/8 of its lists; no clusters: IVF would need more, so pqfs."""
    uniform = unit(np.random.default_rng(7).standard_normal((3000, 32)))
    _, first = idx.tune_index(uniform, 0.95, k=20, flat_max=1000, compare_exact=False)
    _, again = idx.tune_index(uniform, 0.95, k=20, flat_max=1000, compare_exact=False)
    spec = first.spec
    assert spec.kind == "pqfs" and spec.pq_m == 8 and spec.tuned_recall >= 0.95
    assert again.spec == spec and [s[:2] for s in again.sweep] == [s[:2] for s in first.sweep]
    nlist = idx.auto_nlist(3000)
    ivf = [s for s in first.sweep if s[0] == "ivfsq8"]  # tried first, capped, short of target
    assert ivf and max(s[1] for s in ivf) <= nlist // idx.IVF_MAX_FRACTION
    assert all(s[2] < 0.95 for s in ivf)
    assert first.sweep[-1][:3] == ("pqfs", spec.k_factor, spec.tuned_recall)
    _, clustered_result = idx.tune_index(clustered(np.random.default_rng(5)), 0.95, k=20,
                                         flat_max=1000, compare_exact=False)
    assert clustered_result.spec.kind == "ivfsq8"
    with pytest.raises(ConfigError, match="tuning kinds"):
        idx.tune_index(uniform, 0.95, flat_max=1000, kinds=("hnsw",))


def test_exact_search_is_chosen_when_no_index_is_faster(monkeypatch) -> None:
    monkeypatch.setattr(idx, "_exact_ms", lambda *args: 0.0)
    vectors = unit(np.random.default_rng(7).standard_normal((1500, 32)))
    index, result = idx.tune_index(vectors, 0.95, k=20, flat_max=1000)
    assert result.spec.kind == "flat" and result.spec.tuned_recall == 1.0
    assert result.sweep and index.ntotal == 1500


@pytest.mark.parametrize("structure, kind", [("clusters", "ivfsq8"), ("none", "pqfs")])
def test_tuned_index_is_stored_and_used(tmp_path: Path, monkeypatch, capsys, structure: str,
                                        kind: str) -> None:
    monkeypatch.setattr(idx, "FLAT_MAX_PLACES", 200)
    monkeypatch.setattr(idx, "_exact_ms", lambda *args: float("inf"))  # as on a large map
    rng = np.random.default_rng(6)
    n = 2400  # clusters of ~100 places: a place's 100 neighbours are its cluster
    g = clustered(rng, n, 16, 24) if structure == "clusters" else unit(
        rng.standard_normal((n, 16)))
    feats = Features(g, unit(rng.standard_normal((n, 64, C))).astype(np.float16))
    with PlaceMap.create(tmp_path / "m", INFO, index=IndexSpec("flat")) as pm:
        pm.append(feats, places(n))
        result = pm.tune_index(0.9)
    with PlaceMap.open(tmp_path / "m", verify=True) as pm:
        spec = pm.index_spec
        assert spec == result.spec and spec.kind == kind and spec.tuned_recall >= 0.9
        assert pm.search(g[7], 1).ids[0, 0] == 7
    assert cli(["map-info", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    setting = (f"nprobe {spec.nprobe}, coarse hnsw" if kind == "ivfsq8" else
               f"{spec.pq_m} x 4-bit PQ re-scored x{spec.k_factor} with SQ8")
    assert f"{setting}; tuned for recall@100 0.900" in out


def test_pqfs_index_round_trips_through_the_map(tmp_path: Path) -> None:
    """Created with the kind, extended by a second commit, verified, reopened and searched."""
    rng = np.random.default_rng(11)
    g = unit(rng.standard_normal((300, 16)))
    feats = Features(g, unit(rng.standard_normal((300, 64, C))).astype(np.float16))
    spec = IndexSpec("pqfs", pq_m=4, k_factor=50, use_gpu=False)
    with PlaceMap.create(tmp_path / "m", INFO, index=spec) as pm:
        pm.append(feats.select(slice(0, 200)), places(200))
        pm.append(feats.select(slice(200, 300)), places(100, 200))
    with PlaceMap.open(tmp_path / "m", verify=True) as pm:
        assert pm.index_spec == spec and pm.count == 300
        found = pm.search(g[[5, 250]], 10)
        assert found.ids[:, 0].tolist() == [5, 250]
        # every place re-scored (50 x 10 > 300) with 8-bit codes: near-ties may swap
        exact = np.argsort(-(g[[5, 250]].astype(np.float64) @ g.T.astype(np.float64)), axis=1)
        assert sum(len(set(f) & set(e[:10])) for f, e in zip(found.ids, exact, strict=True)) >= 18
    with PlaceMap.create(tmp_path / "bad", INFO, index=IndexSpec("pqfs", pq_m=5)) as pm:
        with pytest.raises(ConfigError, match="pq_m=5 must divide"):
            pm.append(feats.select(slice(0, 20)), places(20))


def test_threaded_shards_return_what_the_single_index_returns(monkeypatch) -> None:
    """Shards cut a pqfs index at its code blocks; with every place re-scored, same top-k."""
    rng = np.random.default_rng(12)
    vectors = unit(rng.standard_normal((1001, 32)))  # 1001: the last code block is padded
    queries = unit(rng.standard_normal((20, 32)))
    index, spec = idx.build_index(IndexSpec("pqfs", pq_m=8, k_factor=303), vectors)
    monkeypatch.setattr(idx, "SHARD_MIN_PLACES", 300)
    sharded = idx.threaded_shards(index, spec, threads=3)
    assert isinstance(sharded, faiss.IndexShards) and sharded.ntotal == 1001
    parts = [faiss.downcast_index(sharded.at(i)) for i in range(3)]
    assert [p.ntotal for p in parts] == [320, 352, 329]  # cuts at multiples of 32 places
    assert all(p.k_factor == 101 for p in parts)  # 303 / 3: the same places re-scored in all
    sims, ids = index.search(queries, 10)  # 10 x 101 > 352: every place re-scored both ways
    del index  # the shards own copies of the codes
    got_sims, got_ids = sharded.search(queries, 10)
    np.testing.assert_array_equal(got_ids, ids)
    np.testing.assert_allclose(got_sims, sims, rtol=1e-6)
    again, _ = idx.build_index(IndexSpec("pqfs", pq_m=8), vectors)
    assert idx.threaded_shards(again, spec, threads=1) is again  # one thread: no shards
    monkeypatch.setattr(idx, "SHARD_MIN_PLACES", 501)
    assert idx.threaded_shards(again, spec, threads=3) is again  # shards would be too small
    flat, flat_spec = idx.build_index(IndexSpec("flat"), vectors)
    assert idx.threaded_shards(flat, flat_spec, threads=3) is flat


def test_pqfs_index_of_other_parts_is_refused(tmp_path: Path) -> None:
    """An IndexRefine of other indexes under a manifest that says pqfs: one-line refusal."""
    other = faiss.IndexRefine(faiss.IndexFlatIP(16), faiss.IndexFlatIP(16))
    other.add(unit(np.random.default_rng(14).standard_normal((40, 16))))
    faiss.write_index(other, str(tmp_path / "index.faiss"))
    with pytest.raises(MapFormatError, match="re-scores a faiss IndexFlatIP with IndexFlatIP"):
        idx.read_index(tmp_path / "index.faiss", IndexSpec("pqfs"), writable=False)


def test_read_only_pqfs_map_searches_its_shards(tmp_path: Path, monkeypatch) -> None:
    rng = np.random.default_rng(13)
    g = unit(rng.standard_normal((400, 16)))
    feats = Features(g, unit(rng.standard_normal((400, 64, C))).astype(np.float16))
    with PlaceMap.create(tmp_path / "m", INFO, index=IndexSpec("pqfs", pq_m=4, k_factor=80),
                         ) as pm:
        pm.append(feats, places(400))
        want = pm.search(g[:30], 10)
    monkeypatch.setattr(idx, "SHARD_MIN_PLACES", 100)
    monkeypatch.setattr(faiss, "omp_get_max_threads", lambda: 2)
    with PlaceMap.open(tmp_path / "m") as pm:
        assert isinstance(pm.load_index(), faiss.IndexShards)
        got = pm.search(g[:30], 10)
    np.testing.assert_array_equal(got.ids, want.ids)
    np.testing.assert_allclose(got.similarities, want.similarities, rtol=1e-6)
