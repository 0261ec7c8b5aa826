"""The faiss index over a map's global descriptors (inner product on unit vectors = cosine).

Kinds: ``flat`` (exact, the default), ``ivf`` (IVFFlat), ``ivfpq`` and ``hnsw`` for large maps.
The index is saved with every commit as ``index-<generation>.faiss`` (part of the generation, so
a reader always gets the index that matches its descriptors). A flat index is read memory-mapped,
so opening costs nothing whatever the map size; the others are read into memory when the map is
first searched. IVF indexes are trained once, on the first commit (``nlist`` is then recorded);
:meth:`PlaceMap.rebuild_index` retrains. GPU faiss is used when present (flat and IVF kinds).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, cast

import faiss
import numpy as np

from selavpr_ros.errors import ConfigError, MapFormatError

log = logging.getLogger(__name__)

IndexKind = Literal["flat", "ivf", "ivfpq", "hnsw"]
_KINDS = ("flat", "ivf", "ivfpq", "hnsw")


@dataclass(frozen=True)
class IndexSpec:
    """Which faiss index to build, and its search parameters.

    Attributes:
        kind: "flat" (exact), "ivf", "ivfpq" or "hnsw".
        nlist: IVF lists; 0 = chosen at training as about 4*sqrt(N), at most N/39.
        nprobe: IVF lists visited per query.
        pq_m, pq_bits: IVFPQ sub-quantizers and bits per code (``global_dim % pq_m == 0``).
        hnsw_m, ef_construction, ef_search: HNSW graph degree and beam widths.
        use_gpu: move flat/IVF indexes to the GPU when faiss sees one.
    """

    kind: IndexKind = "flat"
    nlist: int = 0
    nprobe: int = 64
    pq_m: int = 64
    pq_bits: int = 8
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 256
    use_gpu: bool = True

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ConfigError(f"index kind must be one of {_KINDS}, got {self.kind!r}")
        for name in ("nprobe", "pq_m", "pq_bits", "hnsw_m", "ef_construction", "ef_search"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"index {name} must be >= 1, got {getattr(self, name)}")
        if self.nlist < 0:
            raise ConfigError(f"index nlist must be >= 0, got {self.nlist}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexSpec:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown index settings: {sorted(unknown)}")
        return cls(**data)


def auto_nlist(count: int) -> int:
    return max(1, min(int(round(4 * math.sqrt(count))), count // 39))


def build_index(spec: IndexSpec, vectors: np.ndarray) -> tuple[faiss.Index, IndexSpec]:
    """Build a new index holding ``vectors`` (trained on them if needed), and the resolved spec."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    count, dim = vectors.shape
    index: faiss.Index
    if spec.kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif spec.kind == "hnsw":
        hnsw = faiss.IndexHNSWFlat(dim, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = spec.ef_construction
        index = hnsw
    else:
        nlist = spec.nlist or auto_nlist(count)
        spec = replace(spec, nlist=nlist)
        if count < nlist:
            raise ConfigError(f"an IVF index with {nlist} lists needs >= {nlist} places to train")
        quantizer = faiss.IndexFlatIP(dim)
        if spec.kind == "ivf":
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            if dim % spec.pq_m:
                raise ConfigError(f"pq_m={spec.pq_m} must divide the global dim {dim}")
            if count < 2**spec.pq_bits:
                raise ConfigError(
                    f"an IVFPQ index needs >= {2**spec.pq_bits} places to train, got {count}"
                )
            index = faiss.IndexIVFPQ(
                quantizer, dim, nlist, spec.pq_m, spec.pq_bits, faiss.METRIC_INNER_PRODUCT
            )
        index.train(vectors)
    if count:
        index.add(vectors)
    return index, spec


def write_index(index: faiss.Index, path: Path) -> None:
    """Save the (CPU) index and fsync it; the caller commits it through the manifest."""
    faiss.write_index(index, str(path))
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_INDEX_TYPES = {
    "flat": faiss.IndexFlat,
    "ivf": faiss.IndexIVFFlat,
    "ivfpq": faiss.IndexIVFPQ,
    "hnsw": faiss.IndexHNSW,
}


def read_index(
    path: Path, spec: IndexSpec, *, writable: bool, name: Path | None = None
) -> faiss.Index:
    """Load an index; flat indexes of read-only maps are memory-mapped (zero copy).

    ``name`` is the index's path in the map when ``path`` is another way to the same file
    (an open descriptor under /proc); errors name it.

    Raises:
        MapFormatError: the file is not a faiss index, or not of the kind the manifest says.
    """
    name = name or path
    # faiss aborts the process (no exception) when adding to a memory-mapped index, so a map
    # opened for writing reads its index into memory.
    flags = faiss.IO_FLAG_MMAP_IFC if spec.kind == "flat" and not writable else 0
    try:
        index = faiss.read_index(str(path), flags)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MapFormatError(f"{name} is not a readable faiss index: {first}") from err
    if not isinstance(index, _INDEX_TYPES[spec.kind]) or (
        index.metric_type != faiss.METRIC_INNER_PRODUCT
    ):
        raise MapFormatError(
            f"{name} is a faiss {type(index).__name__} (metric {index.metric_type}), but the "
            f"manifest says a {spec.kind!r} inner-product index"
        )
    configure_search(index, spec)
    return index


def configure_search(index: faiss.Index, spec: IndexSpec) -> None:
    if spec.kind in ("ivf", "ivfpq"):
        faiss.extract_index_ivf(index).nprobe = spec.nprobe
    elif spec.kind == "hnsw":
        # an IndexHNSW: build_index makes one, read_index checks the type
        cast(faiss.IndexHNSW, index).hnsw.efSearch = spec.ef_search


def maybe_to_gpu(index: faiss.Index, spec: IndexSpec) -> faiss.Index:
    """Return a GPU copy of a flat/IVF index when faiss has GPUs and ``use_gpu`` is set."""
    if not spec.use_gpu or spec.kind == "hnsw" or not hasattr(faiss, "StandardGpuResources"):
        return index
    if faiss.get_num_gpus() <= 0:
        return index
    resources = faiss.StandardGpuResources()
    gpu = faiss.index_cpu_to_gpu(resources, 0, index)
    # keep the resources alive with the index (a Python attribute on the SWIG object)
    gpu.referenced_resources = resources  # type: ignore[attr-defined]
    if spec.kind in ("ivf", "ivfpq"):
        faiss.GpuParameterSpace().set_index_parameter(gpu, "nprobe", spec.nprobe)
    log.info("faiss index moved to GPU 0")
    return gpu


def check_index(index: faiss.Index, path: Path, count: int, dim: int) -> None:
    if index.ntotal != count or index.d != dim:
        raise MapFormatError(
            f"{path} indexes {index.ntotal} vectors of dim {index.d}, "
            f"manifest expects {count} of dim {dim}"
        )
