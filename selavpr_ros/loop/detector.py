"""The loop decision for SLAM: keyframe, retrieve outside the exclusion window, re-rank, decide.

Per frame with an odometry pose: not a keyframe (the map builder's rule) -> nothing. A keyframe
is first queried against the run's older keyframes (and a prior map), then inserted. Its best
match must pass the localizer's acceptance rules (:func:`selavpr_ros.localizer.decision.decide`)
and be temporally consistent with the matches of recent keyframes (see :class:`LoopConfig`).
Distance along the trajectory comes from :class:`selavpr_ros.loop.odometry.PathTracker`.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from selavpr_ros.extractors.base import Extractor, Features
from selavpr_ros.io.poses import Pose
from selavpr_ros.localizer.decision import decide
from selavpr_ros.loop.config import LoopConfig
from selavpr_ros.loop.database import Keyframe, PriorMap, RunDatabase
from selavpr_ros.loop.geometric import essential_inliers
from selavpr_ros.map import PlaceMap, check_extractor
from selavpr_ros.mapping.keyframes import KeyframeSelector
from selavpr_ros.matching import mnn_scores

if TYPE_CHECKING:  # the geometry package is imported only when a camera is given
    from selavpr_ros.geometry.camera import CameraModel
    from selavpr_ros.geometry.pose import PoseEstimate

log = logging.getLogger(__name__)

RUN = ""  # map id of matches within the current run
_PRIOR_ID_OFFSET = 10**12  # decision ids of prior-map places: never "near" a run keyframe


@dataclass(frozen=True)
class LoopResult:
    """One keyframe's answer; ``loop`` is True when it closes a loop."""

    keyframe: Keyframe
    loop: bool
    reason: str  # why not (empty for a loop)
    map_id: str = RUN  # RUN: the current run, else the prior map's id
    then_id: int = -1
    then_stamp_ns: int = 0
    then_position: tuple[float, float, float] | None = None
    then_orientation: tuple[float, float, float, float] | None = None
    global_similarity: float = 0.0
    mnn_score: float = 0.0
    score_fraction: float = 0.0
    margin: float = 0.0
    consistency: int = 0
    relative: PoseEstimate | None = None  # the current camera in the matched one's frame
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _Match:
    query_path: float
    source: str
    match_path: float
    scores: dict[int, float] = field(default_factory=dict)  # re-ranked candidates of source


