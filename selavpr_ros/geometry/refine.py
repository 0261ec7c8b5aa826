"""Sub-grid query keypoints for the classical extractor's dense grid.

Dense features sit on a grid (8 px at the working size), so a match links two grid points and
the true correspondence is off by up to half a step in each image: flows are quantised, which
biases a relative pose (distant points and points near the focus of expansion get a flow of 0).
The map keeps only the place's descriptors, but the query image is at hand, so the query side is
refined: the query's RootSIFT is computed on a grid twice as fine as the step allows (the same
working size, scales and filters as the extractor, ``ClassicalExtractor._describe``), and each
matched query point moves to the fine-grid position within half a step whose descriptor is most
similar to the place's descriptor, then to the vertex of a parabola through that similarity and
its neighbours. The place's grid point then has an accurately placed query pixel.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from selavpr_ros.extractors.classical import ClassicalConfig, ClassicalExtractor


def _parabola_offset(left: np.ndarray, centre: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Vertex of the parabola through three equally spaced values, in steps (-0.5..0.5)."""
    denom = left - 2.0 * centre + right
    with np.errstate(divide="ignore", invalid="ignore"):
        off = np.where(denom < 0, 0.5 * (left - right) / denom, 0.0)
    return np.clip(np.nan_to_num(off), -0.5, 0.5)


class ClassicalRefiner:
    """Refines query pixels of MNN pairs; call with query indices and place descriptors.

    Args:
        config: the (fitted) classical extractor's configuration.
        image: the query's (H, W, 3) uint8 RGB image.
    """

    def __init__(self, config: ClassicalConfig, image: np.ndarray) -> None:
        if config.image_size is None:
            raise ValueError("the classical extractor is not fitted (no working size)")
        self._fine_step = 2 if config.step % 2 == 0 else 1
        self._ratio = config.step // self._fine_step
        width, height = config.image_size
        fine = replace(config, step=self._fine_step)
        desc, kp, _ = ClassicalExtractor._describe(image, fine)
        self._subset = config.local_subset
        self._blocks = []  # per scale: (first coarse index, coarse nx, count, fine grid arrays)
        coarse_start = fine_start = 0
        for b in config.bin_sizes:
            xs, ys = config.grid.positions(height, width, b)
            fxs, fys = fine.grid.positions(height, width, b)
            n_fine = len(fxs) * len(fys)
            self._blocks.append((
                coarse_start, len(xs), len(xs) * len(ys),
                desc[fine_start:fine_start + n_fine].reshape(len(fys), len(fxs), -1),
                kp[fine_start:fine_start + n_fine].reshape(len(fys), len(fxs), 2),
            ))
            coarse_start += len(xs) * len(ys)
            fine_start += n_fine

    def __call__(self, query_indices: np.ndarray, place_desc: np.ndarray) -> np.ndarray:
        """(N, 2) refined query pixels (original image) for (N,) indices, (N, C) descriptors."""
        full = self._subset[np.asarray(query_indices, np.int64)]
        target = np.asarray(place_desc, np.float32)
        out = np.zeros((len(full), 2), np.float64)
        r = self._ratio // 2  # search half a coarse step either way
        offsets = np.arange(-r, r + 1)
        for start, nx, count, desc, kp in self._blocks:
            sel = np.nonzero((full >= start) & (full < start + count))[0]
            if sel.size == 0:
                continue
            row, col = np.divmod(full[sel] - start, nx)
            fr, fc = row * self._ratio, col * self._ratio
            ny_f, nx_f = desc.shape[:2]
            rr = np.clip(fr[:, None, None] + offsets[None, :, None], 0, ny_f - 1)
            cc = np.clip(fc[:, None, None] + offsets[None, None, :], 0, nx_f - 1)
            rr, cc = np.broadcast_arrays(rr, cc)
            sims = np.einsum("nijc,nc->nij", desc[rr, cc], target[sel])
            k = len(offsets)
            best = np.argmax(sims.reshape(len(sel), -1), axis=1)
            bi, bj = np.divmod(best, k)
            n = np.arange(len(sel))
            dy = np.zeros(len(sel))
            dx = np.zeros(len(sel))
            inner_i = (bi > 0) & (bi < k - 1)
            inner_j = (bj > 0) & (bj < k - 1)
            dy[inner_i] = _parabola_offset(sims[n, bi - 1, bj], sims[n, bi, bj],
                                           sims[n, np.minimum(bi + 1, k - 1), bj])[inner_i]
            dx[inner_j] = _parabola_offset(sims[n, bi, bj - 1], sims[n, bi, bj],
                                           sims[n, bi, np.minimum(bj + 1, k - 1)])[inner_j]
            base = kp[rr[n, bi, bj], cc[n, bi, bj]].astype(np.float64)
            # one fine step in original pixels, from neighbouring keypoints
            step_x = (kp[0, 1, 0] - kp[0, 0, 0]) if nx_f > 1 else 0.0
            step_y = (kp[1, 0, 1] - kp[0, 0, 1]) if ny_f > 1 else 0.0
            out[sel, 0] = base[:, 0] + dx * step_x
            out[sel, 1] = base[:, 1] + dy * step_y
        return out
