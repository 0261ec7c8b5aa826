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
from selavpr_ros.map.local_format import expand_int4_tensor

log = logging.getLogger(__name__)

UPLOAD_PLACES = 256  # places per host -> device copy while filling the cache (~240 MB)


def local_feature_bytes(place_map: PlaceMap) -> int:
    """Bytes of the map's local features (and scales, masks) as stored."""
    return place_map.count * place_map.local_format.place_bytes(place_map.extractor_info)


class LocalFeatureCache:
    """All local features (and masks, scales) of a map on ``device``, as stored.

    Quantised maps stay codes, never floats; int4 bytes stay packed (half of int8) and only
    the gathered candidates are expanded into int8 codes, on the device.
    """

    def __init__(self, local: torch.Tensor, mask: torch.Tensor | None,
                 scale: torch.Tensor | None = None, packed: bool = False) -> None:
        self.local = local
        self.mask = mask
        self.scale = scale
        self.packed = packed
        self.device = local.device

    @property
    def nbytes(self) -> int:
        extra = 0 if self.mask is None else self.mask.numel()
        if self.scale is not None:
            extra += self.scale.numel() * self.scale.element_size()
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
        info, fmt = place_map.extractor_info, place_map.local_format
        count, rows = place_map.count, fmt.stored_count(info)
        dtype = torch.from_numpy(np.zeros(0, fmt.file_dtype)).dtype
        local = torch.empty((count, rows, fmt.file_dim(info)), dtype=dtype, device=device)
        mask = scale = None
        if info.variable_local_count:
            mask = torch.empty((count, rows), dtype=torch.bool, device=device)
        if fmt.quantized:
            scale = torch.empty((count, rows), dtype=torch.float16, device=device)
        for start in range(0, count, UPLOAD_PLACES):
            stop = min(count, start + UPLOAD_PLACES)
            codes, scales, masks = place_map.local_codes(np.arange(start, stop), packed=True)
            local[start:stop].copy_(torch.from_numpy(codes))
            if mask is not None and masks is not None:
                mask[start:stop].copy_(torch.from_numpy(masks))
            if scale is not None and scales is not None:
                scale[start:stop].copy_(torch.from_numpy(scales))
        log.info("cached %d places' local features on %s (%.0f MiB)", count, device,
                 needed / 2**20)
        return cls(local, mask, scale, packed=fmt.packed)

    def gather(self, ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(K, L, C) local features and (K, L) masks (or None) of places ``ids``, on the device."""
        local, _, mask = self.gather_codes(ids)
        return local, mask

    def gather_codes(self, ids: np.ndarray
                     ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Gather stored local features, int8 scales (or None) and masks (or None) of ``ids``."""
        ids = np.asarray(ids, dtype=np.int64)
        tensors = (self.local, self.scale, self.mask)
        if self.device.type == "cpu":  # numpy's row copy is ~10x torch's CPU fp16 index_select
            local, scale, mask = (None if t is None else torch.from_numpy(t.numpy()[ids])
                                  for t in tensors)
        else:
            index = torch.from_numpy(ids).to(self.device)
            local, scale, mask = (None if t is None else t.index_select(0, index)
                                  for t in tensors)
        assert local is not None
        return (expand_int4_tensor(local) if self.packed else local), scale, mask
