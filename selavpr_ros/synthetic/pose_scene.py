"""Ground truth for the query camera's pose: a mapped drive with depth, a query drive beside it.

The map is the route's first traversal (features of the weights-free classical extractor, the
3-D point of every local feature from the rendered depth, stored as float16 as a map would);
queries are another traversal (by default 3 m to the side, in afternoon light). Each query is
retrieved (global top-k, MNN re-ranking as the localizer does), the re-ranking's MNN pairs with
the best places become observations, and the pose estimators are compared with the exact pose.
Used by the end-to-end test and ``bench/bench_pose.py``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from tqdm import tqdm

from selavpr_ros.extractors.base import ExtractorInfo, Features
from selavpr_ros.extractors.classical import ClassicalConfig, ClassicalExtractor
from selavpr_ros.geometry import (
    CameraModel,
    ImageFeatures,
    PoseConfig,
    PoseEstimate,
    estimate_query_pose,
    feature_points,
    keyframe_estimate,
    observe_place,
)
from selavpr_ros.geometry.refine import ClassicalRefiner
from selavpr_ros.io.poses import rotation_angle
from selavpr_ros.matching import MatchPairs, mnn_matches
from selavpr_ros.synthetic.depth import camera_info, render_traversal_depth
from selavpr_ros.synthetic.route import RouteConfig, SyntheticFrame, render_traversal, route_world

Mode = Literal["pnp", "two_view", "keyframe"]


def _default_extractor() -> ClassicalConfig:
    return ClassicalConfig(vocabulary_size=32, fit_descriptors_per_image=150,
                           kmeans_iterations=10)


@dataclass(frozen=True)
class PoseSceneConfig:
    """The route (traversal 0 is mapped, ``query_traversal`` queried) and the retrieval.

    Attributes:
        retrieve: global-descriptor candidates re-ranked by MNN count.
        places: best re-ranked places given to the estimators (two-view needs >= 2).
    """

    route: RouteConfig = field(default_factory=RouteConfig)
    extractor: ClassicalConfig = field(default_factory=_default_extractor)
    query_traversal: int = 1
    retrieve: int = 10
    places: int = 5
    pose: PoseConfig = field(default_factory=PoseConfig)


@dataclass(eq=False)
class PoseScene:
    config: PoseSceneConfig
    camera: CameraModel
    info: ExtractorInfo
    map_frames: list[SyntheticFrame]
    map_features: Features
    map_points: np.ndarray  # (P, L, 3) float16, NaN without depth
    query_frames: list[SyntheticFrame]  # with images (the refinement reads them)
    query_features: Features
    extractor: ClassicalConfig
    fitted: ClassicalExtractor | None = None  # the extractor itself (to build a real map)


@dataclass(frozen=True)
class FrameResult:
    index: int
    mode: Mode
    estimate: PoseEstimate
    translation_error_m: float
    rotation_error_deg: float
    retrieval_error_m: float  # distance of the best place from the query
    pairs_s: float  # observations from the used places' pairs (and the refinement)
    estimate_s: float  # the pose estimator alone, wall clock
    estimate_cpu_s: float  # ... and CPU time of this process (less inflated on a busy machine)


def _drop_images(frames: list[SyntheticFrame]) -> list[SyntheticFrame]:
    return [SyntheticFrame(f.traversal, f.index, f.stamp_ns, f.position, f.orientation, f.yaw,
                           np.zeros((0, 0, 3), np.uint8)) for f in frames]


def build_pose_scene(config: PoseSceneConfig, progress: bool = False) -> PoseScene:
    """Render both traversals and the map's depth, fit the extractor, extract features."""
    route = config.route
    world = route_world(route)
    camera = CameraModel.from_camera_info(camera_info(route.camera))
    mapped = list(tqdm(render_traversal(route, 0, world), total=route.frames,
                       desc="map drive", disable=not progress))
    queries = list(tqdm(render_traversal(route, config.query_traversal, world),
                        total=route.frames, desc="query drive", disable=not progress))
    extractor = ClassicalExtractor(config.extractor).fit([f.image for f in mapped])
    map_features = extractor.extract([f.image for f in mapped])
    query_features = extractor.extract([f.image for f in queries])
    assert map_features.keypoints is not None
    points = np.stack([
        feature_points(depth, "32FC1", kp, camera).astype(np.float16)
        for depth, kp in zip(render_traversal_depth(route, 0, world),
                             map_features.keypoints, strict=True)
    ])
    return PoseScene(config, camera, extractor.info, _drop_images(mapped), map_features,
                     points, queries, query_features, extractor.config, extractor)


