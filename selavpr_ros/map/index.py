"""The faiss index over a map's global descriptors (inner product on unit vectors = cosine).

Kinds: ``flat`` (exact, the default), ``ivf`` (IVFFlat), ``ivfsq8`` (IVF with 8-bit scalar
quantised vectors, 4x smaller), ``ivfpq``, ``hnsw``, and ``pqfs`` for large maps. IVF kinds can
use an HNSW graph as their coarse quantizer (``coarse="hnsw"``), which keeps assigning a query
to thousands of lists cheap. ``pqfs`` scans every place's 4-bit PQ code with faiss's fast-scan
kernels (``pq_m`` bytes/2 per place) and re-scores the best ``k_factor * k`` with 8-bit scalar
codes (a faiss IndexRefine): it does not rely on the descriptors forming clusters, which IVF
needs. ``tune_index`` (``build-map --index auto``) picks the kind and sets ``nprobe`` or
``k_factor`` from the map's own descriptors so that a held-out sample reaches a target recall.
The index is saved with every commit as ``index-<generation>.faiss`` (part of the generation, so
a reader always gets the index that matches its descriptors). A flat index is read memory-mapped,
so opening costs nothing whatever the map size; the others are read into memory when the map is
first searched. IVF indexes are trained once, on the first commit (``nlist`` is then recorded);
:meth:`PlaceMap.rebuild_index` retrains. GPU faiss is used when present (flat and IVF kinds).
A read-only ``pqfs`` index of a large map is split into one shard per thread at load
(:func:`threaded_shards`), because faiss searches a single query on a single thread.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, cast

import faiss
import numpy as np

from selavpr_ros.errors import ConfigError, MapFormatError

log = logging.getLogger(__name__)

IndexKind = Literal["flat", "ivf", "ivfsq8", "ivfpq", "hnsw", "pqfs"]
_KINDS = ("flat", "ivf", "ivfsq8", "ivfpq", "hnsw", "pqfs")
_IVF_KINDS = ("ivf", "ivfsq8", "ivfpq")


@dataclass(frozen=True)
class IndexSpec:
    """Which faiss index to build, and its search parameters.

    Attributes:
        kind: "flat" (exact), "ivf", "ivfsq8", "ivfpq", "hnsw" or "pqfs".
        nlist: IVF lists; 0 = chosen at training as about 4*sqrt(N), at most N/39.
        nprobe: IVF lists visited per query.
        pq_m, pq_bits: IVFPQ / pqfs sub-quantizers and IVFPQ bits per code (pqfs: always 4)
            (``global_dim % pq_m == 0``).
        k_factor: pqfs re-scores the ``k_factor * k`` best places of the 4-bit scan.
        hnsw_m, ef_construction, ef_search: HNSW graph degree and beam widths.
        use_gpu: move flat/IVF indexes to the GPU when faiss sees one.
        coarse: IVF coarse quantizer, "flat" (exact) or "hnsw" (a graph over the centroids).
        train_max: IVF training sample at most this many places (0 = all).
        target_recall: recall@100 the index was tuned for by ``tune_index`` (0 = not tuned).
        tuned_recall: recall@100 it reached on the held-out sample at the chosen ``nprobe``.
    """

    kind: IndexKind = "flat"
    nlist: int = 0
    nprobe: int = 64
    pq_m: int = 64
    pq_bits: int = 8
    k_factor: int = 1
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 256
    use_gpu: bool = True
    coarse: Literal["flat", "hnsw"] = "flat"
    train_max: int = 0
    target_recall: float = 0.0
    tuned_recall: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ConfigError(f"index kind must be one of {_KINDS}, got {self.kind!r}")
        for name in ("nprobe", "pq_m", "pq_bits", "k_factor", "hnsw_m", "ef_construction",
                     "ef_search"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"index {name} must be >= 1, got {getattr(self, name)}")
        if self.nlist < 0 or self.train_max < 0:
            raise ConfigError(f"index nlist and train_max must be >= 0, got {self.nlist}, "
                              f"{self.train_max}")
        if self.coarse not in ("flat", "hnsw"):
            raise ConfigError(f"index coarse quantizer must be flat or hnsw, got {self.coarse!r}")
        if not (0.0 <= self.target_recall <= 1.0 and 0.0 <= self.tuned_recall <= 1.0):
            raise ConfigError("index target_recall and tuned_recall must be in [0, 1]")

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
    elif spec.kind == "pqfs":
        index = _pqfs(spec, vectors)
    else:
        nlist = spec.nlist or auto_nlist(count)
        spec = replace(spec, nlist=nlist)
        if count < nlist:
            raise ConfigError(f"an IVF index with {nlist} lists needs >= {nlist} places to train")
        quantizer: faiss.Index
        if spec.coarse == "hnsw":
            graph = faiss.IndexHNSWFlat(dim, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            graph.hnsw.efConstruction = spec.ef_construction
            quantizer = graph
        else:
            quantizer = faiss.IndexFlatIP(dim)
        if spec.kind == "ivf":
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        elif spec.kind == "ivfsq8":
            index = faiss.IndexIVFScalarQuantizer(
                quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
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
        index.train(_training_sample(vectors, spec))
        configure_search(index, spec)
    if count:
        index.add(vectors)
    return index, spec


def _training_sample(vectors: np.ndarray, spec: IndexSpec) -> np.ndarray:
    """Return at most ``spec.train_max`` of the vectors (a fixed-seed sample: builds repeat)."""
    count = len(vectors)
    if not spec.train_max or count <= spec.train_max:
        return vectors
    rng = np.random.default_rng(0)
    return vectors[np.sort(rng.choice(count, spec.train_max, replace=False))]


def _pqfs(spec: IndexSpec, vectors: np.ndarray) -> faiss.Index:
    """Make a trained, empty 4-bit PQ fast-scan index whose results SQ8 codes re-score."""
    count, dim = vectors.shape
    if dim % spec.pq_m:
        raise ConfigError(f"pq_m={spec.pq_m} must divide the global dim {dim}")
    if count < PQ4_CENTROIDS:
        raise ConfigError(f"a pqfs index needs >= {PQ4_CENTROIDS} places to train, got {count}")
    base = faiss.IndexPQFastScan(dim, spec.pq_m, 4, faiss.METRIC_INNER_PRODUCT)
    codes = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit,
                                       faiss.METRIC_INNER_PRODUCT)
    index = faiss.IndexRefine(base, codes)
    index.train(_training_sample(vectors, spec))
    configure_search(index, spec)
    return index


PQ4_CENTROIDS = 16
FLAT_MAX_PLACES = 20_000  # exact search of this many 1024-d places stays ~1-4 ms on 2 cores
TUNE_MAX_NLIST = 2048  # k-means cost grows with lists x training sample (~nlist^2)
TUNE_QUERIES = 200
FLAT_TIMING_QUERIES = 20
TUNE_K = 100
NPROBES = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536,
           2048, 3072, 4096)
# IVF-SQ8 reads 1 byte per dimension of the places in the lists it visits, pqfs half a byte per
# 4 dimensions of every place: IVF is only worth it while it visits at most 1/8 of its lists.
IVF_MAX_FRACTION = 8
K_FACTORS = (1, 2, 4, 8, 12, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128)
PQFS_TRAIN_MAX = 65_536
TUNE_KINDS = ("ivfsq8", "pqfs")


@dataclass(frozen=True)
class TuneResult:
    """What ``tune_index`` measured.

    ``sweep``: per setting tried, in order, (kind, nprobe or k_factor, recall@k, median ms).
    """

    spec: IndexSpec
    sweep: tuple[tuple[str, int, float, float], ...]
    build_s: float


def _recall(found: np.ndarray, exact: np.ndarray) -> float:
    hits = sum(len(set(a.tolist()) & set(e.tolist())) for a, e in zip(found, exact, strict=True))
    return hits / max(1, exact.size)


def _without_self(ids: np.ndarray, own: np.ndarray, k: int) -> np.ndarray:
    """Each row's first ``k`` ids other than the query's own place."""
    return np.stack([row[row != me][:k] for row, me in zip(ids, own, strict=True)])


def pqfs_m(dim: int) -> int:
    """Sub-quantizers of a pqfs index: 4 dimensions each (1024-d: 128 bytes per place)."""
    return next(m for m in (dim // 4, dim // 2, dim) if m and dim % m == 0)


def tune_index(vectors: np.ndarray, target_recall: float, *, k: int = TUNE_K,
               queries: int = TUNE_QUERIES, seed: int = 0, flat_max: int | None = None,
               compare_exact: bool = True, kinds: tuple[str, ...] = TUNE_KINDS,
               ) -> tuple[faiss.Index, TuneResult]:
    """Choose and tune an index for ``vectors`` to reach ``target_recall`` (recall@k).

    Up to ``flat_max`` (default FLAT_MAX_PLACES) places: exact search. Beyond, each of
    ``kinds`` in turn is built without the held-out places in its training sample and its
    search setting swept upwards until recall@k on the held-out places (their own id excluded)
    reaches the target; the first kind that does is chosen. ``ivfsq8`` (IVF with 8-bit
    scalar-quantised vectors and an HNSW coarse quantizer; clustered descriptors) may visit at
    most 1/IVF_MAX_FRACTION of its lists; ``pqfs`` (a 4-bit fast scan of every place re-scored
    with 8-bit codes; descriptors without clusters) raises ``k_factor``. The choice depends on
    recall only, so it is the same on every run. When no kind reaches the target, or exact
    search is no slower than the chosen index, exact search is chosen instead
    (``compare_exact=False`` keeps the last kind tried, with the recall it reached).
    """
    unknown = set(kinds) - set(TUNE_KINDS)
    if unknown or not kinds:
        raise ConfigError(f"index tuning kinds must be among {TUNE_KINDS}, got {kinds}")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    count, dim = vectors.shape
    start = time.perf_counter()
    if count <= (FLAT_MAX_PLACES if flat_max is None else flat_max):
        index, spec = build_index(IndexSpec("flat"), vectors)
        spec = replace(spec, target_recall=target_recall, tuned_recall=1.0)
        return index, TuneResult(spec, (), time.perf_counter() - start)
    rng = np.random.default_rng(seed)
    held = np.sort(rng.choice(count, min(queries, count // 10), replace=False))
    keep = np.ones(count, bool)
    keep[held] = False
    q = vectors[held]
    _, truth = faiss.knn(q, vectors, k + 1, metric=faiss.METRIC_INNER_PRODUCT)  # no copy
    truth = _without_self(truth, held, k)
    sweep: list[tuple[str, int, float, float]] = []
    chosen: IndexSpec | None = None
    build_s = 0.0
    for kind in kinds:
        t0 = time.perf_counter()
        if kind == "ivfsq8":
            nlist = min(auto_nlist(count), TUNE_MAX_NLIST)
            spec = IndexSpec("ivfsq8", nlist=nlist, coarse="hnsw",
                             train_max=min(count, 32 * nlist), use_gpu=False)
            settings = [n for n in NPROBES if n <= max(1, nlist // IVF_MAX_FRACTION)]
        else:
            spec = IndexSpec("pqfs", pq_m=pqfs_m(dim), train_max=PQFS_TRAIN_MAX, use_gpu=False)
            settings = list(K_FACTORS)
        index = _build_without(spec, vectors, keep, rng)
        build_s = time.perf_counter() - t0
        field = "nprobe" if kind == "ivfsq8" else "k_factor"
        for value in settings:
            trial = replace(spec, nprobe=value) if kind == "ivfsq8" else replace(
                spec, k_factor=value)
            rec, ms = _measure(index, trial, q, held, truth, k)
            sweep.append((kind, value, rec, ms))
            log.info("index tuning: %s %s %d: recall@%d %.4f, %.2f ms", kind, field, value, k,
                     rec, ms)
            chosen = replace(trial, target_recall=target_recall, tuned_recall=rec)
            if rec >= target_recall:
                break
        assert chosen is not None
        if chosen.tuned_recall >= target_recall:
            break
    assert chosen is not None
    exact_ms = _exact_ms(q[:FLAT_TIMING_QUERIES], vectors, k) if compare_exact else math.inf
    if compare_exact and (chosen.tuned_recall < target_recall or exact_ms <= sweep[-1][3]):
        log.warning("index tuning: %s reaches recall@%d %.3f in %.2f ms; exact search takes "
                    "%.2f ms: using it", chosen.kind, k, chosen.tuned_recall, sweep[-1][3],
                    exact_ms)
        index, spec = build_index(IndexSpec("flat"), vectors)
        spec = replace(spec, target_recall=target_recall, tuned_recall=1.0)
        return index, TuneResult(spec, tuple(sweep), time.perf_counter() - start)
    configure_search(index, chosen)
    return index, TuneResult(chosen, tuple(sweep), build_s)


def _build_without(spec: IndexSpec, vectors: np.ndarray, keep: np.ndarray,
                   rng: np.random.Generator) -> faiss.Index:
    """``spec``'s index over all ``vectors``, trained on a sample of the ``keep`` ones only."""
    train_ids = np.flatnonzero(keep)
    if len(train_ids) > spec.train_max:
        train_ids = np.sort(rng.choice(train_ids, spec.train_max, replace=False))
    index, _ = build_index(replace(spec, train_max=0), vectors[train_ids])
    index.reset()
    index.add(vectors)
    return index


