"""The ROS-free query pipeline: extract, global search, MNN re-rank, decide.

Final order: re-ranked candidates by MNN count (descending), ties by global similarity
(descending), then by place id (ascending), so the order is deterministic (the reference's
numpy quicksort leaves ties in an arbitrary order); candidates beyond ``rerank_k`` follow in
their global order with a NaN re-rank score.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch

from selavpr_ros.extractors.base import Extractor, Features
from selavpr_ros.geometry import CameraModel, PoseConfig, PoseEstimate
from selavpr_ros.localizer.cache import LocalFeatureCache
from selavpr_ros.localizer.config import LocalizerConfig
from selavpr_ros.localizer.decision import decide
from selavpr_ros.localizer.pose import QueryPose
from selavpr_ros.map import PlaceMap, PlaceTable, check_extractor
from selavpr_ros.matching import MatchPairs, MnnMatches, mnn_matches, mnn_scores
from selavpr_ros.matching.mnn import auto_memory_budget, cpu_has_bf16

log = logging.getLogger(__name__)

STAGES = ("extract", "search", "fetch", "rerank", "decide", "pose")
Tensorish = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class Candidate:
    """One ranked map place (maps onto ``selavpr_msgs/PlaceCandidate``)."""

    place_id: int
    place_stamp_ns: int
    position: tuple[float, float, float] | None
    orientation: tuple[float, float, float, float] | None
    global_similarity: float
    rerank_score: float  # MNN count; NaN when not re-ranked
    global_rank: int  # 0-based rank after the global search

    @property
    def has_pose(self) -> bool:
        return self.position is not None and self.orientation is not None


@dataclass(frozen=True)
class LocalizationResult:
    """The answer for one query (maps onto ``selavpr_msgs/PlaceRecognition``).

    ``timings_ms`` holds the stages in order (extract, search, fetch = reading candidates'
    local features from the map, rerank, decide, pose); ``total_ms`` covers all of them.
    ``score_fraction`` and ``margin`` are the raw statistics behind the decision. ``pose`` is
    the query camera's pose for an accepted frame (None when rejected).
    """

    map_id: str
    map_frame: str
    candidates: tuple[Candidate, ...]
    accepted: bool
    confidence: float
    reject_reason: str
    matched: Candidate | None
    timings_ms: dict[str, float] = field(default_factory=dict)
    total_ms: float = 0.0
    query_feature_count: int = 0
    score_fraction: float = 0.0
    margin: float = 0.0
    pose: PoseEstimate | None = None

    @property
    def stages(self) -> list[tuple[str, float]]:
        return list(self.timings_ms.items())


class Localizer:
    """Answers "which mapped place is this?" for images or precomputed features.

    Candidates' local features come from ``feature_cache`` when there is one (by default, on
    CUDA, a :class:`LocalFeatureCache` of the whole map when it fits ``config.gpu_cache_mb``),
    else from the map into a reused buffer.

    Raises:
        MapFormatError: the map was built by another extractor or with other weights.
    """

    def __init__(
        self,
        place_map: PlaceMap,
        extractor: Extractor,
        config: LocalizerConfig | None = None,
        feature_cache: LocalFeatureCache | Literal[False] | None = None,
        pose_config: PoseConfig | None = None,
    ) -> None:
        """Check that the extractor fits the map and load its index.

        ``feature_cache``: a cache to use, None = automatic (CUDA, fits the budget), False =
        none. The query camera comes from ``config.camera_info_file`` (when set) or per query.
        """
        check_extractor(place_map.extractor_info, extractor.info, place_map.path)
        self.place_map = place_map
        self.extractor = extractor
        self.config = cfg = config or LocalizerConfig()
        self._rerank = place_map.extractor_info.rerank
        cfg.check_rerank_depth(self.rerank_k)
        place_map.load_index()  # load now rather than in the first query
        place_map.place_table()  # the same for the candidates' stamps and poses
        device = torch.device(cfg.device)
        if feature_cache is None:
            if device.type == "cuda" and cfg.gpu_cache_mb > 0 and self.rerank_k > 0:
                feature_cache = LocalFeatureCache.build(
                    place_map, device, int(cfg.gpu_cache_mb * 2**20))
        self.feature_cache: LocalFeatureCache | None = feature_cache or None
        self._memory_budget = int(cfg.rerank_memory_mb * 2**20)
        if device.type == "cuda":
            self._memory_budget = max(self._memory_budget, auto_memory_budget(device))
        if device.type == "cpu" and self.rerank_k > 0:
            from selavpr_ros.matching.block_reduce import compile_kernels

            compile_kernels()  # at start-up rather than in the first query
        self._fetch_buffer: np.ndarray | None = None  # (rerank_k, L, C), reused per query
        self._fetch_lock = threading.Lock()
        self.pose = QueryPose(place_map, extractor, pose_config)
        self.camera: CameraModel | None = None
        if cfg.camera_info_file:
            self.camera = CameraModel.from_yaml(cfg.camera_info_file)

    @property
    def rerank_k(self) -> int:
        """Candidates re-ranked per query: the config's ``rerank_k``, else the map's default."""
        return self.config.rerank_depth(self._rerank.rerank_k)

    @property
    def effective_config(self) -> LocalizerConfig:
        """The config with ``rerank_k`` resolved against the map (what reports record)."""
        return replace(self.config, rerank_k=self.rerank_k)

    def describe_rerank(self) -> str:
        """One log line: how many candidates are re-ranked, how, and where that comes from."""
        source = ("rerank_k" if self.config.rerank_k is not None
                  else "the map's default" if self._rerank.rerank_k is not None
                  else "all: the map records no default")
        products = ""
        if self.config.precision != "fp32":
            products = f", {self.config.precision} products"
            if self.config.precision == "bf16" and self.config.device == "cpu" \
                    and not cpu_has_bf16():
                products += " (this CPU has no bf16 instructions: emulated, slower than fp32)"
        return (f"re-ranking the top {self.rerank_k} of {self.config.top_k} candidates "
                f"({source}), {self._rerank.describe_filter()}{products}")

    def query(self, image: np.ndarray | Features,
              camera: CameraModel | None = None) -> LocalizationResult:
        """Localise one (H, W, 3) uint8 RGB image (or a batch-of-one :class:`Features`).

        ``camera``: the query camera's model (else the configured one).
        """
        if isinstance(image, Features):
            return self.query_features(image, camera=camera)
        start = time.perf_counter()
        features = self.extractor.extract([image])
        return self.query_features(features, extract_ms=(time.perf_counter() - start) * 1e3,
                                   camera=camera, image=image)

    def query_features(self, features: Features, extract_ms: float = 0.0,
                       camera: CameraModel | None = None,
                       image: np.ndarray | None = None) -> LocalizationResult:
        """Localise from the features of one image (batch of one).

        ``image`` (optional) refines the query pixels of the pose estimate.
        """
        if len(features) != 1:
            raise ValueError(f"query_features takes one image's features, got {len(features)}")
        features.check_against(self.place_map.extractor_info)
        cfg = self.config
        timings = {"extract": extract_ms}
        t0 = time.perf_counter()
        found = self.place_map.search(features.global_desc, cfg.top_k)
        keep = found.ids[0] >= 0
        ids, sims = found.ids[0][keep], found.similarities[0][keep]
        t1 = time.perf_counter()
        timings["search"] = (t1 - t0) * 1e3

        cfg.check_rerank_depth(self.rerank_k)  # the node may swap in another config
        k = min(self.rerank_k, len(ids))
        # the query in the map's local format (PCA, grid stride) so that like meets like
        query_local, mask = self.place_map.codec.query(
            features.local[0], None if features.local_mask is None else features.local_mask[0])
        n_query = int(mask.sum()) if mask is not None else query_local.shape[0]
        scores = np.full(len(ids), np.nan)
        query_camera = camera or self.camera
        # the pose reuses the re-ranking's MNN pairs: keep them when a pose may need them
        keep_pairs = self.pose.wants_pairs(query_camera, cfg.pose_places)
        matches: MnnMatches | None = None
        if k > 0:
            # the reused buffer serves one query at a time; a concurrent one allocates its own
            own_buffer = self.feature_cache is None and self._fetch_lock.acquire(blocking=False)
            try:
                cand_local, cand_scale, cand_mask = self._fetch(ids[:k], own_buffer)
                t2 = time.perf_counter()
                timings["fetch"] = (t2 - t1) * 1e3
                options: dict[str, Any] = dict(
                    query_mask=mask,
                    candidate_mask=cand_mask,
                    candidate_scale=cand_scale,
                    match_filter=self._rerank.match_filter,
                    ratio=self._rerank.ratio,
                    min_similarity=self._rerank.min_similarity,
                    device=cfg.device,
                    precision=cfg.precision,
                    memory_budget=self._memory_budget,
                )
                if keep_pairs:
                    matches = mnn_matches(query_local, cand_local, **options)
                    scores[:k] = matches.counts
                else:
                    scores[:k] = mnn_scores(query_local, cand_local, **options)
            finally:
                if own_buffer:
                    self._fetch_lock.release()
            t1 = time.perf_counter()
            timings["rerank"] = (t1 - t2) * 1e3
        else:
            timings["fetch"] = timings["rerank"] = 0.0

        order = self._final_order(ids, sims, scores, k)
        table = self.place_map.place_table()
        chosen = ids[order]
        candidates = _candidates(table, chosen, sims[order], scores[order], order)
        # the decision looks at the re-ranked candidates (all of them without re-ranking)
        n = k if k else len(order)
        decision = decide(
            ids=chosen[:n],
            scores=scores[order[:n]] if k else sims[order],
            global_similarities=sims[order],
            positions=table.position[chosen[:n]],
            query_feature_count=n_query,
            config=cfg,
            reranked=k > 0,
        )
        t2 = time.perf_counter()
        timings["decide"] = (t2 - t1) * 1e3
        pose = None
        if decision.accepted:
            # final order over the re-ranked head: order[j] is also candidate j's matches row
            pairs: list[MatchPairs] = []
            if matches is not None:
                pairs = [matches.pairs(int(i)) for i in order[:min(k, cfg.pose_places)]]
            pose = self.pose.estimate(candidates, pairs, features, query_camera,
                                      cfg.pose_places, image, cfg.pose_refine)
        timings["pose"] = (time.perf_counter() - t2) * 1e3
        return LocalizationResult(
            map_id=self.place_map.map_id,
            map_frame=self.place_map.map_frame,
            candidates=candidates,
            accepted=decision.accepted,
            confidence=decision.confidence,
            reject_reason=decision.reject_reason,
            matched=candidates[0] if decision.accepted else None,
            timings_ms=timings,
            total_ms=float(sum(timings.values())),
            query_feature_count=n_query,
            score_fraction=decision.score_fraction,
            margin=decision.margin,
            pose=pose,
        )

    def _fetch(self, ids: np.ndarray, use_buffer: bool) -> tuple[Tensorish, Tensorish | None,
                                                                  Tensorish | None]:
        """Read candidates' stored local features, int8 scales and masks.

        From the device cache, else from the map (as stored, into a reused buffer).
        """
        if self.feature_cache is not None:
            return self.feature_cache.gather_codes(ids)
        out = None
        if use_buffer:
            m = self.place_map
            fmt, info = m.local_format, m.extractor_info
            shape = (self.rerank_k, fmt.stored_count(info), fmt.stored_dim(info))
            if self._fetch_buffer is None or self._fetch_buffer.shape[0] < len(ids):
                self._fetch_buffer = np.empty(shape, fmt.code_dtype)
            out = self._fetch_buffer[: len(ids)]
        return self.place_map.local_codes(ids, out=out)

    @staticmethod
    def _final_order(ids: np.ndarray, sims: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
        """Return indices into the global ranking, in final order (see the module docstring)."""
        head = np.lexsort((ids[:k], -sims[:k].astype(np.float64), -scores[:k]))
        return np.concatenate([head, np.arange(k, len(ids))]).astype(np.int64)


def _candidates(table: PlaceTable, ids: np.ndarray, sims: np.ndarray, scores: np.ndarray,
                ranks: np.ndarray) -> tuple[Candidate, ...]:
    """Build the result's candidates, their metadata from the map's in-memory place table.

    Each instance gets its field dict at once: ``Candidate.__init__`` (a frozen dataclass)
    sets the seven fields one ``object.__setattr__`` at a time, which took half of the decide
    stage at top_k = 100. Candidate has no ``__post_init__``; a test pins the equality.
    """
    new, set_attr = object.__new__, object.__setattr__
    out = []
    for place_id, stamp, position, orientation, sim, score, rank in zip(
            ids.tolist(), table.stamp_ns[ids].tolist(),
            _tuples(table.position[ids], table.has_position[ids]),
            _tuples(table.orientation[ids], table.has_orientation[ids]),
            sims.tolist(), scores.tolist(), ranks.tolist(), strict=True):
        candidate = new(Candidate)
        set_attr(candidate, "__dict__", {
            "place_id": place_id, "place_stamp_ns": stamp, "position": position,
            "orientation": orientation, "global_similarity": sim, "rerank_score": score,
            "global_rank": rank})
        out.append(candidate)
    return tuple(out)


def _tuples(values: np.ndarray, known: np.ndarray) -> list[Any]:
    """Rows as tuples of floats, None where unknown."""
    rows: list[Any] = list(map(tuple, values.tolist()))
    for i in np.flatnonzero(~known).tolist():
        rows[i] = None
    return rows
