"""Both arg-maxima of a similarity block in one vectorised pass (the CPU tiled method's kernel).

torch vectorises ``amax`` but not the index-tracking reductions (``max(dim)``, ``argmax``),
which cost up to two thirds of the product they follow (bench/PERFORMANCE.md, issue 17). This
numba kernel reads each block once while it is in cache and keeps, for every column (query
feature), the running maximum, the row where it was first reached and, for the ratio test, the
second largest value; and for every row (candidate feature) the first column holding its
maximum. Column state is carried from block to block, so after the last block it describes the
whole candidate.

Exactness: only comparisons and copies, no arithmetic, so the results are those of torch's
reductions bit for bit: a strictly larger value replaces the running one, which keeps the first
index on ties; rows are scanned in lanes of ``LANES`` columns that each keep their first
maximum, and the lanes are merged by value, then by smallest column. The second largest value
follows ``topk``: a tied maximum counts twice. All-``-inf`` rows and columns (masked features)
give index 0, as torch does.

Imported only by the tiled method, so that CUDA-only machines need not have numba.
"""

from __future__ import annotations

import numpy as np
from numba import njit

LANES = 64  # columns per step of the row scan: enough independent lanes for the vector units
# nnan/nsz let LLVM turn the compare-and-select chains into vector max/blend; no value changes
_FASTMATH = {"nnan", "nsz"}


@njit(nogil=True, boundscheck=False, fastmath=_FASTMATH, cache=True)
def reduce_block(sim: np.ndarray, row_offset: int, col_max: np.ndarray, col_arg: np.ndarray,
                 col_second: np.ndarray | None, row_arg: np.ndarray) -> None:  # pragma: no cover
    """Update the column state with block ``sim`` (rows ``row_offset``...) and fill ``row_arg``.

    ``sim``: (R, L) float32, C-contiguous. ``col_max``/``col_second``: (L,) float32, start at
    ``-inf``; ``col_arg``: (L,) int32, starts at 0; ``row_arg``: (R,) int32, written.
    ``col_second`` None skips the second largest value (numba compiles that case without it).
    Rows are taken two at a time, which halves the reads and writes of the column state; an
    odd last row is paired with a row of ``-inf``, which changes no column.
    """
    rows, cols = sim.shape
    lane_max = np.empty((2, LANES), np.float32)  # per row of the pair: each lane's maximum
    lane_at = np.empty((2, LANES), np.int32)  # ... and the step (column - lane) holding it
    nothing = np.full(cols, -np.inf, np.float32)
    pair_arg = np.empty(2, np.int32)
    for r in range(0, rows, 2):
        second_row = sim[r + 1] if r + 1 < rows else nothing
        _reduce_pair(sim[r], second_row, np.int32(r + row_offset), col_max, col_arg,
                     col_second, lane_max, lane_at, pair_arg)
        row_arg[r] = pair_arg[0]
        if r + 1 < rows:
            row_arg[r + 1] = pair_arg[1]


@njit(nogil=True, boundscheck=False, fastmath=_FASTMATH, inline="always")
def _reduce_pair(row0: np.ndarray, row1: np.ndarray, here: np.int32, col_max: np.ndarray,
                 col_arg: np.ndarray, col_second: np.ndarray | None, lane_max: np.ndarray,
                 lane_at: np.ndarray, pair_arg: np.ndarray) -> None:  # pragma: no cover
    """Rows ``here`` and ``here + 1`` into the column state; their arg-maxima into pair_arg."""
    cols = row0.shape[0]
    full = cols - cols % LANES
    max0, max1, at0, at1 = lane_max[0], lane_max[1], lane_at[0], lane_at[1]
    max0[:] = -np.inf
    max1[:] = -np.inf
    at0[:] = 0
    at1[:] = 0
    there = np.int32(here + 1)
    for j0 in range(0, full, LANES):
        step = np.int32(j0)
        for lane in range(LANES):
            j = j0 + lane
            v0 = row0[j]
            v1 = row1[j]
            first = v0 >= v1  # the pair's larger value; the earlier row on a tie
            hi = v0 if first else v1
            if col_second is not None:  # second largest of {max, second, v0, v1}
                lo = v1 if first else v0
                lower = hi if hi < col_max[j] else col_max[j]
                lower = lower if lower > lo else lo
                col_second[j] = lower if lower > col_second[j] else col_second[j]
            up = hi > col_max[j]
            col_max[j] = hi if up else col_max[j]
            col_arg[j] = (here if first else there) if up else col_arg[j]
            better = v0 > max0[lane]
            max0[lane] = v0 if better else max0[lane]
            at0[lane] = step if better else at0[lane]
            better = v1 > max1[lane]
            max1[lane] = v1 if better else max1[lane]
            at1[lane] = step if better else at1[lane]
    for which in range(2):
        row = row0 if which == 0 else row1
        best = np.float32(-np.inf)
        arg = 0
        for lane in range(LANES):
            j = lane_at[which, lane] + lane
            value = lane_max[which, lane]
            if value > best or (value == best and j < arg):
                best = value
                arg = j
        if best == -np.inf:
            arg = 0  # every column so far is -inf: the first one
        for j in range(full, cols):
            v = row[j]
            if col_second is not None:
                lower = v if v < col_max[j] else col_max[j]
                col_second[j] = lower if lower > col_second[j] else col_second[j]
            if v > col_max[j]:
                col_max[j] = v
                col_arg[j] = here + which
            if v > best:
                best = v
                arg = j
        pair_arg[which] = arg


def compile_kernels() -> None:
    """Compile (or load from numba's cache) both forms of :func:`reduce_block` now.

    Otherwise the first re-ranked query pays for it (about a second without a cache).
    """
    sim = np.zeros((1, 1), np.float32)
    for second in (None, np.full(1, -np.inf, np.float32)):
        reduce_block(sim, 0, np.full(1, -np.inf, np.float32), np.zeros(1, np.int32), second,
                     np.zeros(1, np.int32))
