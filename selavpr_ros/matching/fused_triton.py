"""Fused MNN re-ranking on the GPU (Triton): the (K, L, L) similarities are never written.

The chunked method writes every candidate's (L_cand, L_query) similarity matrix to memory and
reads it back twice for the two arg-maxima, and on a GPU that traffic, not the product, is what
costs (bench/PERFORMANCE.md). Here one program takes one candidate and one block of query
features, computes the similarities a tile of candidate features at a time with ``tl.dot``
(fp16 inputs, fp32 accumulation) and reduces each tile while it is in registers:

- per query feature, the running maximum over the candidate tiles (its nearest candidate
  feature);
- per candidate feature, the maximum over this block's query features, stored in a small
  (K, query blocks, L_cand) partial buffer that torch then reduces over the blocks.

Each similarity is rounded to fp16, as the batched fp16 product writes it (then multiplied by
the candidate scale of an int8 map in fp32 and rounded again, as torch's fp16 ``mul_`` does),
so both methods compare the same values. The fp16 bits are mapped to an integer of the same
order (+0 and -0 equal) and packed with the feature's index into one int32, ``value << 16 |
(0xFFFF - index)``: a plain integer maximum then finds the largest value and, among equal
values, the first index, as ``torch.argmax`` does, across tiles and query blocks alike, and
costs a fraction of a (value, index) arg-max. Masked features are -inf, as in the chunked
method, and a masked feature is never counted; a query feature ``i`` with nearest candidate
feature ``j`` is mutual when ``j``'s nearest query feature is ``i``.

Same counts as the chunked method at fp16, except where cuBLAS and Triton, summing the
channels in another order, round a value to different fp16 neighbours; tests use integer
features, where both are exact. Supported: plain counts (no ratio or similarity filter) with
masks and int8/fp16/fp32 candidates (converted to fp16 first), at most 256 channels and
``MAX_FEATURES`` features, finite features; everything else stays on the chunked method
(:func:`supports`).

Triton is imported lazily: this module imports without it. With ``TRITON_INTERPRET=1`` set
before Triton is first imported, the same kernel runs on CPU tensors (numpy), which is how the
tests check it without a GPU.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass
from typing import Any

import torch

MAX_CHANNELS = 256  # one tile of channels held for the whole program
MAX_FEATURES = 0xFFFF - 256  # indices, padding included, are packed into 16 bits
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


def supports(device: torch.device, precision: str, match_filter: str, channels: int,
             features: int = 0) -> bool:
    """Whether the fused kernel computes this case (else the chunked method does).

    ``features``: the larger of the query's and a candidate's feature counts.
    """
    if precision != "fp16" or match_filter != "none" or not 1 <= channels <= MAX_CHANNELS:
        return False
    if features > MAX_FEATURES:
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
    similarity: torch.Tensor  # (K, L_query) float32: the fp16 value (-inf: nothing valid)


def candidates_per_launch(query_count: int, candidate_count: int, channels: int,
                          memory_budget: int) -> int:
    """How many candidates one launch takes within ``memory_budget`` bytes (at least 1).

    Per candidate: its features (when copied to the device, fp16), the partial buffer (one
    packed int32 per query block and candidate feature) and the per-query rows.
    """
    blocks = -(-query_count // min(BLOCK_M, INTERPRET_BLOCKS[0]))
    per_candidate = (candidate_count * channels * 2 + blocks * candidate_count * 4
                     + candidate_count * 16 + query_count * 32)
    return max(1, min(65535, int(memory_budget // per_candidate)))  # 65535: CUDA's grid y


def _unpack(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split packed keys into (index, fp16 value as float32)."""
    index = (0xFFFF - (packed & 0xFFFF)).long()
    key = packed >> 16  # arithmetic shift: the signed order key
    bits = torch.where(key < 0, -key - 0x8000, key).to(torch.int16)
    return index, bits.view(torch.float16).float()