class LoopDetector:
    """Detects loops within a run (and against an optional prior map) from posed frames.

    Raises:
        MapFormatError: the prior map was built by another extractor or other weights.
    """

    def __init__(self, extractor: Extractor, config: LoopConfig | None = None,
                 prior: PlaceMap | None = None) -> None:
        self.extractor = extractor
        self.config = config or LoopConfig()
        if prior is not None:
            check_extractor(prior.extractor_info, extractor.info, prior.path)
        self.prior = PriorMap(prior) if prior is not None else None
        self.db = RunDatabase(extractor.info)
        self.selector = KeyframeSelector(self.config.keyframes)
        self._history: deque[_Match | None] = deque(maxlen=max(0, self.config.consistency_n - 1))
        self.camera: CameraModel | None = None  # camera info: min_inliers, relative poses
        self.pose_config: Any = None  # geometry.PoseConfig of relative poses (None: default)
        self.two_view_relative = False  # relative poses without depth (see loop/relative.py)

    def set_config(self, config: LoopConfig) -> None:
        """Use new thresholds (keeps the database; resizes the consistency window)."""
        self.config = config
        self.selector.config = config.keyframes
        self._history = deque(self._history, maxlen=max(0, config.consistency_n - 1))

    def restart_consistency(self) -> None:
        """Forget recent matches (after an odometry jump: their geometry no longer holds)."""
        self._history.clear()

    def is_keyframe(self, pose: Pose) -> bool:
        return self.selector.is_keyframe(pose)

    def process(self, pose: Pose, image: np.ndarray | None = None,
                features: Features | None = None, frame_id: str = "",
                path_m: float | None = None,
                depth_m: np.ndarray | None = None) -> LoopResult | None:
        """Consider one frame at ``pose``; None when it is not a keyframe.

        ``path_m``: distance travelled at the frame (:class:`PathTracker`); by default the
        distance between keyframes is summed. ``depth_m``: the registered depth image
        (metres, NaN: none); with camera info its points are kept for relative poses (PnP).
        """
        if not self.selector.is_keyframe(pose):
            return None
        t0 = time.perf_counter()
        if features is None:
            if image is None:
                raise ValueError("process needs an image or its features")
            features = self.extractor.extract([image])
        t1 = time.perf_counter()
        last = self.db.keyframes[-1] if self.db.keyframes else None
        if path_m is None:  # no odometry track: distance between keyframes
            path_m = (last.path_m + math.dist(pose.position, last.position)) if last else 0.0
        if last is not None and path_m < last.path_m:
            path_m = last.path_m
        path = path_m
        image_hw: tuple[int, int] = (
            (int(image.shape[0]), int(image.shape[1])) if image is not None
            else (self.camera.height, self.camera.width) if self.camera is not None else (0, 0))
        result = self._query(features, pose, path, frame_id, image_hw, image)
        t2 = time.perf_counter()
        points = self._points(features, depth_m, image_hw)
        kf = self.db.add(features, pose.stamp_ns, pose.position, pose.orientation, path,
                         frame_id, points)
        self.selector.accept(pose)
        t3 = time.perf_counter()
        timings = {"extract": (t1 - t0) * 1e3, "query": (t2 - t1) * 1e3,
                   "insert": (t3 - t2) * 1e3}
        return LoopResult(**{**result.__dict__, "keyframe": kf, "timings_ms": timings})

    def _points(self, features: Features, depth_m: np.ndarray | None,
                image_hw: tuple[int, int]) -> np.ndarray | None:
        """3-D points of the keyframe's local features from depth (needs camera info)."""
        if depth_m is None or self.camera is None:
            return None
        from selavpr_ros.geometry import DepthImageError, feature_pixels, feature_points

        try:
            pixels = feature_pixels(self.extractor.info, image_hw, None,
                                    None if features.keypoints is None
                                    else features.keypoints[0])
            return feature_points(np.asarray(depth_m, np.float32), "32FC1", pixels,
                                  self.camera)
        except DepthImageError as err:
            log.warning("depth not used for this keyframe: %s", err)
            return None

    # ------------------------------------------------------------------ the decision
    def _query(self, features: Features, pose: Pose, path: float, frame_id: str,
               image_hw: tuple[int, int], image: np.ndarray | None) -> LoopResult:
        cfg = self.config
        placeholder = Keyframe(len(self.db), pose.stamp_ns, pose.position, pose.orientation,
                               path, frame_id)
        limit = self.db.eligible(pose.stamp_ns, path, cfg.min_age_s, cfg.min_path_m)
        ids, sims = self.db.search(features.global_desc[0], cfg.top_k, limit)
        cands = [(float(s), RUN, int(i)) for i, s in zip(ids, sims, strict=True)]
        if self.prior is not None:
            pids, psims = self.prior.search(features.global_desc[0], cfg.top_k)
            cands += [(float(s), self.prior.map_id, int(i))
                      for i, s in zip(pids, psims, strict=True)]
        if not cands:
            self._history.append(None)
            return LoopResult(placeholder, False, "no candidates outside the exclusion window")
        cands.sort(key=lambda c: (-c[0], c[1], c[2]))
        cands = cands[: cfg.rerank_k]
        scores = self._rerank(features, cands)
        order = sorted(range(len(cands)), key=lambda j: (-scores[j], -cands[j][0], cands[j][2]))
        cands = [cands[j] for j in order]
        scores = [scores[j] for j in order]
        mask = features.local_mask
        n_query = int(mask[0].sum()) if mask is not None else features.local.shape[1]
        decision = decide(
            ids=[i if src == RUN else _PRIOR_ID_OFFSET + i for _, src, i in cands],
            scores=scores,
            global_similarities=[s for s, _, _ in cands],
            positions=[self._position(src, i) for _, src, i in cands],
            query_feature_count=n_query,
            config=cfg.localizer_config(),
            reranked=True,
        )
        sim, src, best = cands[0]
        match = _Match(path, src, self._path(src, best),
                       {i: sc for (_, s, i), sc in zip(cands, scores, strict=True) if s == src})
        stats = dict(global_similarity=sim, mnn_score=float(scores[0]),
                     score_fraction=decision.score_fraction, margin=decision.margin)
        if not decision.accepted:
            self._history.append(None)
            return LoopResult(placeholder, False, decision.reject_reason, **stats)  # type: ignore[arg-type]
        group, sign = self._agreeing(match)
        consistent = 1 + len(group)
        # the place the consistent matches align this keyframe with (see _aligned)
        then = self._aligned(match, group, sign, limit) if group else best
        if cfg.min_inliers and self.camera is not None and src == RUN \
                and self.extractor.info.has_keypoints:
            local, mask = self.db.local(np.asarray([then], np.int64))
            inliers = essential_inliers(features, local[0], mask[0], self.db.keypoints(then),
                                        self.camera, self.extractor.info.rerank)
            if inliers < cfg.min_inliers:
                self._history.append(None)
                return LoopResult(placeholder, False, f"geometric check: {inliers} inliers < "
                                  f"{cfg.min_inliers}", **stats)  # type: ignore[arg-type]
        self._history.append(match)
        then_stamp, then_pos, then_quat = self._then(src, then)
        common = dict(map_id=src, then_id=then, then_stamp_ns=then_stamp,
                      then_position=then_pos, then_orientation=then_quat,
                      consistency=consistent, **stats)
        if consistent < cfg.consistency_k:
            return LoopResult(placeholder, False,
                              f"temporal consistency {consistent} < {cfg.consistency_k} of the "
                              f"last {cfg.consistency_n} keyframes", **common)  # type: ignore[arg-type]
        relative = None
        if self.camera is not None and src == RUN:
            from selavpr_ros.loop.relative import relative_pose

            relative = relative_pose(features, image_hw, self.camera, self.db, then,
                                     config=self.pose_config or self._pose_config(image_hw),
                                     refiner=lambda: self._refiner(image),
                                     two_view=self.two_view_relative)
        return LoopResult(placeholder, True, "", relative=relative, **common)  # type: ignore[arg-type]

    def _agreeing(self, match: _Match) -> tuple[list[_Match], int]:
        """Recent matches that align the two passes as ``match`` does, and the direction.

        Two matches of a loop driven in the same direction (sign +1) keep the offset
        ``match_path - query_path`` (both advance in step); driven the other way (sign -1)
        they keep ``match_path + query_path``. A match agrees when its offset is within
        ``consistency_slack_m`` of this one's; the direction with more agreeing matches wins.
        """
        slack = self.config.consistency_slack_m
        same = [h for h in self._history if h is not None and h.source == match.source]
        groups = {sign: [h for h in same
                         if abs((match.match_path - sign * match.query_path)
                                - (h.match_path - sign * h.query_path)) <= slack]
                  for sign in (1, -1)}
        sign = 1 if len(groups[1]) >= len(groups[-1]) else -1
        return groups[sign], sign

    def _aligned(self, match: _Match, group: list[_Match], sign: int, limit: int) -> int:
        """Return the place at the alignment that the agreeing matches' MNN scores support most.

        On a route that looks alike for several metres the best MNN score of a single keyframe
        jitters along it (Gardens Point: 3-6 frames either side), and for a few keyframes in a
        row it can jitter the same way, so the median of their best matches is off too. Each
        agreeing keyframe therefore scores every alignment within ``consistency_slack_m`` of
        that median by the MNN score of the place the alignment puts it on, as a fraction of its
        own best (0 when that place was not re-ranked): its second and third candidates count,
        not only its best. The loop names the place at the alignment with the highest sum (ties:
        nearest the median), a sequence score over candidates already matched (no extra MNN).
        """
        members = [*group, match]
        offsets = [h.match_path - sign * h.query_path for h in members]
        median = float(np.median(offsets))
        if match.source == RUN:
            paths = self.db.paths[:limit]
        else:
            assert self.prior is not None
            paths = self.prior.paths

        def nearest(target: float) -> int:
            i = int(np.searchsorted(paths, target))
            near = [j for j in (i - 1, i) if 0 <= j < len(paths)]
            return min(near, key=lambda j: (abs(paths[j] - target), j))

        slack = self.config.consistency_slack_m
        tried = sorted({float(paths[i]) - sign * h.query_path for h in members for i in h.scores
                        if i < len(paths)})
        best = (-1.0, -math.inf, -median)  # this keyframe's best match is always within slack
        for offset in tried:
            if abs(offset - median) > slack:
                continue
            support = 0.0
            for h in members:
                top = max(h.scores.values(), default=0.0)
                if top > 0:
                    support += h.scores.get(nearest(offset + sign * h.query_path), 0.0) / top
            best = max(best, (support, -abs(offset - median), -offset))
        return nearest(-best[2] + sign * match.query_path)

    def _pose_config(self, image_hw: tuple[int, int]) -> Any:
        """Pose thresholds with the pixel noise of grid features as the covariance floor.

        A match joins two grid points, each up to half a step from the true correspondence:
        uniform errors of one step width, sigma = step / sqrt(12) per image, sqrt(2) times that
        for the pair. Without this floor PnP's covariance claims a certainty the grid does not
        have (bench/PERFORMANCE.md, issue 16).
        """
        from selavpr_ros.extractors.classical import ClassicalExtractor
        from selavpr_ros.geometry import PoseConfig, feature_pixels

        info = self.extractor.info
        if isinstance(self.extractor, ClassicalExtractor) and \
                self.extractor.config.image_size is not None:
            step = self.extractor.config.step * image_hw[1] / self.extractor.config.image_size[0]
        elif info.local_grid is not None:
            px = feature_pixels(info, image_hw, np.arange(2))
            step = float(np.linalg.norm(px[1] - px[0]))
        else:
            return PoseConfig()
        return PoseConfig(min_pixel_sigma=max(0.5, step * math.sqrt(2.0 / 12.0)))

    def _refiner(self, image: np.ndarray | None) -> Any:
        """Sub-grid query pixels for the classical extractor's grid (None: grid pixels)."""
        from selavpr_ros.extractors.classical import ClassicalExtractor

        if image is None or not isinstance(self.extractor, ClassicalExtractor):
            return None
        from selavpr_ros.geometry.refine import ClassicalRefiner

        return ClassicalRefiner(self.extractor.config, image)

    def _rerank(self, features: Features, cands: list[tuple[float, str, int]]) -> list[float]:
        rerank = self.extractor.info.rerank
        out = [0.0] * len(cands)
        for src in {c[1] for c in cands}:
            idx = [j for j, c in enumerate(cands) if c[1] == src]
            ids = np.asarray([cands[j][2] for j in idx], np.int64)
            local, mask = (self.db if src == RUN else self.prior).local(ids)  # type: ignore[union-attr]
            counts = mnn_scores(
                features.local[0], local,
                query_mask=None if features.local_mask is None else features.local_mask[0],
                candidate_mask=mask, match_filter=rerank.match_filter, ratio=rerank.ratio,
                min_similarity=rerank.min_similarity, device="cpu")
            for j, c in zip(idx, counts, strict=True):
                out[j] = float(c)
        return out

    def _position(self, src: str, i: int) -> tuple[float, float, float] | None:
        return self.db.keyframes[i].position if src == RUN else None

    def _path(self, src: str, i: int) -> float:
        if src == RUN:
            return self.db.keyframes[i].path_m
        assert self.prior is not None
        return float(self.prior.paths[i])

    def _then(self, src: str, i: int) -> tuple[int, tuple[float, float, float] | None,
                                               tuple[float, float, float, float] | None]:
        if src == RUN:
            kf = self.db.keyframes[i]
            return kf.stamp_ns, kf.position, kf.orientation
        assert self.prior is not None
        place = self.prior.map.place(i)
        return place.stamp_ns, place.position, place.orientation
