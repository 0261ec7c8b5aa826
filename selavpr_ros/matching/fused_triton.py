"""Fused MNN re-ranking on the GPU (Triton): the (K, L, L) similarities are never written.

The chunked method writes every candidate's (L_cand, L_query) similarity matrix to memory and
reads it back twice for the two arg-maxima, and on a GPU that traffic, not the product, is what
costs (bench/PERFORMANCE.md). Here one program takes one candidate and one block of query
features, computes the similarities a tile of candidate features at a time with ``tl.dot``
(fp16 inputs, fp32 accumulation) and reduces each tile while it is in registers:

- per query feature, the running maximum and arg-max over the candidate tiles (its nearest
  candidate feature; a later tile replaces it only when strictly larger, so ties keep the
  first index, as ``torch.argmax`` does);
- per candidate feature, the maximum and arg-max over this block's query features, stored in
  a small (K, query blocks, L_cand) partial buffer that torch then reduces over the blocks,
  earlier block first on ties.

A query feature ``i`` with nearest candidate feature ``j`` is mutual when ``j``'s nearest query
feature is ``i``; masked features are excluded exactly as the chunked method excludes them
(their similarities are -inf, and a masked feature is never counted).

Same counts as the chunked method at fp16: each tile's fp32 accumulator is rounded to fp16,
as the batched fp16 product writes it, then multiplied by the candidate scale (int8 maps) in
fp32 and rounded to fp16 again, as torch's fp16 ``mul_`` does, so both compare the same fp16
values. The only difference left is the order of the fp32 sums over channels inside the two
products (cuBLAS vs Triton), which can move a value across an fp16 rounding boundary; tests
use integer features, where both are exact. Supported: plain counts (no ratio or
similarity filter) with masks and int8/fp16/fp32 candidates, channels <= 256; everything else
stays on the chunked method (:func:`supports`).

Triton is imported lazily: this module imports without it. With ``TRITON_INTERPRET=1`` set
before Triton is first imported, the same kernel runs on CPU tensors (numpy), which is how
the tests check it without a GPU.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

import torch

MAX_CHANNELS = 256  # one tile of channels held for the whole program
BLOCK_M = 128  # query features per program on CUDA (tensor-core tile)
INTERPRET_BLOCKS = (32, 32)  # (query, candidate) tile under the interpreter: several of each


def interpreting() -> bool:
    """Whether Triton's interpreter is requested (kernels run on CPU tensors)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    """Whether Triton imports here (it ships with torch's CUDA wheels)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except ImportError:
        return False
    return True


def supports(device: torch.device, precision: str, match_filter: str, channels: int) -> bool:
    """Whether the fused kernel computes this case (else the chunked method does)."""
    if precision != "fp16" or match_filter != "none" or not 1 <= channels <= MAX_CHANNELS:
        return False
    if device.type != "cuda" and not interpreting():
        return False
    return triton_available()


@dataclass(frozen=True)
class FusedResult:
    """Per candidate and query feature: nearest candidate feature, mutual flag, similarity."""

    counts: torch.Tensor  # (K,) int64
    nearest: torch.Tensor  # (K, L_query) int64
    mutual: torch.Tensor  # (K, L_query) bool
    similarity: torch.Tensor  # (K, L_query) float32 (the fp16 value; -inf when unmatched)


