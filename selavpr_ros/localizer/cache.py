"""The map's local features resident on the re-ranking device, gathered there by place id.

Fetching K=100 candidates' local features from the memory-mapped map and copying them to the
GPU costs more than re-ranking them there (~95 MB per query at 61x61x128 fp16). A map of a few
thousand places fits in GPU memory (0.95 MB per place), so the localizer keeps it there once
and a query only sends its candidate ids.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from selavpr_ros.map import PlaceMap

log = logging.getLogger(__name__)

UPLOAD_PLACES = 256  # places per host -> device copy while filling the cache (~240 MB)


def local_feature_bytes(place_map: PlaceMap) -> int:
    """Bytes of the map's local features (and masks) as stored."""
    info = place_map.extractor_info
    itemsize = np.dtype(place_map.manifest.local_dtype).itemsize
    per_place = info.local_count * info.local_dim * itemsize
    if info.variable_local_count:
        per_place += info.local_count
    return place_map.count * per_place


class LocalFeatureCache:
    """All local features (and masks) of a map as tensors on ``device``, in the map's dtype."""

    def __init__(self, local: torch.Tensor, mask: torch.Tensor | None) -> None:
        self.local = local
        self.mask = mask
        self.device = local.device

    @property
    def nbytes(self) -> int:
        extra = 0 if self.mask is None else self.mask.numel()
        return self.local.numel() * self.local.element_size() + extra

    @classmethod
    def build(
        cls, place_map: PlaceMap, device: str | torch.device, max_bytes: int
    ) -> LocalFeatureCache | None:
        """Copy the map's local features to ``device``.

        Returns None when they exceed ``max_bytes`` (or, on CUDA, half the free device memory)
        or the map is empty.
        """
        device = torch.device(device)
        needed = local_feature_bytes(place_map)
        if place_map.count == 0 or needed > max_bytes:
            if place_map.count:
                log.info("map local features (%.0f MiB) exceed the device cache budget "
                         "(%.0f MiB): fetched from the map per query", needed / 2**20,
                         max_bytes / 2**20)
            return None
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if needed > free // 2:
                log.info("map local features (%.0f MiB) exceed half the free memory of %s",
                         needed / 2**20, device)
                return None
        info = place_map.extractor_info
        count = place_map.count
        dtype = torch.from_numpy(np.zeros(0, place_map.manifest.local_dtype)).dtype
        local = torch.empty((count, info.local_count, info.local_dim), dtype=dtype, device=device)
        mask = None
        if info.variable_local_count:
            mask = torch.empty((count, info.local_count), dtype=torch.bool, device=device)
        for start in range(0, count, UPLOAD_PLACES):
            stop = min(count, start + UPLOAD_PLACES)
            feats = place_map.features(np.arange(start, stop))
            local[start:stop].copy_(torch.from_numpy(feats.local))
            if mask is not None and feats.local_mask is not None:
                mask[start:stop].copy_(torch.from_numpy(feats.local_mask))
        log.info("cached %d places' local features on %s (%.0f MiB)", count, device,
                 needed / 2**20)
        return cls(local, mask)

    def gather(self, ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(K, L, C) local features and (K, L) masks (or None) of places ``ids``, on the device."""
        ids = np.asarray(ids, dtype=np.int64)
        if self.device.type == "cpu":  # numpy's row copy is ~10x torch's CPU fp16 index_select
            local = torch.from_numpy(self.local.numpy()[ids])
            mask = None if self.mask is None else torch.from_numpy(self.mask.numpy()[ids])
            return local, mask
        index = torch.from_numpy(ids).to(self.device)
        local = self.local.index_select(0, index)
        mask = None if self.mask is None else self.mask.index_select(0, index)
        return local, mask