def _measure(index: faiss.Index, spec: IndexSpec, q: np.ndarray, held: np.ndarray,
             truth: np.ndarray, k: int) -> tuple[float, float]:
    """Recall@k of ``index`` searched as ``spec`` says, and its median single-query ms."""
    configure_search(index, spec)
    index.search(q[:5], k + 1)  # warm-up
    times = []
    found = np.empty((len(q), k + 1), np.int64)
    for i in range(len(q)):
        t0 = time.perf_counter()
        found[i] = index.search(q[i : i + 1], k + 1)[1][0]
        times.append(time.perf_counter() - t0)
    return _recall(_without_self(found, held, k), truth), 1e3 * float(np.median(times))


def _exact_ms(queries: np.ndarray, vectors: np.ndarray, k: int) -> float:
    """Median single-query time of exact search (as a flat index searches)."""
    times = []
    for i in range(len(queries)):
        t0 = time.perf_counter()
        faiss.knn(queries[i : i + 1], vectors, k, metric=faiss.METRIC_INNER_PRODUCT)
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


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
    "ivfsq8": faiss.IndexIVFScalarQuantizer,
    "ivfpq": faiss.IndexIVFPQ,
    "hnsw": faiss.IndexHNSW,
    "pqfs": faiss.IndexRefine,
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
    if spec.kind == "pqfs":  # what threaded_shards and configure_search rely on
        refine = cast(faiss.IndexRefine, index)
        base = faiss.downcast_index(refine.base_index)
        exact = faiss.downcast_index(refine.refine_index)
        if not (isinstance(base, faiss.IndexPQFastScan)
                and isinstance(exact, faiss.IndexScalarQuantizer)):
            raise MapFormatError(
                f"{name} re-scores a faiss {type(base).__name__} with "
                f"{type(exact).__name__}, but a 'pqfs' index is a 4-bit PQ fast scan re-scored "
                f"with scalar codes"
            )
    configure_search(index, spec)
    return index


