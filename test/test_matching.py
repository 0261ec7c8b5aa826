"""MNN scores against the plain unchunked reference (bench/reference_mnn.py); hand-made cases."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from extractor_testlib import unit
from reference_mnn import (  # bench/ (pytest.ini pythonpath)
    loop_mnn_scores,
    reference_mnn_pairs,
    reference_mnn_scores,
)
from selavpr_ros.errors import ConfigError
from selavpr_ros.matching import MnnMatches, chunk_size_for_budget, mnn, mnn_matches, mnn_scores

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("k", "lq", "lc", "c", "seed"),
    [(1, 40, 40, 16, 0), (7, 100, 100, 32, 1), (12, 64, 81, 8, 2), (5, 150, 90, 64, 3)],
)
def test_random_features_match_reference(k: int, lq: int, lc: int, c: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    q = unit(rng.standard_normal((lq, c)))
    cands = unit(rng.standard_normal((k, lc, c)))
    expected = reference_mnn_scores(q, cands)
    assert np.array_equal(mnn_scores(q, cands), expected)
    assert np.array_equal(mnn_scores(torch.from_numpy(q), torch.from_numpy(cands)), expected)


def test_float16_candidates_match_reference() -> None:
    rng = np.random.default_rng(4)
    q = unit(rng.standard_normal((11, 11, 32)))
    cands = unit(rng.standard_normal((6, 11, 11, 32))).astype(np.float16)
    cands[2] = q.astype(np.float16)  # a near-copy of the query
    expected = reference_mnn_scores(q, cands)
    assert np.array_equal(mnn_scores(q, cands), expected)
    assert expected[2] == 121  # distinct random features: every one finds itself


def test_full_size_grid_matches_reference() -> None:
    """Real SelaVPR shapes: 61x61x128, a few candidates (one of them the query itself)."""
    rng = np.random.default_rng(5)
    q = unit(rng.standard_normal((61, 61, 128)))
    cands = unit(rng.standard_normal((3, 61, 61, 128))).astype(np.float16)
    cands[1] = q.astype(np.float16)
    expected = reference_mnn_scores(q, cands)
    assert np.array_equal(mnn_scores(q, cands, chunk_size=2), expected)
    assert expected[1] == 61 * 61


def test_exact_ties_match_reference_and_loops() -> None:
    """Small integer vectors make many exact ties; argmax must take the first index."""
    rng = np.random.default_rng(6)
    for _ in range(20):
        q = rng.integers(-1, 2, size=(25, 4)).astype(np.float32)
        cands = rng.integers(-1, 2, size=(6, 30, 4)).astype(np.float32)
        expected = loop_mnn_scores(q, cands)
        assert np.array_equal(reference_mnn_scores(q, cands), expected)
        for chunk in (1, 4, 6):
            assert np.array_equal(mnn_scores(q, cands, chunk_size=chunk), expected)


def test_one_match_counts_one() -> None:
    """Every candidate feature equals v; only query feature 2 equals v: exactly one MNN."""
    v = np.array([1.0, 0.0, 0.0, 0.0], np.float32)
    q = np.array([[0, 1, 0, 0], [0, 0, 1, 0], v, [0, 0, 0, 1], [0.6, 0.8, 0, 0]], np.float32)
    cands = np.tile(v, (2, 7, 1))
    # best candidate feature of every query feature is feature 0 (a tie, first index);
    # feature 0's best query feature is 2, so only query feature 2 is mutual.
    assert list(mnn_scores(q, cands)) == [1, 1]
    assert list(reference_mnn_scores(q, cands, single_match_quirk=True)) == [0, 0]


def test_identical_distinct_features_all_match() -> None:
    eye = np.eye(9, dtype=np.float32)
    assert list(mnn_scores(eye, eye[None])) == [9]
    # a permutation of the same features: still all mutual
    assert list(mnn_scores(eye, eye[None, ::-1])) == [9]


def test_chunk_size_and_budget_do_not_change_counts() -> None:
    rng = np.random.default_rng(7)
    q = unit(rng.standard_normal((60, 16)))
    cands = unit(rng.standard_normal((9, 70, 16)))
    expected = mnn_scores(q, cands, chunk_size=9)
    for chunk in (1, 2, 5, 8, 100):
        assert np.array_equal(mnn_scores(q, cands, chunk_size=chunk), expected)
    for budget in (1, 60 * 70 * 4 * 3, 10**9):
        assert np.array_equal(mnn_scores(q, cands, memory_budget=budget), expected)


def test_chunk_size_for_budget_bounds_the_similarity_tensor() -> None:
    lq = lc = 3721
    budget = 256 * 2**20
    chunk = chunk_size_for_budget(lq, lc, 128, budget)
    assert chunk >= 1
    assert chunk * lq * lc * 4 <= budget  # the similarity tensors of one chunk fit
    assert chunk_size_for_budget(lq, lc, 128, 1) == 1


def test_masks_equal_matching_only_the_valid_features() -> None:
    rng = np.random.default_rng(8)
    q = unit(rng.standard_normal((50, 16)))
    cands = unit(rng.standard_normal((5, 40, 16)))
    q_mask = rng.random(50) < 0.7
    c_mask = rng.random((5, 40)) < 0.6
    c_mask[3] = False  # a candidate without any valid feature
    got = mnn_scores(q, cands, query_mask=q_mask, candidate_mask=c_mask)
    expected = [
        0 if not c_mask[n].any() else reference_mnn_scores(q[q_mask], cands[n][c_mask[n]][None])[0]
        for n in range(5)
    ]
    assert list(got) == expected
    assert got[3] == 0


def _numpy_mutual_pairs(q: np.ndarray, c: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
    sim = c.astype(np.float64) @ q.T.astype(np.float64)
    pairs = []
    for j in range(q.shape[0]):
        i = int(np.argmax(sim[:, j]))
        if int(np.argmax(sim[i])) == j:
            pairs.append((i, j, sim[:, j]))
    return pairs


def test_min_similarity_filter() -> None:
    rng = np.random.default_rng(9)
    q = unit(rng.standard_normal((40, 8)))
    cands = unit(rng.standard_normal((4, 45, 8)))
    got = mnn_scores(q, cands, match_filter="min_similarity", min_similarity=0.8)
    expected = [
        sum(1 for i, _, col in _numpy_mutual_pairs(q, c) if col[i] >= 0.8) for c in cands
    ]
    assert list(got) == expected
    assert sum(expected) < sum(mnn_scores(q, cands))  # the filter removed something


def test_ratio_filter() -> None:
    rng = np.random.default_rng(10)
    q = unit(rng.standard_normal((40, 8)))
    cands = unit(rng.standard_normal((4, 45, 8)))
    got = mnn_scores(q, cands, match_filter="ratio", ratio=0.8)

    def keep(col: np.ndarray) -> bool:
        s1, s2 = np.sort(col)[::-1][:2]
        return np.sqrt(max(0.0, 2 - 2 * s1)) < 0.8 * np.sqrt(max(0.0, 2 - 2 * s2))

    expected = [sum(1 for _, _, col in _numpy_mutual_pairs(q, c) if keep(col)) for c in cands]
    assert list(got) == expected
    assert 0 < sum(expected) < sum(mnn_scores(q, cands))


def test_bad_inputs_are_refused() -> None:
    q = np.zeros((4, 8), np.float32)
    with pytest.raises(ValueError, match="channels"):
        mnn_scores(q, np.zeros((2, 4, 7), np.float32))
    with pytest.raises(ConfigError, match="fp16"):
        mnn_scores(q, np.zeros((2, 4, 8), np.float32), precision="fp16")
    with pytest.raises(ConfigError, match="match_filter"):
        mnn_scores(q, np.zeros((2, 4, 8), np.float32), match_filter="sometimes")
    assert mnn_scores(q, np.zeros((0, 4, 8), np.float32)).shape == (0,)


def test_matching_does_not_import_faiss() -> None:
    code = "import sys, selavpr_ros.matching; assert 'faiss' not in sys.modules, 'faiss'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_row_tiles_are_balanced_and_cover_the_rows() -> None:
    for rows, lq in [(3721, 3721), (100, 3721), (1, 5), (97, 10_000), (5000, 7)]:
        tiles = mnn.row_tiles(rows, lq)
        assert tiles[0][0] == 0 and tiles[-1][1] == rows
        assert all(a[1] == b[0] for a, b in itertools.pairwise(tiles))
        sizes = [stop - start for start, stop in tiles]
        assert max(sizes) - min(sizes) <= 1  # no tiny tail block
        assert min(sizes) >= min(rows, mnn.MIN_TILE_ROWS)
    assert len(mnn.row_tiles(3721, 3721)) > 1  # the real shape is tiled


def _small_tiles(monkeypatch: pytest.MonkeyPatch, rows: int) -> None:
    """Force several row blocks on small inputs (blocks of ``rows`` rows)."""
    monkeypatch.setattr(mnn, "MIN_TILE_ROWS", 1)
    monkeypatch.setattr(mnn, "TILE_BYTES", 1)
    monkeypatch.setattr(mnn, "row_tiles", lambda r, q, tile_bytes=None, element_bytes=4: [
        (s, min(r, s + rows)) for s in range(0, r, rows)])


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_tiled_full_size_matches_reference(workers: int) -> None:
    """61x61x128 with near-ties: candidates are noisy copies of the query and of each other."""
    rng = np.random.default_rng(12)
    q = unit(rng.standard_normal((61, 61, 128)))
    cands = unit(q[None] + 0.3 * rng.standard_normal((5, 61, 61, 128))).astype(np.float16)
    cands[3] = unit(rng.standard_normal((61, 61, 128)))
    cands[4] = cands[0]
    expected = reference_mnn_scores(q, cands)
    got = mnn_scores(q, cands, method="tiled", workers=workers)
    assert np.array_equal(got, expected)
    assert got[0] == got[4] and got[0] > got[3]


def test_tiled_exact_ties_take_the_first_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """Integer features tie everywhere; ties across row blocks must go to the first block."""
    rng = np.random.default_rng(13)
    for rows in (1, 3, 7):
        _small_tiles(monkeypatch, rows)
        for _ in range(10):
            q = rng.integers(-1, 2, size=(25, 4)).astype(np.float32)
            cands = rng.integers(-1, 2, size=(6, 30, 4)).astype(np.float32)
            expected = loop_mnn_scores(q, cands)
            for workers in (1, 2):
                got = mnn._tiled_counts(torch.from_numpy(q), cands, mnn.row_tiles(30, 25),
                                        None, None, None, workers)
                assert np.array_equal(got, expected)


def test_tiled_masks_and_min_similarity_match_chunked() -> None:
    rng = np.random.default_rng(14)
    q = unit(rng.standard_normal((300, 16)))
    cands = unit(rng.standard_normal((5, 290, 16)))
    q_mask = rng.random(300) < 0.7
    c_mask = rng.random((5, 290)) < 0.6
    c_mask[3] = False
    for kwargs in ({}, {"match_filter": "min_similarity", "min_similarity": 0.7}):
        chunked = mnn_scores(q, cands, query_mask=q_mask, candidate_mask=c_mask,
                             method="chunked", **kwargs)
        tiled = mnn_scores(q, cands, query_mask=q_mask, candidate_mask=c_mask,
                           method="tiled", workers=2, **kwargs)
        assert np.array_equal(tiled, chunked)
        assert tiled[3] == 0 and tiled.sum() > 0


def test_tiling_check_refuses_blocks_that_change_the_sums(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """When a block product differs from the full one, the chunked method is used instead."""
    real_mm = torch.mm

    def skewed_mm(a: torch.Tensor, b: torch.Tensor, *, out: torch.Tensor) -> torch.Tensor:
        real_mm(a, b, out=out)
        return out.mul_(1 + 2**-20)  # a different rounding, as another kernel would give

    monkeypatch.setattr(mnn, "_TILING_CHECKS", {})
    monkeypatch.setattr(mnn.torch, "mm", skewed_mm)
    assert not mnn.tiling_is_exact(300, 200, 8, mnn.row_tiles(300, 200))
    monkeypatch.setattr(mnn.torch, "mm", real_mm)
    rng = np.random.default_rng(15)
    q = unit(rng.standard_normal((200, 8)))
    cands = unit(rng.standard_normal((3, 300, 8)))
    monkeypatch.setattr(mnn, "_tiled_counts", None)  # must not be reached
    assert np.array_equal(mnn_scores(q, cands, method="tiled"), reference_mnn_scores(q, cands))


@pytest.mark.parametrize("workers", [1, 2])
def test_tiled_ratio_filter_matches_chunked(monkeypatch: pytest.MonkeyPatch,
                                            workers: int) -> None:
    """The ratio filter on row blocks (merged top-2 per column) equals the chunked reference."""
    rng = np.random.default_rng(16)
    q = unit(rng.standard_normal((300, 16)))
    cands = unit(q[None] + 0.5 * rng.standard_normal((6, 300, 16))).astype(np.float16)
    cands[2] = unit(rng.standard_normal((300, 16)))
    q_mask = rng.random(300) < 0.8
    c_mask = rng.random((6, 300)) < 0.7
    scale = rng.uniform(0.5, 1.5, (6, 300)).astype(np.float32)
    _small_tiles(monkeypatch, 70)  # 5 blocks, the last one short
    for kwargs in ({}, {"query_mask": q_mask, "candidate_mask": c_mask},
                   {"candidate_scale": scale}):
        chunked = mnn_scores(q, cands, match_filter="ratio", ratio=0.9, method="chunked",
                             **kwargs)
        tiled = mnn_scores(q, cands, match_filter="ratio", ratio=0.9, method="tiled",
                           workers=workers, **kwargs)
        assert np.array_equal(tiled, chunked)
        assert 0 < tiled.sum() < mnn_scores(q, cands, method="chunked", **kwargs).sum()


def test_tiled_ties_in_rows_and_columns_match_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """Integer features tie everywhere: every filter must still give the chunked counts."""
    rng = np.random.default_rng(17)
    _small_tiles(monkeypatch, 4)
    for _ in range(10):
        q = rng.integers(-1, 2, size=(25, 4)).astype(np.float32)
        cands = rng.integers(-1, 2, size=(6, 30, 4)).astype(np.float32)
        for kwargs in ({}, {"match_filter": "ratio", "ratio": 0.95},
                       {"match_filter": "min_similarity", "min_similarity": 1.0}):
            chunked = mnn_scores(q, cands, method="chunked", **kwargs)
            tiled = mnn_scores(q, cands, method="tiled", workers=2, **kwargs)
            assert np.array_equal(tiled, chunked), kwargs


def test_tiled_ties_on_real_shapes_match_chunked() -> None:
    """61x61x128 with duplicated features (exact ties in rows and columns), every filter."""
    rng = np.random.default_rng(18)
    q = unit(rng.standard_normal((61 * 61, 128)))
    cands = unit(q[None] + 0.4 * rng.standard_normal((3, 61 * 61, 128))).astype(np.float16)
    cands[1, 10] = cands[1, 2000]  # column ties: two candidate features are the same vector
    cands[2, 5] = cands[2, 6] = cands[2, 3000]
    q[7] = q[3000]  # row ties: two query features are the same vector
    for kwargs in ({}, {"match_filter": "ratio", "ratio": 0.9},
                   {"match_filter": "min_similarity", "min_similarity": 0.5}):
        got = mnn_scores(q, cands, method="tiled", workers=2, **kwargs)
        assert np.array_equal(got, mnn_scores(q, cands, method="chunked", **kwargs)), kwargs
        assert got.sum() > 0
def assert_pairs_equal(got: MnnMatches, expected: list[tuple[np.ndarray, np.ndarray]]) -> None:
    for n, (query_idx, cand_idx) in enumerate(expected):
        pairs = got.pairs(n)
        assert np.array_equal(pairs.query, query_idx)
        assert np.array_equal(pairs.place, cand_idx)
        assert got.counts[n] == len(query_idx)


@pytest.mark.parametrize("method", ["tiled", "chunked"])
def test_matches_keep_the_reference_pairs(method: str) -> None:
    """The pairs behind the counts are the reference's, on near-ties of a full-size grid."""
    rng = np.random.default_rng(16)
    q = unit(rng.standard_normal((61, 61, 128)))
    cands = unit(q[None] + 0.3 * rng.standard_normal((4, 61, 61, 128))).astype(np.float16)
    cands[3] = unit(rng.standard_normal((61, 61, 128)))
    got = mnn_matches(q, cands, method=method, workers=2)
    assert_pairs_equal(got, reference_mnn_pairs(q, cands))
    assert np.array_equal(got.counts, reference_mnn_scores(q, cands))
    assert np.array_equal(got.counts, mnn_scores(q, cands, method=method))
    assert got.counts[0] > 1000 and got.counts[3] < got.counts[0]
    pairs = got.pairs(1)  # similarity of each pair: the dot product of its two features
    flat_q, flat_c = q.reshape(-1, 128), cands[1].reshape(-1, 128).astype(np.float32)
    assert np.allclose(pairs.similarity,
                       np.einsum("nc,nc->n", flat_q[pairs.query], flat_c[pairs.place]),
                       atol=1e-5)