def candidates_per_launch(query_count: int, candidate_count: int, channels: int,
                          memory_budget: int) -> int:
    """How many candidates one launch takes within ``memory_budget`` bytes (at least 1).

    Per candidate: its features (when copied to the device, fp16), the partial buffer (fp16
    maximum + int32 arg-max per query block and candidate feature) and the per-query rows.
    """
    blocks = -(-query_count // min(BLOCK_M, INTERPRET_BLOCKS[0]))
    per_candidate = (candidate_count * channels * 2 + blocks * candidate_count * 6
                     + query_count * 32)
    return max(1, int(memory_budget // per_candidate))


@functools.lru_cache(maxsize=2)
def _kernels(interpret: bool) -> tuple[Any, Any]:
    """Define the kernel, once per mode: Triton decides at definition whether to interpret it."""
    import triton
    import triton.language as tl

    @triton.jit
    def mnn_tiles(
        q_ptr, c_ptr, scale_ptr, qmask_ptr, cmask_ptr,
        row_max_ptr, row_arg_ptr, part_max_ptr, part_arg_ptr,
        M, N, D,
        stride_qm, stride_ck, stride_cn, stride_sk, stride_mk,
        HAS_SCALE: tl.constexpr, HAS_QMASK: tl.constexpr, HAS_CMASK: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    ):
        pid_m = tl.program_id(0)
        k = tl.program_id(1).to(tl.int64)
        n_row_blocks = tl.num_programs(0)
        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        dims = tl.arange(0, BLOCK_D)
        row_ok = rows < M
        q = tl.load(q_ptr + rows[:, None] * stride_qm + dims[None, :],
                    mask=row_ok[:, None] & (dims[None, :] < D), other=0.0)
        row_valid = row_ok
        if HAS_QMASK:
            row_valid = row_valid & (tl.load(qmask_ptr + rows, mask=row_ok, other=0) != 0)
        run_max = tl.full([BLOCK_M], float("-inf"), tl.float32)
        run_arg = tl.zeros([BLOCK_M], tl.int32)
        part_base = (k * n_row_blocks + pid_m) * N
        for n0 in range(0, N, BLOCK_N):
            cols = n0 + tl.arange(0, BLOCK_N)
            col_ok = cols < N
            c = tl.load(c_ptr + k * stride_ck + cols[:, None] * stride_cn + dims[None, :],
                        mask=col_ok[:, None] & (dims[None, :] < D), other=0)
            acc = tl.dot(q, tl.trans(c.to(tl.float16)))  # fp32 accumulation
            s = acc.to(tl.float16).to(tl.float32)  # the value an fp16 product writes
            if HAS_SCALE:
                cs = tl.load(scale_ptr + k * stride_sk + cols, mask=col_ok, other=1.0)
                s = (s * cs.to(tl.float32)[None, :]).to(tl.float16).to(tl.float32)
            col_valid = col_ok
            if HAS_CMASK:
                col_valid = col_valid & (
                    tl.load(cmask_ptr + k * stride_mk + cols, mask=col_ok, other=0) != 0)
            s = tl.where(row_valid[:, None] & col_valid[None, :], s, float("-inf"))
            # nearest candidate feature of each query feature: first index on ties
            tile_max, tile_arg = tl.max(s, axis=1, return_indices=True,
                                        return_indices_tie_break_left=True)
            better = tile_max > run_max
            run_max = tl.where(better, tile_max, run_max)
            run_arg = tl.where(better, tile_arg + n0, run_arg)
            # nearest query feature of each candidate feature, within this query block
            col_max, col_arg = tl.max(s, axis=0, return_indices=True,
                                      return_indices_tie_break_left=True)
            tl.store(part_max_ptr + part_base + cols, col_max.to(tl.float16), mask=col_ok)
            tl.store(part_arg_ptr + part_base + cols, col_arg + pid_m * BLOCK_M, mask=col_ok)
        tl.store(row_max_ptr + k * M + rows, run_max, mask=row_ok)
        tl.store(row_arg_ptr + k * M + rows, run_arg, mask=row_ok)

    configs = [triton.Config({"BLOCK_N": bn}, num_warps=w, num_stages=s)
               for bn, w, s in ((64, 4, 3), (64, 8, 3), (128, 8, 3), (128, 8, 2))]
    tuned = triton.autotune(configs, key=["M", "N", "D", "HAS_SCALE", "HAS_QMASK",
                                          "HAS_CMASK"])(mnn_tiles)
    return mnn_tiles, tuned


def autotuned_config() -> str | None:
    """Return the configuration CUDA autotuning chose last (None before any CUDA launch)."""
    if _kernels.cache_info().currsize == 0:
        return None
    best = getattr(_kernels(False)[1], "best_config", None)
    return None if best is None else str(best)


def fused_mnn(
    q: torch.Tensor,
    c: torch.Tensor,
    query_mask: torch.Tensor | None = None,
    candidate_mask: torch.Tensor | None = None,
    candidate_scale: torch.Tensor | None = None,
    blocks: tuple[int, int] | None = None,
) -> FusedResult:
    """MNN of K candidates against one query with the fused kernel (all tensors on one device).

    Args:
        q: (L_query, C) query features (converted to fp16).
        c: (K, L_cand, C) candidate features: fp16, fp32 or int8 (converted in the kernel).
        query_mask: (L_query,) bool; candidate_mask: (K, L_cand) bool; None = all valid.
        candidate_scale: (K, L_cand) per-feature scales (int8 maps), applied in fp16.
        blocks: (query, candidate) tile sizes; default: autotuned on CUDA,
            ``INTERPRET_BLOCKS`` under the interpreter.
    """
    plain, tuned = _kernels(interpreting())
    num, lc, channels = c.shape
    q = q.to(torch.float16).contiguous()
    lq = q.shape[0]
    device = q.device
    if c.dtype not in (torch.float16, torch.float32, torch.int8):
        c = c.to(torch.float16)
    c = c.contiguous()
    block_d = max(16, 1 << (channels - 1).bit_length())
    if blocks is None and interpreting():
        blocks = INTERPRET_BLOCKS
    block_m = BLOCK_M if blocks is None else blocks[0]
    n_row_blocks = -(-lq // block_m)
    row_max = torch.empty(num, lq, dtype=torch.float32, device=device)
    row_arg = torch.empty(num, lq, dtype=torch.int32, device=device)
    part_max = torch.empty(num, n_row_blocks, lc, dtype=torch.float16, device=device)
    part_arg = torch.empty(num, n_row_blocks, lc, dtype=torch.int32, device=device)
    qm = None if query_mask is None else query_mask.to(torch.bool).contiguous()
    cm = None if candidate_mask is None else candidate_mask.to(torch.bool).contiguous()
    cs = None if candidate_scale is None else candidate_scale.to(torch.float16).contiguous()
    dummy = row_max  # never read: the HAS_* flags switch the loads off
    args = (q, c, dummy if cs is None else cs, dummy if qm is None else qm.view(torch.uint8),
            dummy if cm is None else cm.view(torch.uint8),
            row_max, row_arg, part_max, part_arg, lq, lc, channels,
            q.stride(0), c.stride(0), c.stride(1),
            0 if cs is None else cs.stride(0), 0 if cm is None else cm.stride(0))
    flags = dict(HAS_SCALE=cs is not None, HAS_QMASK=qm is not None, HAS_CMASK=cm is not None,
                 BLOCK_M=block_m, BLOCK_D=block_d)
    grid = (n_row_blocks, num)
    if blocks is None:
        tuned[grid](*args, **flags)
    else:
        plain[grid](*args, BLOCK_N=blocks[1], **flags)
    # reduce the query blocks: the first block holding a column's maximum wins ties
    win = torch.argmax(part_max, dim=1, keepdim=True)
    best_q = part_arg.gather(1, win)[:, 0, :].long()  # (K, L_cand) nearest query feature
    nearest = row_arg.long()  # (K, L_query) nearest candidate feature
    mutual = best_q.gather(1, nearest) == torch.arange(lq, device=device)
    if qm is not None:
        mutual &= qm
    if cm is not None:
        mutual &= cm.gather(1, nearest)
    return FusedResult(mutual.sum(dim=1), nearest, mutual, row_max)
