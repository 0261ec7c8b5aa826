"""How a map stores its places' local features: lossless fp16, or a compact format.

A SelaVPR place is 61x61x128 fp16 local features (0.91 MiB). A map can instead store them
compactly, chosen when it is created and recorded in its manifest:

- ``int8``: each feature quantised to int8 with its own scale (``max |x| / 127``, float16),
  stored as a ``scale`` array next to the codes. Re-ranking multiplies int8 dot products by the
  candidate feature's scale (an int8 x float product over <= 2^24 is exact in float32), so
  places are never decoded into float32 copies.
- ``int4``: the same with 15 levels (``max |x| / 7``), two codes per byte: channel ``j`` in
  the low nibble and channel ``j + C/2`` in the high nibble of byte ``j``. A fetch expands the
  nibbles into int8 codes in place (:func:`unpack_int4`), and re-ranking then reads them as it
  reads int8 codes, so the map is a quarter of fp16 on disk and in the page cache.
- ``pcaN``: features projected onto the N leading right-singular vectors of the map's own
  features (uncentred PCA: the best rank-N approximation of their dot products) and
  L2-normalised again, so cosine semantics (ratio test, similarity threshold) still hold. The
  projection is fitted on the first commit's features and stored in the map (``codec/``,
  checksummed); queries are projected the same way.
- ``pcaN-int8``, ``pcaN-int4``: both.
- ``stride`` S > 1 keeps every S-th row and column of a dense grid (SelaVPR), on the map and on
  the query side alike.

The same format is applied to the query (:meth:`LocalCodec.query`), so re-ranking compares
like with like.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import torch

from selavpr_ros.errors import ConfigError, MapFormatError
from selavpr_ros.extractors.base import ExtractorInfo

STORED_DTYPES = ("float16", "float32", "int8", "int4")
QUANTIZED_BITS = {"int8": 8, "int4": 4}
CODEC_DIR = "codec"
PCA_KEY = "pca_components"
PCA_FIT_MAX_VECTORS = 200_000  # features sampled to fit the projection
_NAME = re.compile(r"^(?:(fp16|fp32|int8|int4)|pca(\d+)(?:-(int8|int4))?)$")
_SHORT = {"float16": "fp16", "float32": "fp32", "int8": "int8", "int4": "int4"}


@dataclass(frozen=True)
class LocalFormat:
    """Stored form of local features: ``dtype``, ``pca_dim`` (0 = none), grid ``stride``."""

    dtype: str = "float16"
    pca_dim: int = 0
    stride: int = 1

    def __post_init__(self) -> None:
        if self.dtype not in STORED_DTYPES:
            raise ConfigError(f"local dtype must be one of {STORED_DTYPES}, got {self.dtype!r}")
        if self.pca_dim < 0 or self.stride < 1:
            raise ConfigError(
                f"local format needs pca_dim >= 0 and stride >= 1, got {self.pca_dim}, "
                f"{self.stride}"
            )
        if self.pca_dim and self.dtype == "float32":
            raise ConfigError("a PCA local format is stored as float16, int8 or int4")
        if self.dtype == "int4" and self.pca_dim % 2:
            raise ConfigError(f"int4 packs two channels per byte: pca{self.pca_dim} is odd")

    @classmethod
    def parse(cls, name: str, stride: int = 1) -> LocalFormat:
        """``fp16``, ``fp32``, ``int8``, ``int4``, ``pca64``, ``pca64-int8`` or ``pca64-int4``."""
        match = _NAME.match(name.strip().lower())
        if match is None:
            raise ConfigError(
                f"unknown local format {name!r}: use fp16, int8, int4, pcaN, pcaN-int8 or "
                f"pcaN-int4 (e.g. pca64)"
            )
        plain, pca, quantized = match.groups()
        dtypes = {short: dtype for dtype, short in _SHORT.items()}
        if plain:
            return cls(dtypes[plain], 0, stride)
        return cls(quantized or "float16", int(pca), stride)

    @property
    def name(self) -> str:
        short = _SHORT[self.dtype]
        base = short if not self.pca_dim else f"pca{self.pca_dim}" + (
            f"-{short}" if self.quantized else "")
        return base if self.stride == 1 else f"{base}/stride{self.stride}"

    @property
    def quantized(self) -> bool:
        return self.dtype in QUANTIZED_BITS

    @property
    def packed(self) -> bool:
        """Two codes per stored byte (int4)."""
        return self.dtype == "int4"

    @property
    def code_dtype(self) -> str:
        """The dtype re-ranking reads: int8 codes for both quantised formats."""
        return "int8" if self.quantized else self.dtype

    @property
    def file_dtype(self) -> str:
        """The dtype of the ``local`` files (packed int4 nibbles are bytes)."""
        return "uint8" if self.packed else self.dtype

    @property
    def lossless(self) -> bool:
        return self.dtype in ("float16", "float32") and not self.pca_dim and self.stride == 1

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "dtype": self.dtype, "pca_dim": self.pca_dim,
                "stride": self.stride}

    def check(self, info: ExtractorInfo) -> None:
        """Raise ConfigError when the format does not fit the extractor's features."""
        if self.stride > 1 and info.local_grid is None:
            raise ConfigError(
                f"--local-stride {self.stride} needs a dense grid of local features; "
                f"extractor {info.name!r} has none"
            )
        if self.pca_dim and self.pca_dim >= info.local_dim:
            raise ConfigError(
                f"PCA to {self.pca_dim} dims needs local features of more dims "
                f"(extractor {info.name!r} has {info.local_dim})"
            )
        if self.packed and self.stored_dim(info) % 2:
            raise ConfigError(
                f"int4 packs two channels per byte; extractor {info.name!r} has "
                f"{info.local_dim}-d local features"
            )

    def stored_count(self, info: ExtractorInfo) -> int:
        if self.stride == 1 or info.local_grid is None:
            return info.local_count
        h, w = info.local_grid
        return math.ceil(h / self.stride) * math.ceil(w / self.stride)

    def stored_dim(self, info: ExtractorInfo) -> int:
        """Channels of a stored feature (as re-ranking reads it)."""
        return self.pca_dim or info.local_dim

    def file_dim(self, info: ExtractorInfo) -> int:
        """Last axis of the ``local`` files: half the channels for packed int4."""
        return self.stored_dim(info) // 2 if self.packed else self.stored_dim(info)

    def place_bytes(self, info: ExtractorInfo) -> int:
        """Bytes of one place's stored local features (codes, scales, mask)."""
        count = self.stored_count(info)
        total = count * self.file_dim(info) * np.dtype(self.file_dtype).itemsize
        if self.quantized:
            total += count * 2
        if info.variable_local_count:
            total += count
        return total


