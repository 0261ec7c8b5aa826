"""Expansion of packed int4 local features into int8 codes, in place (numba).

Every fetch of an int4 map's candidates expands their bytes; numpy needs three strided passes
over half-rows for it, this loop one (bench/PERFORMANCE.md, issue 18). Imported on the first
int4 fetch only, so maps of other formats never load numba.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(nogil=True, boundscheck=False, cache=True)
def expand_rows(rows: np.ndarray) -> None:  # pragma: no cover - compiled
    """Byte ``j`` of each (N, C) int8 row's first half becomes codes ``j`` and ``j + C/2``.

    Arithmetic shifts sign-extend each nibble: the high one directly, the low one after it is
    shifted to the top of the byte.
    """
    count, channels = rows.shape
    half = channels // 2
    for r in range(count):
        row = rows[r]
        for j in range(half):
            byte = row[j]
            row[j + half] = byte >> 4
            row[j] = np.int8(byte << 4) >> 4