@dataclass(frozen=True, eq=False)
class Retrieved:
    """The best places of one query, best first, with the re-ranking's MNN pairs of each."""

    places: np.ndarray  # (P,) map indices
    pairs: list[MatchPairs]


def retrieve(scene: PoseScene, index: int) -> Retrieved:
    """Return the best places for query ``index`` and their MNN pairs, as the localizer does."""
    cfg = scene.config
    q, m = scene.query_features, scene.map_features
    sims = m.global_desc @ q.global_desc[index]
    top = np.argsort(-sims, kind="stable")[:cfg.retrieve]
    rerank = scene.info.rerank
    matches = mnn_matches(
        q.local[index], m.local[top],
        query_mask=None if q.local_mask is None else q.local_mask[index],
        candidate_mask=None if m.local_mask is None else m.local_mask[top],
        match_filter=rerank.match_filter, ratio=rerank.ratio,
        min_similarity=rerank.min_similarity)
    best = np.argsort(-matches.counts, kind="stable")[:cfg.places]
    return Retrieved(top[best], [matches.pairs(int(i)) for i in best])


def evaluate_query(scene: PoseScene, index: int, mode: Mode,
                   retrieved: Retrieved | None = None, refine: bool = True) -> FrameResult:
    """Estimate query ``index``'s pose with ``mode`` and compare it with the truth.

    ``refine``: sub-grid query keypoints (:class:`ClassicalRefiner`), timed with the
    observations.
    """
    cfg = scene.config
    if retrieved is None:
        retrieved = retrieve(scene, index)
    places = retrieved.places
    hw = (scene.camera.height, scene.camera.width)
    truth = scene.query_frames[index]
    best = scene.map_frames[int(places[0])]
    query = ImageFeatures.from_features(scene.query_features, index, hw)
    start = time.perf_counter()
    refiner = None
    if refine and mode != "keyframe":
        refiner = ClassicalRefiner(scene.extractor, truth.image)
    if mode == "keyframe":
        observations = []
    else:
        observations = [
            observe_place(scene.info, query, ImageFeatures.from_features(
                scene.map_features, int(p), hw,
                scene.map_points[int(p)] if mode == "pnp" else None),
                pairs, int(p), scene.map_frames[int(p)].position,
                scene.map_frames[int(p)].orientation, scene.camera, refiner)
            for p, pairs in zip(places, retrieved.pairs, strict=True)]
    pairs_s = time.perf_counter() - start
    start = time.perf_counter()
    cpu_start = time.process_time()
    if mode == "keyframe":
        estimate = keyframe_estimate(int(places[0]), best.position, best.orientation, cfg.pose)
    else:
        estimate = estimate_query_pose(observations, scene.camera, cfg.pose)
    estimate_s = time.perf_counter() - start
    estimate_cpu_s = time.process_time() - cpu_start
    t_err = r_err = float("nan")
    if estimate.position is not None:
        t_err = float(np.linalg.norm(np.subtract(estimate.position, truth.position)))
    if estimate.orientation is not None:
        r_err = float(np.degrees(rotation_angle(estimate.orientation, truth.orientation)))
    retrieval = float(np.linalg.norm(np.subtract(best.position, truth.position)))
    return FrameResult(index, mode, estimate, t_err, r_err, retrieval, pairs_s, estimate_s,
                       estimate_cpu_s)