def format_from_dict(data: dict[str, object], where: str) -> LocalFormat:
    try:
        return LocalFormat(str(data["dtype"]), int(data["pca_dim"]),  # type: ignore[call-overload]
                           int(data["stride"]))  # type: ignore[call-overload]
    except (KeyError, TypeError, ValueError, ConfigError) as err:
        raise MapFormatError(f"{where}: invalid local format {data!r:.120}: {err}") from err


def fit_pca(local: np.ndarray, mask: np.ndarray | None, dim: int, seed: int = 0) -> np.ndarray:
    """(C, dim) float32 leading right-singular vectors of the valid features (uncentred PCA)."""
    vectors = local.reshape(-1, local.shape[-1])
    if mask is not None:
        vectors = vectors[mask.reshape(-1)]
    if len(vectors) > PCA_FIT_MAX_VECTORS:
        rng = np.random.default_rng(seed)
        vectors = vectors[np.sort(rng.choice(len(vectors), PCA_FIT_MAX_VECTORS, replace=False))]
    if len(vectors) < dim:
        raise MapFormatError(
            f"fitting a {dim}-d PCA of the local features needs at least {dim} valid features; "
            f"the first commit has {len(vectors)}"
        )
    x = vectors.astype(np.float64)
    _, eigvec = np.linalg.eigh(x.T @ x)
    components = eigvec[:, ::-1][:, :dim]
    # a sign convention, so the same features give the same file on any machine's LAPACK
    signs = np.sign(components[np.abs(components).argmax(axis=0), np.arange(dim)])
    return np.ascontiguousarray(components * signs, dtype=np.float32)


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


