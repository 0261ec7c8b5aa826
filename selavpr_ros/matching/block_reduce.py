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
    """
    rows, cols = sim.shape
    full = cols - cols % LANES
    lane_max = np.empty(LANES, np.float32)
    lane_at = np.empty(LANES, np.int32)  # start of the step where the lane's maximum was seen
    for r in range(rows):
        row = sim[r]
        here = np.int32(r + row_offset)
        lane_max[:] = -np.inf
        lane_at[:] = 0
        for j0 in range(0, full, LANES):
            step = np.int32(j0)
            for lane in range(LANES):
                j = j0 + lane
                v = row[j]
                if col_second is not None:
                    lower = v if v < col_max[j] else col_max[j]
                    col_second[j] = lower if lower > col_second[j] else col_second[j]
                up = v > col_max[j]
                col_max[j] = v if up else col_max[j]
                col_arg[j] = here if up else col_arg[j]
                better = v > lane_max[lane]
                lane_max[lane] = v if better else lane_max[lane]
                lane_at[lane] = step if better else lane_at[lane]
        best = np.float32(-np.inf)
        arg = 0
        for lane in range(LANES):
            j = lane_at[lane] + lane
            if lane_max[lane] > best or (lane_max[lane] == best and j < arg):
                best = lane_max[lane]
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
                col_arg[j] = here
            if v > best:
                best = v
                arg = j
        row_arg[r] = arg


def compile_kernels() -> None:
    """Compile (or load from numba's cache) both forms of :func:`reduce_block` now.

    Otherwise the first re-ranked query pays for it (about a second without a cache).
    """
    sim = np.zeros((1, 1), np.float32)
    for second in (None, np.full(1, -np.inf, np.float32)):
        reduce_block(sim, 0, np.full(1, -np.inf, np.float32), np.zeros(1, np.int32), second,
                     np.zeros(1, np.int32))
