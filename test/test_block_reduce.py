"""The tiled method's one-pass kernel against torch's own reductions (exact: no arithmetic)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selavpr_ros.matching.block_reduce import LANES, reduce_block


def _run(sim: torch.Tensor, blocks: list[tuple[int, int]], second: bool
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    rows, cols = sim.shape
    col_max = np.full(cols, -np.inf, np.float32)
    col_arg = np.zeros(cols, np.int32)
    col_second = np.full(cols, -np.inf, np.float32) if second else None
    row_arg = np.full(rows, -1, np.int32)
    for start, stop in blocks:
        reduce_block(sim[start:stop].contiguous().numpy(), start, col_max, col_arg, col_second,
                     row_arg[start:stop])
    return col_max, col_arg, col_second, row_arg


@pytest.mark.parametrize("cols", [1, 7, LANES, LANES + 1, 130, 3721])
@pytest.mark.parametrize("second", [False, True])
def test_kernel_equals_torch_max_argmax_and_topk(cols: int, second: bool) -> None:
    gen = torch.Generator().manual_seed(cols)
    # small integers: ties everywhere, within a lane, across lanes and across blocks
    sim = torch.randint(-3, 4, (150, cols), generator=gen).float()
    sim[5] = float("-inf")  # a masked candidate feature
    sim[:, cols // 2] = float("-inf")  # a masked query feature
    sim[7, : cols // 3] = float("-inf")  # a partly masked row: its maximum is further on
    blocks = [(0, 40), (40, 41), (41, 150)]
    col_max, col_arg, col_second, row_arg = _run(sim, blocks, second)

    values, index = torch.max(sim, dim=0)
    assert np.array_equal(col_max, values.numpy())
    assert np.array_equal(col_arg, index.numpy())
    assert np.array_equal(row_arg, torch.argmax(sim, dim=1).numpy())
    if second:
        assert col_second is not None
        assert np.array_equal(col_second, torch.topk(sim, 2, dim=0).values[1].numpy())


def test_kernel_on_random_floats_equals_torch() -> None:
    gen = torch.Generator().manual_seed(3)
    sim = torch.randn(266, 3721, generator=gen)
    col_max, col_arg, col_second, row_arg = _run(sim, [(0, 266)], True)
    assert np.array_equal(col_arg, torch.argmax(sim, dim=0).numpy())
    assert np.array_equal(row_arg, torch.argmax(sim, dim=1).numpy())
    assert col_second is not None
    assert np.array_equal(col_second, torch.topk(sim, 2, dim=0).values[1].numpy())


def test_first_index_wins_when_a_later_lane_holds_the_same_maximum() -> None:
    sim = torch.zeros(2, 3 * LANES)
    sim[0, [LANES + 5, 3, 2 * LANES + 1]] = 1.0  # lane 5 of step 1, lane 3 of step 0, ...
    sim[1, [2 * LANES - 1, LANES - 1]] = 2.0  # the same lane in two steps
    _, _, _, row_arg = _run(sim, [(0, 2)], False)
    assert row_arg.tolist() == [3, LANES - 1]
