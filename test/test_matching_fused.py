"""The fused Triton MNN kernel against the exact CPU path (the oracle).

Without a GPU the kernel runs under Triton's interpreter, on CPU tensors, in a child process
(test/fused_testlib.py says why); the exact fp32 path runs here on the same integer features,
where every product is exact, so the fused fp16 results must be equal, ties included (ties
are frequent with such features: asserted, so the tie-breaking is really exercised). On a
CUDA machine the last test also runs the compiled kernel against the chunked fp16 method.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fused_testlib import CASES, FIELDS, compile_for_gpu, run_interpreted
from selavpr_ros.errors import ConfigError
from selavpr_ros.matching import fused_triton, mnn, mnn_matches
from selavpr_ros.matching.mnn import _resolve_method

pytest.importorskip("triton", reason="triton is not installed (requirements-dev.txt)")


@pytest.fixture(scope="module")
def fused(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """Run the fused method on every case, in one interpreter run."""
    return run_interpreted(tmp_path_factory.mktemp("fused") / "fused.npz")


def _exact(name: str, method: str = "auto") -> tuple[dict[str, np.ndarray], np.ndarray,
                                                     np.ndarray]:
    query, cands, options = CASES[name]()
    exact = mnn_matches(query, cands.astype(np.float32), method=method, **options)
    return {f: getattr(exact, f) for f in FIELDS}, query, cands


def _assert_same(fused: dict[str, np.ndarray], name: str, exact: dict[str, np.ndarray]) -> None:
    for field in FIELDS:
        np.testing.assert_array_equal(fused[f"{name}/{field}"], exact[field],
                                      err_msg=f"{name}: {field}")
    np.testing.assert_array_equal(fused[f"{name}/scores"], exact["counts"],
                                  err_msg=f"{name}: mnn_scores")


def _tied_rows(query: np.ndarray, cands: np.ndarray) -> int:
    """How many (candidate, query feature) rows have their maximum more than once."""
    sim = np.einsum("qc,knc->kqn", query.reshape(-1, query.shape[-1]),
                    cands.reshape(cands.shape[0], -1, cands.shape[-1]).astype(np.float32))
    return int(((sim == sim.max(axis=2, keepdims=True)).sum(axis=2) > 1).sum())


@pytest.mark.parametrize("name", ["plain_61_130_32", "plain_97_64_128", "plain_130_61_64",
                                  "negative"])
def test_fused_counts_and_pairs_equal_the_exact_cpu_path(
        fused: dict[str, np.ndarray], name: str) -> None:
    exact, query, cands = _exact(name)
    assert _tied_rows(query, cands) > 0  # the data exercises the tie-breaking
    if name == "negative":  # the order of negative values (and -0 = +0) is exercised
        assert (exact["similarity"] < 0).any() and (exact["similarity"] <= 0).all()
    assert exact["counts"].min() > 0
    _assert_same(fused, name, exact)


def test_fused_with_masks_and_int8_scales_equals_the_exact_cpu_path(
        fused: dict[str, np.ndarray]) -> None:
    # chunked: like the fused method it keeps -inf (not 0) as the similarity of a candidate
    # with no valid feature, which the tiled method skips
    exact, _, _ = _exact("masked_int8", "chunked")
    np.testing.assert_array_equal(_exact("masked_int8")[0]["counts"], exact["counts"])
    assert exact["counts"][2] == 0 and exact["counts"][:2].min() > 0
    _assert_same(fused, "masked_int8", exact)


def test_ties_across_tiles_and_query_blocks_go_to_the_first_index(
        fused: dict[str, np.ndarray]) -> None:
    """Analytic: every candidate feature is v; queries 40 and 65 are 2v, in two query blocks.

    Each query's nearest candidate feature is the first (all tie, across several candidate
    tiles); every candidate feature's nearest query is 40 (the first of the tied pair, in the
    earlier block of 32), so the one mutual pair is (40, 0), similarity 2 v.v = 8.
    """
    assert fused["ties/counts"].tolist() == [1, 1]
    assert np.flatnonzero(fused["ties/mutual"][1]).tolist() == [40]
    assert (fused["ties/nearest"] == 0).all()
    assert fused["ties/similarity"][1, 40] == 8.0


def test_fully_masked_query_scores_zero(fused: dict[str, np.ndarray]) -> None:
    assert fused["query_masked/counts"].tolist() == [0, 0]
    assert np.isneginf(fused["query_masked/similarity"]).all()


def test_the_self_check_passes_under_the_interpreter(fused: dict[str, np.ndarray]) -> None:
    assert bool(fused["self_check"])


@pytest.mark.parametrize("fault", ["wrong", "raises"])
def test_a_kernel_that_disagrees_is_not_used(monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture,
                                             fault: str) -> None:
    """The once-per-device check refuses a kernel whose pairs differ from the chunked ones."""
    def broken(q: torch.Tensor, c: torch.Tensor, *args: object) -> fused_triton.FusedResult:
        if fault == "raises":
            raise RuntimeError("no kernel image for this GPU")
        lq = q.shape[0]
        nearest = torch.zeros(c.shape[0], lq, dtype=torch.long)
        mutual = torch.zeros(c.shape[0], lq, dtype=torch.bool)
        return fused_triton.FusedResult(mutual.sum(dim=1), nearest, mutual,
                                        torch.zeros(c.shape[0], lq))

    monkeypatch.setattr(mnn, "_FUSED_CHECKS", {})
    monkeypatch.setattr(fused_triton, "fused_mnn", broken)
    with caplog.at_level("WARNING", logger="selavpr_ros.matching.mnn"):
        assert not mnn.fused_is_exact(torch.device("cpu"))
    assert "fused MNN kernel not used" in caplog.text
    assert ("failed" if fault == "raises" else "disagrees") in caplog.text


def test_auto_picks_the_fused_kernel_only_where_it_applies() -> None:
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert _resolve_method("auto", cuda, None, "none", "fp16", 128) == "fused"
    assert _resolve_method("auto", cuda, None, "ratio", "fp16", 128) == "chunked"
    assert _resolve_method("auto", cuda, None, "min_similarity", "fp16", 128) == "chunked"
    assert _resolve_method("auto", cuda, None, "none", "fp32", 128) == "chunked"
    assert _resolve_method("auto", cuda, None, "none", "fp16", 1024) == "chunked"
    assert _resolve_method("auto", cuda, None, "none", "fp16", 128, 70000) == "chunked"
    assert _resolve_method("auto", cuda, 8, "none", "fp16", 128) == "chunked"
    assert _resolve_method("chunked", cuda, None, "none", "fp16", 128) == "chunked"  # opt out
    assert _resolve_method("auto", cpu, None, "none", "fp32", 128) == "tiled"
    with pytest.raises(ConfigError, match="fused"):
        _resolve_method("fused", cuda, None, "ratio", "fp16", 128)
    with pytest.raises(ConfigError, match="fused"):
        _resolve_method("fused", cpu, None, "none", "fp16", 128)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compiled_kernel_equals_chunked_fp16_and_exact_cpu() -> None:
    rng = np.random.default_rng(11)
    query = torch.from_numpy(rng.integers(-2, 3, (61, 61, 128)).astype(np.float32))
    cands = torch.from_numpy(rng.integers(-3, 4, (5, 61, 61, 128)).astype(np.int8))
    options = dict(
        query_mask=torch.from_numpy(rng.random((61, 61)) > 0.1),
        candidate_mask=torch.from_numpy(rng.random((5, 61, 61)) > 0.1),
        candidate_scale=torch.from_numpy(
            (2.0 ** rng.integers(-2, 2, (5, 61, 61))).astype(np.float32)))
    runs = {
        "fused": mnn_matches(query.cuda(), cands.cuda(), precision="fp16", method="fused",
                             **options),
        "chunked": mnn_matches(query.cuda(), cands.cuda(), precision="fp16", method="chunked",
                               **options),
        "exact": mnn_matches(query, cands.float(), method="chunked", **options),  # no numba
    }
    for other in ("chunked", "exact"):
        for field in FIELDS:
            np.testing.assert_array_equal(getattr(runs["fused"], field),
                                          getattr(runs[other], field), err_msg=other + field)
    assert runs["fused"].counts.min() > 0


@pytest.mark.parametrize(("arch", "candidates", "flags", "block_n", "warps"), [
    (90, "fp16", False, 64, 8), (90, "fp16", True, 128, 8), (80, "fp16", True, 64, 4)])
def test_kernel_compiles_for_hopper_and_ampere_without_a_gpu(
        arch: int, candidates: str, flags: bool, block_n: int, warps: int) -> None:
    try:
        from triton.backends.nvidia.compiler import get_ptxas  # noqa: F401
    except ImportError:
        pytest.skip("this triton has no NVIDIA backend")
    assert len(compile_for_gpu(arch, candidates, flags, block_n, warps)) > 1000