def test_matches_keep_the_first_index_on_exact_ties(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(17)
    _small_tiles(monkeypatch, 3)  # ties across row blocks of the tiled method
    for _ in range(10):
        q = rng.integers(-1, 2, size=(25, 4)).astype(np.float32)
        cands = rng.integers(-1, 2, size=(6, 30, 4)).astype(np.float32)
        expected = reference_mnn_pairs(q, cands)
        assert np.array_equal([len(e[0]) for e in expected], loop_mnn_scores(q, cands))
        for method in ("tiled", "chunked"):
            assert_pairs_equal(mnn_matches(q, cands, method=method), expected)


def test_matches_with_masks_and_filters_are_the_counted_pairs() -> None:
    """Masked features never pair; pairs of the masked-out reference, in original indices."""
    rng = np.random.default_rng(18)
    q = unit(rng.standard_normal((300, 16)))
    cands = unit(q[None, rng.permutation(300)[:290]] + 0.5 * rng.standard_normal((4, 290, 16)))
    q_mask = rng.random(300) < 0.8
    c_mask = rng.random((4, 290)) < 0.7
    c_mask[2] = False
    for method in ("tiled", "chunked"):
        got = mnn_matches(q, cands, query_mask=q_mask, candidate_mask=c_mask, method=method)
        assert np.array_equal(got.counts, mnn_scores(q, cands, query_mask=q_mask,
                                                     candidate_mask=c_mask, method=method))
        assert got.counts[2] == 0 and len(got.pairs(2)) == 0
        for n in (0, 1, 3):
            q_ids, c_ids = np.flatnonzero(q_mask), np.flatnonzero(c_mask[n])
            (qi, ci), = reference_mnn_pairs(q[q_ids], cands[n][c_ids][None])
            pairs = got.pairs(n)
            assert np.array_equal(pairs.query, q_ids[qi])
            assert np.array_equal(pairs.place, c_ids[ci])
            assert len(pairs) > 10
    for kwargs in ({"match_filter": "min_similarity", "min_similarity": 0.7},
                   {"match_filter": "ratio", "ratio": 0.9}):
        got = mnn_matches(q, cands, **kwargs)
        plain = mnn_matches(q, cands)
        assert np.array_equal(got.counts, mnn_scores(q, cands, **kwargs))
        for n in range(4):  # a filter keeps a subset of the plain pairs
            kept, all_ = got.pairs(n), plain.pairs(n)
            assert 0 < len(kept) < len(all_)
            assert set(zip(kept.query.tolist(), kept.place.tolist(), strict=True)) <= set(
                zip(all_.query.tolist(), all_.place.tolist(), strict=True))
        if kwargs["match_filter"] == "min_similarity":
            assert np.all(got.similarity[got.mutual] >= 0.7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_reference() -> None:
    rng = np.random.default_rng(11)
    q = unit(rng.standard_normal((61 * 61, 128)))
    cands = unit(rng.standard_normal((4, 61 * 61, 128))).astype(np.float16)
    expected = reference_mnn_scores(q, cands, device="cuda")  # same device, same matmul
    assert np.array_equal(mnn_scores(q, cands, device="cuda"), expected)
    half = mnn_scores(q, cands, device="cuda", precision="fp16")
    assert np.all(np.abs(half - expected) <= 0.02 * expected)


def test_bf16_counts_equal_fp32_when_the_products_are_exact() -> None:
    """Small integers are exact in bf16 (sums <= 256): bf16 must then give the fp32 counts."""
    rng = np.random.default_rng(23)
    q = rng.integers(-2, 3, size=(3721, 16)).astype(np.float32)
    cands = rng.integers(-2, 3, size=(3, 3721, 16)).astype(np.float32)
    cands[1, :50] = q[:50]  # real matches among the ties
    for kwargs in ({}, {"match_filter": "ratio", "ratio": 0.95},
                   {"match_filter": "min_similarity", "min_similarity": 3.0}):
        exact = mnn_scores(q, cands, **kwargs)
        assert np.array_equal(mnn_scores(q, cands, precision="bf16", **kwargs), exact), kwargs
        pairs = mnn_matches(q, cands, precision="bf16", **kwargs)
        assert np.array_equal(pairs.counts, exact)


def test_bf16_counts_stay_close_to_fp32() -> None:
    """On real-valued features bf16 rounds the similarities: counts move a little, not much."""
    rng = np.random.default_rng(24)
    q = unit(rng.standard_normal((900, 64)))
    cands = unit(q[None] + 0.5 * rng.standard_normal((4, 900, 64))).astype(np.float16)
    exact = mnn_scores(q, cands)
    bf16 = mnn_scores(q, cands, precision="bf16")
    assert not np.array_equal(bf16, np.zeros_like(bf16))
    assert np.abs(bf16 - exact).sum() <= 0.05 * exact.sum()


def test_fp16_is_refused_on_the_cpu_and_bf16_is_not() -> None:
    q = np.zeros((4, 8), np.float32)
    cands = np.zeros((1, 4, 8), np.float32)
    with pytest.raises(ConfigError, match="CUDA"):
        mnn_scores(q, cands, precision="fp16")
    with pytest.raises(ConfigError, match="precision"):
        mnn_scores(q, cands, precision="int4")  # type: ignore[arg-type]
    assert mnn_scores(q, cands, precision="bf16").shape == (1,)
