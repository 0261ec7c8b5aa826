"""Mutual-nearest-neighbour (MNN) re-ranking scores, exact and with bounded memory.

The score of a candidate is the number of query local features whose nearest candidate feature
(by dot product) has that same query feature as its nearest neighbour — SelaVPR's re-ranking
score (docs/model.md, "Re-ranking"). The reference builds one (K, L, L) similarity tensor for
all K candidates (5.5 GB for K=100 at 61x61); here candidates are processed in chunks sized from
a memory budget, which gives the same counts because every candidate's similarity matrix is
computed by the same batched matmul and reduced by the same argmax (first index on ties).

On the CPU the default is the *tiled* method: each candidate's similarity matrix is computed a
block of candidate rows at a time into a small, reused buffer sized to stay in the L3 cache
(``TILE_BYTES``), and both arg-maxima are taken from the block while it is hot, in one
vectorised pass (:mod:`selavpr_ros.matching.block_reduce`): the row arg-max (best query feature
of each candidate feature) is final within the block, the column maximum (best candidate feature
of each query feature) is carried from block to block, earlier block first, so ties still go to
the first index. The (L, L) matrix is never written to memory, which is what makes the
reference's batched product memory-bound. The ratio filter also carries each column's second
largest value (a tied maximum counts twice, as ``topk`` does). Candidates are shared among
worker threads that each run single-threaded torch ops, which avoids OpenMP barriers on tiny ops
(costly when the cores are shared with other processes; bench/PERFORMANCE.md).

Exactness: a row block gives bit-identical dot products to the full product only if the BLAS
library runs the same kernel (same summation order over channels) for the block's shape; on
MKL this holds for blocks of about a hundred rows or more but not, for example, for a 9-row
tail. The tiled method therefore checks, once per process and per shape, that its blocks
reproduce the full product bit for bit on probe data, and falls back to the chunked method
(the reference's own product, chunked over candidates) when they do not.

On CUDA at fp16 with no filter the default is the *fused* method
(:mod:`selavpr_ros.matching.fused_triton`): one Triton kernel computes the similarities tile
by tile and keeps only the arg-maxima, so the (K, L, L) matrices are never written; it rounds
each similarity to fp16 as the chunked product writes it, so both compare the same values.
Without Triton, with a filter, or with ``method="chunked"`` the chunked method runs as before,
and so it does when the kernel fails its once-per-device check (:func:`fused_is_exact`).

Project decision (differs from the reference): a candidate with exactly one mutual match scores
1, not 0. Invalid (masked) features are never matched.

:func:`mnn_matches` runs the same computation and also keeps, per candidate, which query
feature matched which candidate feature: the correspondences of the pose (geometry runs on the
re-ranking's pairs instead of recomputing them). Keeping them copies three (L_query,) rows
per candidate (nearest feature, mutual flag, similarity); :func:`mnn_scores` keeps nothing.

This module imports only numpy and torch so that it runs where faiss is not installed.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from selavpr_ros.errors import ConfigError
from selavpr_ros.matching import fused_triton

log = logging.getLogger(__name__)

Precision = Literal["fp32", "fp16", "bf16"]
Method = Literal["auto", "tiled", "chunked", "fused"]
DEFAULT_MEMORY_BUDGET = 256 * 2**20  # bytes of working memory per chunk of candidates
TILE_BYTES = 4 * 2**20  # similarity block of the tiled method: stays in the L3 cache
MIN_TILE_ROWS = 96  # smaller blocks make MKL switch kernels (and summation order)
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True, eq=False)
class MatchPairs:
    """N mutual nearest neighbours: query feature, candidate feature, similarity."""

    query: np.ndarray  # (N,) int64 flat query feature indices, ascending
    place: np.ndarray  # (N,) int64 flat candidate feature indices
    similarity: np.ndarray  # (N,) float32

    def __len__(self) -> int:
        return int(self.query.shape[0])


@dataclass(frozen=True, eq=False)
class MnnMatches:
    """MNN counts of K candidates and the pairs behind them (from :func:`mnn_matches`).

    Row n of ``nearest``/``mutual``/``similarity`` is candidate n: for each query feature its
    nearest candidate feature, whether that pair counted (mutual, valid, passed the filter)
    and its similarity. ``counts`` is ``mutual.sum(axis=1)``.
    """

    counts: np.ndarray  # (K,) int64
    nearest: np.ndarray  # (K, L_query) int64
    mutual: np.ndarray  # (K, L_query) bool
    similarity: np.ndarray  # (K, L_query) float32

    def pairs(self, n: int) -> MatchPairs:
        """Return the counted pairs of candidate ``n`` (query features in ascending order)."""
        keep = np.flatnonzero(self.mutual[n])
        return MatchPairs(keep.astype(np.int64), self.nearest[n, keep].astype(np.int64),
                          self.similarity[n, keep].astype(np.float32))


class _Kept:
    """Per-candidate buffers that :func:`mnn_matches` fills (one row per candidate)."""

    def __init__(self, num: int, lq: int) -> None:
        self.nearest = np.zeros((num, lq), np.int64)
        self.mutual = np.zeros((num, lq), bool)
        self.similarity = np.zeros((num, lq), np.float32)

    def store(self, rows: slice, nearest: torch.Tensor, mutual: torch.Tensor,
              similarity: torch.Tensor) -> None:
        self.nearest[rows] = nearest.cpu().numpy()
        self.mutual[rows] = mutual.cpu().numpy()
        self.similarity[rows] = similarity.float().cpu().numpy()

    def result(self, counts: np.ndarray) -> MnnMatches:
        return MnnMatches(counts, self.nearest, self.mutual, self.similarity)


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (``avx512_bf16`` or ``amx_bf16``, Linux).

    Elsewhere torch emulates bf16 products, slower than fp32: worth saying to whoever asks
    for bf16 there.
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        pass
    return False


def chunk_size_for_budget(
    query_count: int,
    candidate_count: int,
    channels: int,
    memory_budget: int,
    element_bytes: int = 4,
) -> int:
    """How many candidates fit in ``memory_budget`` bytes of working memory (at least 1).

    Per candidate the chunk holds the (L_cand, L_query) similarity matrix, the candidate's
    features in their source and compute dtypes, and a few index vectors.
    """
    per_candidate = (
        candidate_count * query_count * element_bytes  # similarity matrix
        + candidate_count * channels * (element_bytes + 4)  # features: compute + source copy
        + (candidate_count + 3 * query_count) * 8  # argmax indices, gather, counts
        + 4 * query_count * (element_bytes + 8)  # top-2 values/indices for the ratio test
    )
    return max(1, int(memory_budget // per_candidate))


def auto_memory_budget(device: torch.device) -> int:
    """Working memory for the chunked method from what the device has free.

    Larger chunks mean fewer kernel launches on a GPU; a quarter of the free memory leaves room
    for the model and other processes.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return max(DEFAULT_MEMORY_BUDGET, min(free // 4, 4 * 2**30))
    return DEFAULT_MEMORY_BUDGET


def row_tiles(rows: int, query_count: int, tile_bytes: int | None = None,
              element_bytes: int = 4) -> list[tuple[int, int]]:
    """Balanced [start, stop) row blocks of a candidate for the tiled method.

    Each block's (rows, L_query) similarity fits in ``tile_bytes``; blocks are balanced rather
    than full-plus-tail so that no block is tiny (a tiny block may get another BLAS kernel).
    """
    if rows <= 0:
        return []
    tile_bytes = TILE_BYTES if tile_bytes is None else tile_bytes
    target = max(MIN_TILE_ROWS, tile_bytes // max(1, query_count * element_bytes))
    count = max(1, -(-rows // target))
    base, extra = divmod(rows, count)
    tiles, start = [], 0
    for t in range(count):
        stop = start + base + (1 if t < extra else 0)
        tiles.append((start, stop))
        start = stop
    return tiles


_TILING_CHECKS: dict[tuple[int, ...], bool] = {}
_TILING_LOCK = threading.Lock()


def tiling_is_exact(candidate_count: int, query_count: int, channels: int,
                    tiles: Sequence[tuple[int, int]]) -> bool:
    """Whether ``tiles`` reproduce the full (L_cand, L_query) fp32 product bit for bit.

    Checked once per process and shape on seeded probe data, with the block products run
    single-threaded as the tiled workers run them and the full product as the reference runs
    it (``torch.matmul`` of a (1, L, C) batch, default threads). A different summation order
    changes the last bits of most of the ~L^2 entries, so a probe cannot pass by chance.
    """
    key = (candidate_count, query_count, channels, *itertools.chain.from_iterable(tiles))
    with _TILING_LOCK:
        if key in _TILING_CHECKS:
            return _TILING_CHECKS[key]
        gen = torch.Generator().manual_seed(1234)
        c = torch.randn(candidate_count, channels, generator=gen)
        q = torch.randn(query_count, channels, generator=gen)
        full = torch.matmul(c[None], q.T)[0]
        blocks = torch.empty_like(full)
        threads = torch.get_num_threads()
        q_t = q.T.contiguous()

        def run_blocks() -> None:
            torch.set_num_threads(1)
            for start, stop in tiles:
                torch.mm(c[start:stop], q_t, out=blocks[start:stop])

        try:
            worker = threading.Thread(target=run_blocks)
            worker.start()
            worker.join()
        finally:
            torch.set_num_threads(threads)
        exact = bool(torch.equal(full, blocks))
        if not exact:
            log.info("MNN row blocks %s are not bit-exact here; using the chunked method",
                     list(tiles))
        _TILING_CHECKS[key] = exact
        return exact


_FUSED_CHECKS: dict[str, bool] = {}


def fused_is_exact(device: torch.device) -> bool:
    """Whether the fused kernel gives the chunked method's fp16 counts and pairs on ``device``.

    Checked once per process and device, as :func:`tiling_is_exact` checks the tiled method, on
    small integer features whose products are exact in fp16 and tie often: both methods must
    then agree to the last pair. A kernel that disagrees on some GPU or Triton version is not
    used by ``method="auto"`` (a warning says so); the chunked method runs instead.
    """
    key = str(device)
    with _TILING_LOCK:
        if key in _FUSED_CHECKS:
            return _FUSED_CHECKS[key]
        gen = torch.Generator().manual_seed(4321)
        q = torch.randint(-2, 3, (200, 64), generator=gen).to(device, torch.float16)
        c = torch.randint(-2, 3, (3, 150, 64), generator=gen).to(device, torch.float16)
        c[1, :40] = q[:40]  # real matches among the ties
        runs = []
        try:
            for run in (_fused_counts, _chunked_counts):
                kept = _Kept(3, 200)
                if run is _fused_counts:
                    counts = _fused_counts(q, c, None, None, None, None, kept)
                else:
                    counts = _chunked_counts(q, c, None, None, 3, "none", 0.0, 0.0, None, kept)
                runs.append((counts, kept.nearest, kept.mutual))
            exact = all(np.array_equal(a, b) for a, b in zip(*runs, strict=True))
            why = "it disagrees with the chunked product"
        except Exception as err:  # noqa: BLE001 - any failure of the kernel means: do not use it
            exact, why = False, f"it failed: {type(err).__name__}: {err}"
        if not exact:
            log.warning("fused MNN kernel not used on %s: %s on exact integer features; "
                        "re-ranking with the chunked method", device, why)
        _FUSED_CHECKS[key] = exact
        return exact


def _to_tensor(x: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    if torch.is_tensor(x):
        return x.to(device)
    return torch.from_numpy(np.ascontiguousarray(x)).to(device)


def _flatten_query(query: np.ndarray | torch.Tensor) -> tuple[tuple[int, ...], int]:
    if query.ndim not in (2, 3):
        raise ValueError(f"query must be (L, C) or (H, W, C), got shape {tuple(query.shape)}")
    return tuple(query.shape), int(query.shape[-1])


def mnn_scores(
    query: np.ndarray | torch.Tensor,
    candidates: np.ndarray | torch.Tensor,
    *,
    query_mask: np.ndarray | torch.Tensor | None = None,
    candidate_mask: np.ndarray | torch.Tensor | None = None,
    candidate_scale: np.ndarray | torch.Tensor | None = None,
    match_filter: str = "none",
    ratio: float = 0.8,
    min_similarity: float = 0.0,
    device: str | torch.device | None = None,
    precision: Precision = "fp32",
    memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
    chunk_size: int | None = None,
    method: Method = "auto",
    workers: int | None = None,
) -> np.ndarray:
    """Mutual-nearest-neighbour counts of K candidates against one query.

    Args:
        query: (L, C) or (H, W, C) local features (numpy or torch, float16/float32).
        candidates: (K, L', C) or (K, H', W', C) local features of the K candidates.
        query_mask: (L,) or (H, W) bool, True for valid query features; None = all valid.
        candidate_mask: (K, L') or (K, H', W') bool; None = all valid.
        candidate_scale: (K, L') per-feature scales of int8 candidates (a map's compact local
            format): each candidate feature's similarities are multiplied by its scale, so the
            int8 codes are compared as they are stored (their products are exact in fp32).
        match_filter: "none" (plain count, SelaVPR), "ratio" (keep a mutual match only if
            ``d1 < ratio * d2`` for the query feature's two nearest candidate features, with
            ``d = sqrt(2 - 2 s)`` as for unit vectors) or "min_similarity" (keep it only if the
            similarity is at least ``min_similarity``).
        device: where to compute; default: the query tensor's device, else CPU.
        precision: "fp32" (exact reference counts), "fp16" (CUDA only; and the fused method
            under Triton's interpreter, for tests) or "bf16" (CPU or CUDA): faster products
            whose counts can differ slightly on near ties (on the CPU the bf16 block is
            widened to fp32 for the reductions).
        memory_budget: bytes of working memory per chunk; sets the chunk size. None: chosen
            from the device's free memory (CUDA: a quarter of it, at most 4 GiB).
        chunk_size: candidates per chunk; overrides ``memory_budget`` when given.
        method: "tiled" (CPU, fp32: cache-sized row blocks, no similarity matrix in memory),
            "chunked" (the reference's batched product, chunked over candidates), "fused"
            (CUDA, fp16, no filter: one Triton kernel that never writes the similarities,
            :mod:`selavpr_ros.matching.fused_triton`) or "auto": tiled on the CPU when no
            ``chunk_size`` is given; on CUDA fused where it applies and Triton imports (and no
            ``chunk_size`` is given), chunked otherwise. "chunked" opts out of the fused
            kernel. Tiled falls back to chunked when its blocks are not bit-exact on this
            machine (see ``tiling_is_exact``).
        workers: threads of the tiled method (default: ``torch.get_num_threads()``). While
            they run, torch's intra-op thread count is 1 and is restored afterwards.

    Returns:
        (K,) int64 counts.
    """
    return _mnn(query, candidates, None, query_mask=query_mask, candidate_mask=candidate_mask,
                candidate_scale=candidate_scale, match_filter=match_filter, ratio=ratio,
                min_similarity=min_similarity, device=device, precision=precision,
                memory_budget=memory_budget, chunk_size=chunk_size, method=method,
                workers=workers)


def mnn_matches(query: np.ndarray | torch.Tensor, candidates: np.ndarray | torch.Tensor,
                **options: Any) -> MnnMatches:
    """:func:`mnn_scores` (same arguments, same counts) keeping each candidate's pairs.

    The pairs index the features as given (a map's stored, possibly subsampled, grid).
    """
    num = int(candidates.shape[0])
    lq = int(np.prod(query.shape[:-1]))
    kept = _Kept(num, lq)
    return kept.result(_mnn(query, candidates, kept, **options))


def _mnn(
    query: np.ndarray | torch.Tensor,
    candidates: np.ndarray | torch.Tensor,
    kept: _Kept | None,
    *,
    query_mask: np.ndarray | torch.Tensor | None = None,
    candidate_mask: np.ndarray | torch.Tensor | None = None,
    candidate_scale: np.ndarray | torch.Tensor | None = None,
    match_filter: str = "none",
    ratio: float = 0.8,
    min_similarity: float = 0.0,
    device: str | torch.device | None = None,
    precision: Precision = "fp32",
    memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
    chunk_size: int | None = None,
    method: Method = "auto",
    workers: int | None = None,
) -> np.ndarray:
    """Return the counts (and fill ``kept`` with the pairs): see :func:`mnn_scores`."""
    _check_options(match_filter, precision)
    device = _compute_device(query, device, precision, method)
    dtype = _DTYPES[precision]
    channels = _check_shapes(query, candidates)
    num = int(candidates.shape[0])
    q = _to_tensor(query, device).reshape(-1, channels).to(dtype)
    lq = q.shape[0]
    lc = int(np.prod(candidates.shape[1:-1]))
    if num == 0 or lq == 0 or lc == 0:
        return np.zeros(num, dtype=np.int64)
    qm = _query_mask_tensor(query_mask, device, lq)
    if candidate_mask is not None and tuple(candidate_mask.shape[:1]) != (num,):
        raise ValueError(f"candidate_mask must have {num} rows, got {candidate_mask.shape}")
    if candidate_scale is not None and tuple(candidate_scale.shape[:1]) != (num,):
        raise ValueError(f"candidate_scale must have {num} rows, got {candidate_scale.shape}")

    resolved = _resolve_method(method, device, chunk_size, match_filter, precision, channels,
                               max(lq, lc))
    if resolved == "fused" and method == "auto" and not fused_is_exact(device):
        resolved = "chunked"
    if resolved == "fused":
        return _fused_counts(q, candidates, qm, candidate_mask, candidate_scale,
                             memory_budget, kept)
    if resolved == "tiled":
        tiles = row_tiles(lc, lq)
        # bf16 promises no exact counts, so its blocks need not reproduce the full product
        if precision == "bf16" or tiling_is_exact(lc, lq, channels, tiles):
            return _tiled_counts(q, candidates, tiles, qm, candidate_mask,
                                 min_similarity if match_filter == "min_similarity" else None,
                                 workers, candidate_scale, kept,
                                 # one candidate feature: nothing to compare (as _ratio_test)
                                 ratio if match_filter == "ratio" and lc > 1 else None)

    if chunk_size is None:
        if memory_budget is None:
            memory_budget = auto_memory_budget(device)
        chunk_size = chunk_size_for_budget(lq, lc, channels, memory_budget, dtype.itemsize)
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}")
    return _chunked_counts(q, candidates, qm, candidate_mask, chunk_size, match_filter,
                           ratio, min_similarity, candidate_scale, kept)


def _check_options(match_filter: str, precision: str) -> None:
    if match_filter not in ("none", "ratio", "min_similarity"):
        raise ConfigError(f"unknown match_filter {match_filter!r}")
    if precision not in _DTYPES:
        raise ConfigError(f"precision must be one of {tuple(_DTYPES)}, got {precision!r}")


def _compute_device(query: np.ndarray | torch.Tensor, device: str | torch.device | None,
                    precision: str, method: str = "auto") -> torch.device:
    """Return the given device, else the query tensor's, else the CPU."""
    if device is None:
        device = query.device if torch.is_tensor(query) else "cpu"
    device = torch.device(device)
    # Triton's interpreter runs the fused kernel on CPU tensors: how the tests check it
    interpreted = method == "fused" and fused_triton.interpreting()
    if precision == "fp16" and device.type != "cuda" and not interpreted:
        raise ConfigError("precision 'fp16' is only supported on CUDA devices")
    return device


def _check_shapes(query: np.ndarray | torch.Tensor,
                  candidates: np.ndarray | torch.Tensor) -> int:
    """Return the channel count shared by the query and the candidates."""
    _, channels = _flatten_query(query)
    if candidates.ndim not in (3, 4):
        raise ValueError(f"candidates must be (K, L, C) or (K, H, W, C), got {candidates.shape}")
    if int(candidates.shape[-1]) != channels:
        raise ValueError(
            f"query has {channels} channels but candidates have {candidates.shape[-1]}"
        )
    return channels


def _query_mask_tensor(query_mask: np.ndarray | torch.Tensor | None, device: torch.device,
                       lq: int) -> torch.Tensor | None:
    if query_mask is None:
        return None
    qm = _to_tensor(query_mask, device).reshape(-1).to(torch.bool)
    if qm.shape[0] != lq:
        raise ValueError(f"query_mask has {qm.shape[0]} entries for {lq} query features")
    return qm


def _resolve_method(method: Method, device: torch.device, chunk_size: int | None,
                    match_filter: str, precision: str = "fp32", channels: int = 0,
                    features: int = 0) -> Method:
    """Return the method that runs ("auto" picks one; see :func:`mnn_scores`)."""
    if method not in ("auto", "tiled", "chunked", "fused"):
        raise ConfigError(f"unknown method {method!r}")
    fused = fused_triton.supports(device, precision, match_filter, channels, features)
    if method == "auto":
        if device.type == "cpu" and chunk_size is None:
            return "tiled"
        return "fused" if fused and device.type == "cuda" and chunk_size is None else "chunked"
    if method == "tiled" and device.type != "cpu":
        raise ConfigError("the tiled method runs on the CPU")
    if method == "fused" and not fused:
        raise ConfigError(
            "the fused method needs CUDA with Triton, precision 'fp16', match_filter 'none', "
            f"at most {fused_triton.MAX_CHANNELS} channels and {fused_triton.MAX_FEATURES} "
            "features")
    return method


def _chunked_counts(
    q: torch.Tensor,
    candidates: np.ndarray | torch.Tensor,
    qm: torch.Tensor | None,
    candidate_mask: np.ndarray | torch.Tensor | None,
    chunk_size: int,
    match_filter: str,
    ratio: float,
    min_similarity: float,
    candidate_scale: np.ndarray | torch.Tensor | None = None,
    kept: _Kept | None = None,
) -> np.ndarray:
    """MNN counts by the reference's batched product, ``chunk_size`` candidates at a time."""
    device, dtype = q.device, q.dtype
    num, (lq, channels) = int(candidates.shape[0]), q.shape
    lc = int(np.prod(candidates.shape[1:-1]))
    q_t = q.T.contiguous()
    query_ids = torch.arange(lq, device=device)
    device_counts = torch.zeros(num, dtype=torch.int64, device=device)  # one copy back, at the end
    for start in range(0, num, chunk_size):
        stop = min(num, start + chunk_size)
        c = _to_tensor(candidates[start:stop], device).reshape(stop - start, lc, channels)
        sim = torch.matmul(c.to(dtype), q_t)  # (n, L_cand, L_query), as in the reference
        del c
        cm = _apply_candidate_rows(sim, candidate_scale, candidate_mask, start, stop)
        if qm is not None:
            sim.masked_fill_(~qm[None, None, :], float("-inf"))
        best_c = torch.argmax(sim, dim=1)  # (n, L_query): nearest candidate feature
        best_q = torch.argmax(sim, dim=2)  # (n, L_cand): nearest query feature
        mutual = torch.gather(best_q, 1, best_c) == query_ids
        if qm is not None:
            mutual &= qm
        if cm is not None:
            mutual &= torch.gather(cm, 1, best_c)
        best_sim = None
        if match_filter == "min_similarity" or kept is not None:
            best_sim = torch.gather(sim, 1, best_c[:, None, :])[:, 0, :].float()
        if match_filter == "min_similarity":
            assert best_sim is not None
            mutual &= best_sim >= min_similarity
        elif match_filter == "ratio":
            mutual &= _ratio_test(sim, ratio)
        device_counts[start:stop] = mutual.sum(dim=1)
        if kept is not None:
            assert best_sim is not None
            kept.store(slice(start, stop), best_c, mutual, best_sim)
        del sim, best_c, best_q, mutual, best_sim
    return device_counts.cpu().numpy()


def _fused_counts(
    q: torch.Tensor,
    candidates: np.ndarray | torch.Tensor,
    qm: torch.Tensor | None,
    candidate_mask: np.ndarray | torch.Tensor | None,
    candidate_scale: np.ndarray | torch.Tensor | None,
    memory_budget: int | None,
    kept: _Kept | None,
) -> np.ndarray:
    """MNN counts by the fused Triton kernel, as many candidates per launch as fit the budget."""
    device = q.device
    num, (lq, channels) = int(candidates.shape[0]), q.shape
    lc = int(np.prod(candidates.shape[1:-1]))
    if memory_budget is None:
        memory_budget = auto_memory_budget(device)
    chunk = fused_triton.candidates_per_launch(lq, lc, channels, memory_budget)
    device_counts = torch.zeros(num, dtype=torch.int64, device=device)
    for start in range(0, num, chunk):
        stop = min(num, start + chunk)
        c = _to_tensor(candidates[start:stop], device).reshape(stop - start, lc, channels)
        cm = cs = None
        if candidate_mask is not None:
            cm = _to_tensor(candidate_mask[start:stop], device).reshape(stop - start, lc)
        if candidate_scale is not None:
            cs = _to_tensor(candidate_scale[start:stop], device).reshape(stop - start, lc)
        r = fused_triton.fused_mnn(q, c, qm, cm, cs)
        device_counts[start:stop] = r.counts
        if kept is not None:
            kept.store(slice(start, stop), r.nearest, r.mutual, r.similarity)
    return device_counts.cpu().numpy()


def _apply_candidate_rows(
    sim: torch.Tensor,
    candidate_scale: np.ndarray | torch.Tensor | None,
    candidate_mask: np.ndarray | torch.Tensor | None,
    start: int,
    stop: int,
) -> torch.Tensor | None:
    """Scale and mask a chunk's (n, L_cand, L_query) similarities in place; return its mask."""
    n, lc = sim.shape[0], sim.shape[1]
    if candidate_scale is not None:
        cs = _to_tensor(candidate_scale[start:stop], sim.device).reshape(n, lc)
        sim.mul_(cs.to(sim.dtype)[:, :, None])
    if candidate_mask is None:
        return None
    cm = _to_tensor(candidate_mask[start:stop], sim.device).reshape(n, lc).to(torch.bool)
    sim.masked_fill_(~cm[:, :, None], float("-inf"))
    return cm


def _tiled_counts(
    q: torch.Tensor,
    candidates: np.ndarray | torch.Tensor,
    tiles: Sequence[tuple[int, int]],
    qm: torch.Tensor | None,
    candidate_mask: np.ndarray | torch.Tensor | None,
    min_similarity: float | None,
    workers: int | None,
    candidate_scale: np.ndarray | torch.Tensor | None = None,
    kept: _Kept | None = None,
    ratio: float | None = None,
) -> np.ndarray:
    """MNN counts by cache-sized row blocks, candidates shared among single-threaded workers."""
    from selavpr_ros.matching.block_reduce import reduce_block  # numba: CPU machines only

    num, lq, channels = int(candidates.shape[0]), q.shape[0], q.shape[1]
    lc = tiles[-1][1]
    q_t = q.T.contiguous()
    counts = np.zeros(num, dtype=np.int64)
    order = iter(range(num))  # next() on a range iterator is atomic under the GIL
    if workers is None:
        workers = torch.get_num_threads()
    workers = max(1, min(int(workers), num))
    qm_np = None if qm is None else qm.numpy()

    def work(single_threaded: bool) -> None:
        if single_threaded:
            torch.set_num_threads(1)
        block = torch.empty(max(stop - start for start, stop in tiles), lq)
        # bf16 products come out in bf16 (torch's CPU mm): widened into ``block`` to reduce
        narrow = torch.empty_like(block, dtype=q.dtype) if q.dtype != torch.float32 else None
        col_max = np.empty(lq, np.float32)  # best similarity of each query feature so far
        col_arg = np.empty(lq, np.int32)  # ... and the candidate feature holding it
        col_second = np.empty(lq, np.float32) if ratio is not None else None
        best_q = np.empty(lc, np.int32)  # best query feature of each candidate feature
        for n in order:
            c = _to_tensor(candidates[n], torch.device("cpu")).reshape(lc, channels)
            c = c.to(q.dtype)
            cs = _cpu_rows(candidate_scale, n, (lc, 1), torch.float32)
            cm = _cpu_rows(candidate_mask, n, (lc,), torch.bool)
            if cm is not None and not bool(cm.any()):
                continue  # nothing valid: count 0
            col_max.fill(-np.inf)
            col_arg.fill(0)
            if col_second is not None:
                col_second.fill(-np.inf)
            for start, stop in tiles:
                sim = block[: stop - start]
                if narrow is None:
                    torch.mm(c[start:stop], q_t, out=sim)
                else:
                    sim.copy_(torch.mm(c[start:stop], q_t, out=narrow[: stop - start]))
                _scale_and_mask_block(sim, cs, cm, qm, start, stop)
                reduce_block(sim.numpy(), start, col_max, col_arg, col_second,
                             best_q[start:stop])
            best_c = col_arg.astype(np.int64)
            mutual = _mutual(best_q, best_c, col_max, col_second, qm_np,
                             None if cm is None else cm.numpy(), min_similarity, ratio)
            counts[n] = int(mutual.sum())
            if kept is not None:
                kept.store(slice(n, n + 1), torch.from_numpy(best_c)[None],
                           torch.from_numpy(mutual)[None], torch.from_numpy(col_max)[None])

    if workers == 1:
        work(False)
        return counts
    threads = torch.get_num_threads()
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="mnn") as pool:
            for future in [pool.submit(work, True) for _ in range(workers)]:
                future.result()
    finally:
        torch.set_num_threads(threads)
    return counts


def _mutual(best_q: np.ndarray, best_c: np.ndarray, best_sim: np.ndarray,
            second: np.ndarray | None, qm: np.ndarray | None, cm: np.ndarray | None,
            min_similarity: float | None, ratio: float | None) -> np.ndarray:
    """(L_query,) bool: which query features' nearest candidate features count for the score."""
    mutual = best_q[best_c] == np.arange(len(best_c))
    if qm is not None:
        mutual &= qm
    if cm is not None:
        mutual &= cm[best_c]
    if min_similarity is not None:
        mutual &= best_sim >= min_similarity
    if second is not None:
        mutual &= _ratio_passes(best_sim, second, ratio or 0.0)
    return mutual


def _ratio_passes(best: np.ndarray, second: np.ndarray, ratio: float) -> np.ndarray:
    """(L_query,) bool: :func:`_ratio_test` on each column's two largest similarities.

    Computed in float32 torch ops as :func:`_ratio_test` does, so both methods agree exactly.
    """
    top2 = torch.from_numpy(np.stack([best, second]))
    dist = torch.sqrt(torch.clamp(2.0 - 2.0 * top2, min=0.0))
    return (dist[0] < ratio * dist[1]).numpy()


def _scale_and_mask_block(sim: torch.Tensor, cs: torch.Tensor | None, cm: torch.Tensor | None,
                          qm: torch.Tensor | None, start: int, stop: int) -> None:
    """Scale and mask candidate rows [start, stop) of a tiled block in place."""
    if cs is not None:
        sim.mul_(cs[start:stop])
    if cm is not None:
        sim.masked_fill_(~cm[start:stop, None], float("-inf"))
    if qm is not None:
        sim.masked_fill_(~qm[None, :], float("-inf"))


def _cpu_rows(rows: np.ndarray | torch.Tensor | None, n: int, shape: tuple[int, ...],
              dtype: torch.dtype) -> torch.Tensor | None:
    """Return candidate ``n``'s row of a mask or scale array as a CPU tensor (None if absent)."""
    if rows is None:
        return None
    return _to_tensor(rows[n], torch.device("cpu")).reshape(shape).to(dtype)


def _ratio_test(sim: torch.Tensor, ratio: float) -> torch.Tensor:
    """(n, L_query) bool: the nearest candidate feature is clearly nearer than the second."""
    if sim.shape[1] < 2:
        return torch.ones(sim.shape[0], sim.shape[2], dtype=torch.bool, device=sim.device)
    top2 = torch.topk(sim, 2, dim=1).values.float()  # (n, 2, L_query), best first
    dist = torch.sqrt(torch.clamp(2.0 - 2.0 * top2, min=0.0))
    return dist[:, 0, :] < ratio * dist[:, 1, :]