@functools.lru_cache(maxsize=2)
def _kernels(interpret: bool) -> tuple[Any, Any]:
    """Define the kernel, once per mode: Triton decides at definition whether to interpret it."""
    import triton
    import triton.language as tl

    @triton.jit
    def mnn_tiles(
        q_ptr, c_ptr, scale_ptr, qmask_ptr, cmask_ptr, row_ptr, part_ptr,
        M, N, D,
        stride_qm, stride_ck, stride_cn, stride_sk, stride_mk,
        HAS_SCALE: tl.constexpr, HAS_QMASK: tl.constexpr, HAS_CMASK: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
        EVEN_D: tl.constexpr,
    ):
        pid_m = tl.program_id(0)
        k = tl.program_id(1).to(tl.int64)
        n_row_blocks = tl.num_programs(0)
        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        dims = tl.arange(0, BLOCK_D)
        row_ok = rows < M
        # no mask along the channels when D == BLOCK_D: the loads are then vectorised
        if EVEN_D:
            q_mask = row_ok[:, None]
        else:
            q_mask = row_ok[:, None] & (dims[None, :] < D)
        q = tl.load(q_ptr + rows[:, None] * stride_qm + dims[None, :], mask=q_mask, other=0.0)
        row_valid = row_ok
        if HAS_QMASK:
            row_valid = row_valid & (tl.load(qmask_ptr + rows, mask=row_ok, other=0) != 0)
        # a cap on the order key: none for valid rows, -inf for masked and padding rows
        row_cap = tl.where(row_valid, 0x7FFF, -0x7C00)
        row_low = 0xFFFF - rows  # larger for the earlier query feature: first index on ties
        run = tl.full([BLOCK_M], -0x7FFFFFFF, tl.int32)  # below every packed key
        part_base = (k * n_row_blocks + pid_m) * N
        for n0 in range(0, N, BLOCK_N):
            cols = n0 + tl.arange(0, BLOCK_N)
            col_ok = cols < N
            if EVEN_D:
                c_mask = col_ok[:, None]
            else:
                c_mask = col_ok[:, None] & (dims[None, :] < D)
            c = tl.load(c_ptr + k * stride_ck + cols[:, None] * stride_cn + dims[None, :],
                        mask=c_mask, other=0)
            acc = tl.dot(q, tl.trans(c))  # fp16 inputs, fp32 accumulation
            s = acc.to(tl.float16)  # the value an fp16 product writes
            if HAS_SCALE:
                cs = tl.load(scale_ptr + k * stride_sk + cols, mask=col_ok, other=1.0)
                s = (s.to(tl.float32) * cs.to(tl.float32)[None, :]).to(tl.float16)
            col_valid = col_ok
            if HAS_CMASK:
                col_valid = col_valid & (
                    tl.load(cmask_ptr + k * stride_mk + cols, mask=col_ok, other=0) != 0)
            col_cap = tl.where(col_valid, 0x7FFF, -0x7C00)
            # fp16 bits -> an integer of the same order (sign-magnitude to two's complement,
            # so +0 and -0 are equal, as they compare), capped to -inf where masked; padding
            # is -inf too and loses every tie to a real feature (its index is larger)
            bits = s.to(tl.int16, bitcast=True).to(tl.int32)
            sign = bits >> 31
            key = (bits ^ (sign & 0x7FFF)) - sign
            key = tl.minimum(key, tl.minimum(row_cap[:, None], col_cap[None, :]))
            high = key * 65536
            # nearest candidate feature of each query feature (over all tiles so far)
            run = tl.maximum(run, tl.max(high + (0xFFFF - cols)[None, :], axis=1))
            # nearest query feature of each candidate feature, within this query block
            tl.store(part_ptr + part_base + cols, tl.max(high + row_low[:, None], axis=0),
                     mask=col_ok)
        tl.store(row_ptr + k * M + rows, run, mask=row_ok)

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
        c: (K, L_cand, C) candidate features (converted to fp16, as the chunked method does).
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
    # int8 or fp32 candidates to fp16 once here, as the chunked method converts them, rather
    # than again in every query block's program (bench/PERFORMANCE.md)
    c = c.to(torch.float16).contiguous()
    block_d = max(16, 1 << (channels - 1).bit_length())
    if blocks is None and interpreting():
        blocks = INTERPRET_BLOCKS
    block_m = BLOCK_M if blocks is None else blocks[0]
    n_row_blocks = -(-lq // block_m)
    row = torch.empty(num, lq, dtype=torch.int32, device=device)
    part = torch.empty(num, n_row_blocks, lc, dtype=torch.int32, device=device)
    qm = None if query_mask is None else query_mask.to(torch.bool).contiguous()
    cm = None if candidate_mask is None else candidate_mask.to(torch.bool).contiguous()
    cs = None if candidate_scale is None else candidate_scale.to(torch.float16).contiguous()
    dummy = row  # never read: the HAS_* flags switch the loads off
    args = (q, c, dummy if cs is None else cs, dummy if qm is None else qm.view(torch.uint8),
            dummy if cm is None else cm.view(torch.uint8), row, part, lq, lc, channels,
            q.stride(0), c.stride(0), c.stride(1),
            0 if cs is None else cs.stride(0), 0 if cm is None else cm.stride(0))
    flags = dict(HAS_SCALE=cs is not None, HAS_QMASK=qm is not None, HAS_CMASK=cm is not None,
                 BLOCK_M=block_m, BLOCK_D=block_d, EVEN_D=block_d == channels)
    grid = (n_row_blocks, num)
    # Triton launches on the current CUDA device: make it the tensors' ("cuda:1")
    with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
        if blocks is None:
            tuned[grid](*args, **flags)
        else:
            plain[grid](*args, BLOCK_N=blocks[1], **flags)
    nearest, similarity = _unpack(row)  # (K, L_query): nearest candidate feature
    # the query blocks' maxima: keys are distinct, so the maximum is the first index on ties
    best_q, _ = _unpack(part.amax(dim=1))  # (K, L_cand): nearest query feature
    mutual = best_q.gather(1, nearest) == torch.arange(lq, device=device)
    if qm is not None:
        mutual &= qm
    if cm is not None:
        mutual &= cm.gather(1, nearest)
    return FusedResult(mutual.sum(dim=1), nearest, mutual, similarity)