def configure_search(index: faiss.Index, spec: IndexSpec) -> None:
    if spec.kind in _IVF_KINDS:
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = spec.nprobe
        quantizer = faiss.downcast_index(ivf.quantizer)
        if isinstance(quantizer, faiss.IndexHNSW):  # must see at least nprobe centroids
            quantizer.hnsw.efSearch = max(spec.ef_search, 2 * spec.nprobe)
    elif spec.kind == "hnsw":
        # an IndexHNSW: build_index makes one, read_index checks the type
        cast(faiss.IndexHNSW, index).hnsw.efSearch = spec.ef_search
    elif spec.kind == "pqfs":
        cast(faiss.IndexRefine, index).k_factor = float(spec.k_factor)


SHARD_MIN_PLACES = 250_000  # places per shard; smaller shards lose more to threads than they gain


def threaded_shards(index: faiss.Index, spec: IndexSpec,
                    threads: int | None = None) -> faiss.Index:
    """Split a loaded ``pqfs`` index into shards that one query searches in parallel.

    One shard per thread (``threads``: faiss's OpenMP threads) with at least
    ``SHARD_MIN_PLACES`` places each; other kinds and smaller maps come back unchanged. The
    shards hold the same 4-bit and 8-bit codes, cut at the fast-scan code blocks, and each
    re-scores ``k_factor / shards`` times k of its own best, so the places re-scored in all and
    the recall stay those the index was tuned for. Ids are the map's (successive shards).
    The codes are copied, so the caller drops ``index`` to keep one copy in memory.
    """
    threads = faiss.omp_get_max_threads() if threads is None else threads
    count = min(threads, index.ntotal // SHARD_MIN_PLACES)
    if spec.kind != "pqfs" or count < 2:
        return index
    refine = cast(faiss.IndexRefine, index)
    base = cast(faiss.IndexPQFastScan, faiss.downcast_index(refine.base_index))
    exact = cast(faiss.IndexScalarQuantizer, faiss.downcast_index(refine.refine_index))
    # views of the codes, no copy: a block of base.bbs places takes bbs * M2 / 2 bytes
    packed = faiss.rev_swig_ptr(base.codes.get(), base.codes.size())
    rescore = faiss.rev_swig_ptr(exact.codes.data(), exact.codes.size())
    block, per_place, code_size = base.bbs, base.M2 // 2, exact.code_size
    empty_base = cast(faiss.IndexPQFastScan, faiss.clone_index(base))
    empty_exact = cast(faiss.IndexScalarQuantizer, faiss.clone_index(exact))
    empty_base.reset()
    empty_exact.reset()
    total = index.ntotal
    cuts = [min(total, round(total * i / count / block) * block) for i in range(count)] + [total]
    shards = faiss.IndexShards(index.d, True)  # threaded
    shards.successive_ids = True  # a shard's ids continue where the previous one's end
    for start, stop in zip(cuts[:-1], cuts[1:], strict=True):
        padded = -(-(stop - start) // block) * block
        part_base = cast(faiss.IndexPQFastScan, faiss.clone_index(empty_base))
        faiss.copy_array_to_AlignedTable(
            np.ascontiguousarray(packed[start * per_place:(start + padded) * per_place]),
            part_base.codes)
        part_base.ntotal = stop - start
        part_base.ntotal2 = padded  # type: ignore[attr-defined]  # missing from faiss's stubs
        part_exact = cast(faiss.IndexScalarQuantizer, faiss.clone_index(empty_exact))
        faiss.copy_array_to_vector(
            np.ascontiguousarray(rescore[start * code_size:stop * code_size]), part_exact.codes)
        part_exact.ntotal = stop - start
        part = faiss.IndexRefine(part_base, part_exact)  # keeps both alive (faiss's wrapper)
        part.k_factor = max(1.0, refine.k_factor / count)
        shards.add_shard(part)
    log.info("pqfs index of %d places split into %d shards searched in parallel", total, count)
    return shards


def maybe_to_gpu(index: faiss.Index, spec: IndexSpec) -> faiss.Index:
    """Return a GPU copy of a flat/IVF index when faiss has GPUs and ``use_gpu`` is set."""
    if (not spec.use_gpu or spec.kind in ("hnsw", "pqfs") or spec.coarse == "hnsw"
            or not hasattr(faiss, "StandardGpuResources")):
        return index
    if faiss.get_num_gpus() <= 0:
        return index
    resources = faiss.StandardGpuResources()
    gpu = faiss.index_cpu_to_gpu(resources, 0, index)
    # keep the resources alive with the index (a Python attribute on the SWIG object)
    gpu.referenced_resources = resources  # type: ignore[attr-defined]
    if spec.kind in _IVF_KINDS:
        faiss.GpuParameterSpace().set_index_parameter(gpu, "nprobe", spec.nprobe)
    log.info("faiss index moved to GPU 0")
    return gpu


def check_index(index: faiss.Index, path: Path, count: int, dim: int) -> None:
    if index.ntotal != count or index.d != dim:
        raise MapFormatError(
            f"{path} indexes {index.ntotal} vectors of dim {index.d}, "
            f"manifest expects {count} of dim {dim}"
        )
