"""Device cache of the map's local features, and the map's gather into a reused buffer.

The cache on the CPU stands in for a GPU: same code path, must give identical results.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import selavpr_ros.map.segments as segments
from extractor_testlib import FeatureOnlyExtractor
from selavpr_ros.extractors.base import ExtractorInfo, Features
from selavpr_ros.localizer import LocalFeatureCache, Localizer, LocalizerConfig
from selavpr_ros.localizer.cache import local_feature_bytes
from selavpr_ros.map import PlaceInfo, PlaceMap
from selavpr_ros.map.local_format import LocalFormat

D, L, C = 16, 12, 8


def _ids(variable: bool) -> FeatureOnlyExtractor:
    return FeatureOnlyExtractor(ExtractorInfo("synthetic", "w", D, L, C,
                                              variable_local_count=variable))


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _features(n: int, seed: int, variable: bool) -> Features:
    rng = np.random.default_rng(seed)
    mask = rng.random((n, L)) > 0.3 if variable else None
    return Features(_unit(rng.standard_normal((n, D))), _unit(rng.standard_normal((n, L, C))),
                    local_mask=mask)


def _map(tmp_path: Path, variable: bool, dtype: str = "float16", fmt: str = "") -> PlaceMap:
    pm = PlaceMap.create(tmp_path / "m", _ids(variable), local_dtype=dtype,
                         local_format=LocalFormat.parse(fmt) if fmt else None)
    for seg, n in enumerate((9, 7, 11)):  # three segments
        pm.append(_features(n, seg, variable), [PlaceInfo(stamp_ns=i) for i in range(n)])
    return pm


@pytest.mark.parametrize("variable, fmt", [(False, ""), (True, ""), (True, "int4")])
def test_cpu_cache_gives_identical_results(tmp_path: Path, variable: bool, fmt: str) -> None:
    pm = _map(tmp_path, variable, fmt=fmt)
    cfg = LocalizerConfig(top_k=20, rerank_k=15, min_margin=1.0)
    cache = LocalFeatureCache.build(pm, "cpu", 2**30)
    assert cache is not None and cache.nbytes == local_feature_bytes(pm)
    # int4 stays packed on the device: half the bytes of int8 codes
    assert cache.local.dtype == (torch.uint8 if fmt == "int4" else torch.float16)
    assert cache.local.shape[-1] == (C // 2 if fmt == "int4" else C)
    plain = Localizer(pm, _ids(variable), cfg)
    cached = Localizer(pm, _ids(variable), cfg, feature_cache=cache)
    assert plain.feature_cache is None and cached.feature_cache is cache
    queries = _features(4, 99, variable)
    for i in range(4):
        q = Features(queries.global_desc[i : i + 1], queries.local[i : i + 1],
                     None if queries.local_mask is None else queries.local_mask[i : i + 1])
        a, b = plain.query_features(q), cached.query_features(q)
        assert [c.place_id for c in a.candidates] == [c.place_id for c in b.candidates]
        np.testing.assert_array_equal([c.rerank_score for c in a.candidates],
                                      [c.rerank_score for c in b.candidates])
        assert sum(c.rerank_score > 0 for c in a.candidates[:15]) > 0


def test_cache_gathers_rows_in_the_given_order(tmp_path: Path) -> None:
    pm = _map(tmp_path, variable=True)
    cache = LocalFeatureCache.build(pm, torch.device("cpu"), 2**30)
    ids = np.array([26, 0, 9, 9, 15])
    local, mask = cache.gather(ids)
    want = pm.features(ids)
    np.testing.assert_array_equal(local.numpy(), want.local)
    np.testing.assert_array_equal(mask.numpy(), want.local_mask)
    assert local.dtype == torch.float16


def test_cache_respects_the_budget(tmp_path: Path) -> None:
    pm = _map(tmp_path, variable=False, dtype="float32")
    needed = local_feature_bytes(pm)
    assert needed == 27 * L * C * 4
    assert LocalFeatureCache.build(pm, "cpu", needed - 1) is None
    assert LocalFeatureCache.build(pm, "cpu", needed) is not None
    # automatic: only on CUDA
    assert Localizer(pm, _ids(False), LocalizerConfig(top_k=5)).feature_cache is None


@pytest.mark.parametrize("row_copy_bytes", [0, 2**30])  # one copy per row / fancy index
def test_map_gather_into_a_buffer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  row_copy_bytes: int) -> None:
    monkeypatch.setattr(segments, "ROW_COPY_BYTES", row_copy_bytes)
    pm = _map(tmp_path, variable=False)
    everything = pm.features(np.arange(27)).local
    ids = np.array([20, 3, 3, 26, 0, 12, 8, 9])
    buf = np.full((len(ids), L, C), np.nan, np.float16)
    got = pm.features(ids, local_out=buf)
    assert got.local is buf
    np.testing.assert_array_equal(buf, everything[ids])
    with pytest.raises(ValueError, match="out is"):
        pm.features(ids, local_out=np.empty((len(ids), L, C), np.float32))


def test_localizer_reuses_its_fetch_buffer(tmp_path: Path) -> None:
    pm = _map(tmp_path, variable=False)
    localizer = Localizer(pm, _ids(False), LocalizerConfig(top_k=10, min_margin=1.0))
    q = _features(2, 5, False)
    first = localizer.query_features(Features(q.global_desc[:1], q.local[:1]))
    buffer = localizer._fetch_buffer
    assert buffer is not None and buffer.shape == (10, L, C)
    localizer.query_features(Features(q.global_desc[1:], q.local[1:]))
    assert localizer._fetch_buffer is buffer
    again = localizer.query_features(Features(q.global_desc[:1], q.local[:1]))
    assert [c.rerank_score for c in again.candidates] == [c.rerank_score
                                                           for c in first.candidates]