class LocalCodec:
    """Encodes a map's local features in its :class:`LocalFormat`, and queries to match."""

    def __init__(self, fmt: LocalFormat, info: ExtractorInfo,
                 components: np.ndarray | None = None) -> None:
        """``components``: the (C, pca_dim) projection; None while a PCA map has none yet."""
        self.format = fmt
        self.info = info
        if components is not None:
            want = (info.local_dim, fmt.pca_dim)
            if components.shape != want or components.dtype != np.float32:
                raise MapFormatError(
                    f"PCA projection is {components.shape} {components.dtype}, the map's local "
                    f"format needs {want} float32"
                )
        self.components = components

    @property
    def needs_fit(self) -> bool:
        return bool(self.format.pca_dim) and self.components is None

    def fitted(self, local: np.ndarray, mask: np.ndarray | None) -> LocalCodec:
        """Return this codec with its projection fitted on ``local`` (a first commit)."""
        local, mask, _ = self.subsample(local, mask, None)
        return LocalCodec(self.format, self.info, fit_pca(local, mask, self.format.pca_dim))

    def state(self) -> dict[str, np.ndarray]:
        return {} if self.components is None else {PCA_KEY: self.components}

    # ------------------------------------------------------------------ transforms
    def kept_indices(self) -> np.ndarray | None:
        """Flat grid index of each stored local feature; None when every feature is kept."""
        stride, grid = self.format.stride, self.info.local_grid
        if stride == 1 or grid is None:
            return None
        h, w = grid
        return np.arange(h * w).reshape(h, w)[::stride, ::stride].reshape(-1)

    def subsample(self, local: np.ndarray, mask: np.ndarray | None,
                  keypoints: np.ndarray | None
                  ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Every ``stride``-th row and column of a dense grid; (..., L, ...) arrays."""
        keep = self.kept_indices()
        if keep is None:
            return local, mask, keypoints
        return (local[..., keep, :], None if mask is None else mask[..., keep],
                None if keypoints is None else keypoints[..., keep, :])

    def _project(self, local: np.ndarray) -> np.ndarray:
        """Project (if PCA) and return float32 unit vectors."""
        x = np.asarray(local, dtype=np.float32)
        if self.format.pca_dim:
            if self.components is None:
                raise MapFormatError("the map's PCA projection has not been fitted yet")
            return _normalise(x @ self.components).astype(np.float32, copy=False)
        return x

    def query(self, local: np.ndarray, mask: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray | None]:
        """Map a query's (L, C) local features (and mask) into the stored space (float32)."""
        local, mask, _ = self.subsample(local, mask, None)
        if self.format.lossless:
            return local, mask
        return self._project(local), mask

    def encode(self, local: np.ndarray, mask: np.ndarray | None,
               keypoints: np.ndarray | None) -> dict[str, np.ndarray]:
        """Encode (B, L, C) features: ``local`` (and ``scale``, ``mask``, ``keypoints``)."""
        local, mask, keypoints = self.subsample(local, mask, keypoints)
        out: dict[str, np.ndarray] = {}
        if self.format.quantized:
            codes, scale = quantize(self._project(local), QUANTIZED_BITS[self.format.dtype])
            out["local"] = pack_int4(codes) if self.format.packed else codes
            out["scale"] = scale
        elif self.format.pca_dim:
            out["local"] = self._project(local).astype(self.format.dtype)
        else:
            out["local"] = local.astype(self.format.dtype, copy=False)
        if mask is not None:
            out["mask"] = mask
        if keypoints is not None:
            out["keypoints"] = keypoints.astype(np.float32, copy=False)
        return out


def quantize(x: np.ndarray, bits: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """int8 codes in +-(2^(bits-1) - 1) and float16 per-vector scales: ``x ~= codes * scale``."""
    top = 2 ** (bits - 1) - 1
    peak = np.abs(x).max(axis=-1)
    scale = np.where(peak > 0, peak / top, 1.0).astype(np.float16)
    scale = np.where(scale > 0, scale, np.float16(1.0)).astype(np.float16)  # fp16 underflow
    codes = np.clip(np.rint(x / scale[..., None].astype(np.float32)), -top, top)
    return codes.astype(np.int8), scale


def pack_int4(codes: np.ndarray) -> np.ndarray:
    """Pack (..., C) int8 codes in -8..7 into (..., C/2) bytes (see the module docstring)."""
    half = codes.shape[-1] // 2
    low = codes[..., :half].view(np.uint8) & np.uint8(0x0F)
    high = codes[..., half:].view(np.uint8) << np.uint8(4)
    return low | high


def expand_int4_tensor(packed: torch.Tensor) -> torch.Tensor:
    """(..., C/2) packed bytes (uint8) -> (..., C) int8 codes, on the tensor's device."""
    signed = packed.view(torch.int8)
    return torch.cat([(signed << 4) >> 4, signed >> 4], dim=-1)


def unpack_int4(codes: np.ndarray) -> None:
    """Expand packed bytes held in the first half of each (..., C) int8 row, in place.

    ``codes`` is C-contiguous; byte ``j`` of a row becomes codes ``j`` and ``j + C/2``.
    """
    if not codes.flags.c_contiguous or codes.dtype != np.int8:
        raise ValueError("unpack_int4 needs a C-contiguous int8 array")
    from selavpr_ros.map.int4_kernel import expand_rows  # numba, loaded by int4 maps only

    expand_rows(codes.reshape(-1, codes.shape[-1]))


def dequantize(codes: np.ndarray, scale: np.ndarray | None, dtype: str = "float16"
               ) -> np.ndarray:
    """Decode local features into floats (``codes * scale`` for int8 and expanded int4)."""
    if scale is None:
        return codes.astype(dtype, copy=False)
    return (codes.astype(np.float32) * scale[..., None].astype(np.float32)).astype(dtype)
