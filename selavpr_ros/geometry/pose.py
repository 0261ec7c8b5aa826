"""The query camera's metric pose from the MNN correspondences with retrieved places.

Three sources, tried in this order by :func:`estimate_query_pose`:

- ``pnp``: the accepted place has depth, so its matched features have 3-D points; PnP + RANSAC
  (OpenCV, AP3P minimal hypotheses, cheaper than EPnP's) on query pixels <-> map points of
  the best ``pnp_places`` places, refined by Levenberg-Marquardt.
- ``two_view``: no depth, but two or more retrieved places with known poses. Two methods
  (``PoseConfig.two_view_method``): ``essential`` as the issue describes it: each place gives
  the relative rotation and the direction to the query from its essential matrix, the query
  centre is the least-squares intersection of the rays from the places' centres, and the
  rotation is the chordal mean of the per-place estimates; and ``triangulate`` (default):
  query features matched in two places are triangulated from the places' known poses and the
  query is placed by PnP on them. On repetitive facades an essential matrix of the query and
  one place often adopts a consistent set of wrong matches; the known place-to-place geometry
  rejects them (figures in bench/PERFORMANCE.md). Either way the scale comes from the places'
  known poses.
- ``keyframe``: the accepted place's stored pose (what the node published before), labelled so.

All poses are camera *body* poses in the map frame (see :mod:`selavpr_ros.geometry.transforms`);
an estimate that is refused says why in ``reason``.

Covariances (6x6, x y z then rotations about the map's x y z axes, as ROS's
``PoseWithCovariance``) come from the estimate itself, not a constant:

- PnP: first-order propagation. Around the solution the reprojection residuals are linear in
  the pose, so the pose covariance is ``s^2 (J^T J)^-1`` with J the Jacobian of the inliers'
  reprojections (``cv2.projectPoints``) and ``s^2`` the residual variance (sum of squares over
  2N - 6 degrees of freedom), floored at ``min_pixel_sigma`` because exact or few
  correspondences would claim a certainty the features' localisation does not have. It is then
  mapped from OpenCV's (rvec, tvec) to the camera centre and map-frame rotation numerically.
- Two-view by triangulation: the PnP covariance above; it treats the triangulated points as
  exact, so it is a lower bound (their error is not propagated).
- Two-view by essential matrices: the intersection is a linear least-squares problem
  ``sum_i P_i c = sum_i P_i c_i`` with ``P_i = I - d_i d_i^T``, so its covariance is
  ``s^2 (sum_i P_i)^-1``: large along the direction the rays do not constrain. ``s^2`` is the
  squared ray-to-centre distance per degree of freedom, floored by ``direction_sigma_deg``
  times the mean range (two rays always meet exactly in the plane, so the residual alone
  cannot reveal a wrong direction). Rotation: the spread of the per-place rotations about
  their mean, floored at ``rotation_sigma_deg``.
- Calibration: both models assume independent, correctly matched pixels; real matches are
  neither (cell-quantised keypoints, stored depth, near-outliers inside the RANSAC threshold),
  so the PnP and two-view covariances are scaled by ``pnp_covariance_scale`` and
  ``two_view_covariance_scale``, measured as the mean NEES over the estimates' dimension against
  the rendered truth of the synthetic street (``bench/bench_localizer_pose.py``, figures in
  ``bench/PERFORMANCE.md``).
- Keyframe: the configured spread of a query around its keyframe (``keyframe_sigma_m``, metres,
  and ``keyframe_sigma_deg``); rotations get :data:`UNKNOWN_VARIANCE` when the place has no
  orientation (no pose is given an orientation the map does not have).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

from selavpr_ros.errors import ConfigError
from selavpr_ros.geometry.camera import CameraModel
from selavpr_ros.geometry.transforms import (
    OPTICAL_IN_BODY,
    Quat,
    matrix_to_pose,
    mean_rotation,
    pose_matrix,
    project_to_rotation,
    rotation_vector,
)

PoseSource = Literal["pnp", "two_view", "keyframe", "none"]
EssentialMethod = Literal["ransac", "usac_accurate", "usac_magsac"]
_ESSENTIAL_METHODS = {"ransac": cv2.RANSAC, "usac_accurate": cv2.USAC_ACCURATE,
                      "usac_magsac": cv2.USAC_MAGSAC}
UNKNOWN_VARIANCE = 1e6  # variance of an unknown component (ROS convention: very large)


@dataclass(frozen=True)
class PoseConfig:
    """Thresholds of the pose estimators.

    Pixel thresholds are loose because dense features are localised to their grid: a match
    joins two grid points, each up to half a step (SelaVPR: ~5 px at 640 px width; the
    classical extractor: 4 px at its working size) from the true correspondence.

    Attributes:
        pnp_reprojection_px: RANSAC inlier threshold of PnP (raw-image pixels).
        pnp_iterations: RANSAC iterations of PnP.
        pnp_min_inliers: fewer PnP inliers refuse the estimate.
        pnp_places: PnP uses the 3-D points of this many best places (those with depth),
            the accepted one first.
        essential_threshold_px: RANSAC inlier threshold of the essential matrix.
        essential_method: OpenCV's robust estimator of the essential matrix (``usac_accurate``:
            USAC with local optimisation, more accurate and faster than plain RANSAC).
        two_view_min_inliers: a place pair with fewer inliers is not used.
        two_view_method: without depth, ``triangulate`` (tracks triangulated between the
            places, then PnP: :func:`estimate_triangulated`) or ``essential`` (per-place
            essential matrices, ray intersection: :func:`estimate_two_view`).
        min_triangulation_deg: smallest angle between the two places' rays of a track.
        min_parallax_deg: a place whose median ray parallax (the angle left between
            corresponding rays after the best pure rotation) is below this is too close to the
            query for a translation direction.
        min_ray_angle_deg: the rays from the places must span at least this angle.
        max_range_m: an intersection farther than this from the places is refused.
        ransac_confidence: RANSAC confidence of both estimators.
        min_pixel_sigma: floor of the reprojection noise in the PnP covariance.
        direction_sigma_deg: floor of a ray's direction error in the two-view covariance.
        rotation_sigma_deg: floor of the two-view rotation's standard deviation.
        keyframe_sigma_m, keyframe_sigma_deg: standard deviations given to keyframe poses.
        pnp_covariance_scale, two_view_covariance_scale: factors on the model covariances
            that make them honest (module docstring, "Calibration").
        optical_in_body: 3x3 rotation of the optical frame in the pose frame of places and
            query (REP 103 body frame by default; the identity if poses are optical).
    """

    pnp_reprojection_px: float = 6.0
    pnp_iterations: int = 300
    pnp_min_inliers: int = 12
    pnp_places: int = 3
    essential_threshold_px: float = 4.0
    essential_method: EssentialMethod = "usac_accurate"
    two_view_method: Literal["triangulate", "essential"] = "triangulate"
    min_triangulation_deg: float = 3.0
    two_view_min_inliers: int = 20
    min_parallax_deg: float = 1.0
    min_ray_angle_deg: float = 5.0
    max_range_m: float = 100.0
    ransac_confidence: float = 0.999
    min_pixel_sigma: float = 0.5
    direction_sigma_deg: float = 1.0
    rotation_sigma_deg: float = 0.3
    keyframe_sigma_m: float = 2.0
    keyframe_sigma_deg: float = 10.0
    pnp_covariance_scale: float = 5.2
    two_view_covariance_scale: float = 28.0
    optical_in_body: np.ndarray = field(default_factory=lambda: OPTICAL_IN_BODY.copy())

    def __post_init__(self) -> None:
        for name in ("pnp_reprojection_px", "essential_threshold_px", "max_range_m",
                     "min_pixel_sigma", "direction_sigma_deg", "rotation_sigma_deg",
                     "keyframe_sigma_m", "keyframe_sigma_deg", "pnp_covariance_scale",
                     "two_view_covariance_scale"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.pnp_min_inliers < 4 or self.two_view_min_inliers < 5:
            raise ConfigError("pnp_min_inliers must be >= 4 and two_view_min_inliers >= 5")
        if self.essential_method not in _ESSENTIAL_METHODS:
            raise ConfigError(f"essential_method must be one of {sorted(_ESSENTIAL_METHODS)}, "
                              f"got {self.essential_method!r}")
        if self.pnp_places < 1:
            raise ConfigError(f"pnp_places must be >= 1, got {self.pnp_places}")
        if self.pnp_iterations < 1 or not 0 < self.ransac_confidence < 1:
            raise ConfigError("pnp_iterations must be >= 1 and ransac_confidence in (0, 1)")
        rot = np.asarray(self.optical_in_body, np.float64)
        if rot.shape != (3, 3) or not np.allclose(rot @ rot.T, np.eye(3), atol=1e-6) \
                or np.linalg.det(rot) < 0:
            raise ConfigError("optical_in_body must be a 3x3 rotation matrix")
        object.__setattr__(self, "optical_in_body", rot)


@dataclass(frozen=True, eq=False)
class PoseEstimate:
    """A query camera pose (body frame, in the map frame) and how it was obtained.

    Attributes:
        source: ``pnp``, ``two_view``, ``keyframe`` or ``none`` (refused, no pose).
        position: (x, y, z) metres; None when source is ``none``.
        orientation: (x, y, z, w); None when unknown (a keyframe without orientation).
        covariance: 6x6 (x, y, z, rot x, rot y, rot z), see the module docstring.
        inliers: correspondences supporting the estimate (all places together).
        reprojection_error_px: RMS reprojection (PnP) or epipolar (two-view) error of the
            inliers in query pixels; NaN for keyframe poses.
        reason: why a better source was not used, or why no pose could be given.
        places: the places the estimate used.
    """

    source: PoseSource
    position: tuple[float, float, float] | None = None
    orientation: Quat | None = None
    covariance: np.ndarray | None = None
    inliers: int = 0
    reprojection_error_px: float = math.nan
    reason: str = ""
    places: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        """True for a metric estimate (PnP or two-view)."""
        return self.source in ("pnp", "two_view")

    def matrix(self) -> np.ndarray:
        """4x4 map <- camera body transform (needs a position and an orientation)."""
        if self.position is None or self.orientation is None:
            raise ValueError(f"a {self.source} estimate without orientation has no matrix")
        return pose_matrix(self.position, self.orientation)


def calibrated(estimate: PoseEstimate, config: PoseConfig) -> PoseEstimate:
    """Scale a PnP or two-view covariance by its calibration factor (module docstring)."""
    if estimate.covariance is None or estimate.source not in ("pnp", "two_view"):
        return estimate
    scale = config.pnp_covariance_scale if estimate.source == "pnp" \
        else config.two_view_covariance_scale
    return dataclasses.replace(estimate, covariance=estimate.covariance * scale)


def normalized_error_squared(estimate: PoseEstimate, truth: np.ndarray) -> float:
    """NEES of an estimate against the true 4x4 map <- body: e^T C^-1 e over what C covers.

    e is (position error, rotation vector of R_est R_true^T), the order and the map-frame
    rotation of the covariance; without an orientation only the position block is used. Its
    mean over many estimates is the covariance's dimension when the covariance is honest.
    """
    if estimate.position is None or estimate.covariance is None:
        raise ValueError(f"a {estimate.source} estimate without a covariance has no NEES")
    truth = np.asarray(truth, np.float64)
    error = np.asarray(estimate.position, np.float64) - truth[:3, 3]
    cov = np.asarray(estimate.covariance, np.float64)
    if estimate.orientation is not None:
        rotation = estimate.matrix()[:3, :3] @ truth[:3, :3].T
        error = np.concatenate([error, rotation_vector(rotation)])
    else:
        cov = cov[:3, :3]
    return float(error @ np.linalg.solve(cov, error))


def refused(reason: str, places: Sequence[int] = ()) -> PoseEstimate:
    return PoseEstimate("none", reason=reason, places=tuple(int(p) for p in places))


# ---------------------------------------------------------------------------- PnP
def points_in_map(points_optical: np.ndarray, place_pose: np.ndarray,
                  config: PoseConfig | None = None) -> np.ndarray:
    """(N, 3) points of a place's optical frame -> map frame, given map <- place body."""
    config = config or PoseConfig()
    pose = np.asarray(place_pose, np.float64)
    rot = pose[:3, :3] @ config.optical_in_body
    return np.asarray(points_optical, np.float64).reshape(-1, 3) @ rot.T + pose[:3, 3]


def _pose_covariance(params_to_pose: Callable[[np.ndarray], np.ndarray],
                     params: np.ndarray, cov_params: np.ndarray) -> np.ndarray:
    """Propagate a parameter covariance to (centre, map-frame rotation) numerically."""
    base = params_to_pose(params)
    jac = np.zeros((6, params.size))
    eps = 1e-6
    for i in range(params.size):
        step = np.zeros(params.size)
        step[i] = eps
        moved = params_to_pose(params + step)
        jac[:3, i] = (moved[:3, 3] - base[:3, 3]) / eps
        jac[3:, i] = rotation_vector(moved[:3, :3] @ base[:3, :3].T) / eps
    cov = jac @ cov_params @ jac.T
    return (cov + cov.T) / 2.0


def estimate_pnp(query_pixels: np.ndarray, points_map: np.ndarray, camera: CameraModel,
                 config: PoseConfig | None = None, places: Sequence[int] = ()) -> PoseEstimate:
    """Query camera pose from (N, 2) raw query pixels and their (N, 3) map points.

    Rows with non-finite points (no depth) are ignored.
    """
    config = config or PoseConfig()
    px = np.asarray(query_pixels, np.float64).reshape(-1, 2)
    pts = np.asarray(points_map, np.float64).reshape(-1, 3)
    if len(px) != len(pts):
        raise ValueError(f"{len(px)} pixels but {len(pts)} points")
    valid = np.all(np.isfinite(pts), axis=1) & np.all(np.isfinite(px), axis=1)
    n = int(valid.sum())
    needed = max(6, config.pnp_min_inliers)
    if n < needed:
        return refused(f"pnp: {n} correspondences with depth, need {needed}", places)
    obj = np.ascontiguousarray(pts[valid])
    img = np.ascontiguousarray(camera.ideal_pixels(px[valid]))
    k = camera.k
    try:
        found, rvec, tvec, inl = cv2.solvePnPRansac(
            obj, img, k, None, iterationsCount=config.pnp_iterations,
            reprojectionError=config.pnp_reprojection_px, confidence=config.ransac_confidence,
            flags=cv2.SOLVEPNP_AP3P)
    except cv2.error as err:
        return refused(f"pnp: OpenCV failed ({str(err).strip().splitlines()[-1]})", places)
    if not found or inl is None or len(inl) < config.pnp_min_inliers:
        count = 0 if inl is None else len(inl)
        return refused(f"pnp: {count} RANSAC inliers, need {config.pnp_min_inliers}", places)
    inl = inl.reshape(-1)
    rvec, tvec = cv2.solvePnPRefineLM(obj[inl], img[inl], k, None, rvec, tvec)
    proj, _ = cv2.projectPoints(obj, rvec, tvec, k, None)
    errors = np.linalg.norm(proj.reshape(-1, 2) - img, axis=1)
    depth = (obj @ cv2.Rodrigues(rvec)[0].T + tvec.reshape(1, 3))[:, 2]
    inliers = (errors < config.pnp_reprojection_px) & (depth > 0)
    count = int(inliers.sum())
    if count < config.pnp_min_inliers:
        return refused(f"pnp: {count} inliers after refinement, need "
                       f"{config.pnp_min_inliers}", places)
    rvec, tvec = cv2.solvePnPRefineLM(obj[inliers], img[inliers], k, None, rvec, tvec)
    proj, jac = cv2.projectPoints(obj[inliers], rvec, tvec, k, None)
    residual = (proj.reshape(-1, 2) - img[inliers]).reshape(-1)
    dof = max(1, residual.size - 6)
    sigma2 = max(float(residual @ residual) / dof, config.min_pixel_sigma ** 2)
    j = jac[:, :6]
    try:
        cov_params = sigma2 * np.linalg.inv(j.T @ j)
    except np.linalg.LinAlgError:
        return refused("pnp: degenerate geometry (singular Jacobian)", places)
    optical_in_body = config.optical_in_body

    def body_pose(params: np.ndarray) -> np.ndarray:
        rot = cv2.Rodrigues(params[:3])[0]  # camera <- map
        out = np.eye(4)
        out[:3, :3] = rot.T @ optical_in_body.T
        out[:3, 3] = -rot.T @ params[3:]
        return out

    params = np.concatenate([rvec.reshape(3), tvec.reshape(3)])
    pose = body_pose(params)
    position, orientation = matrix_to_pose(pose)
    return PoseEstimate(
        "pnp", position, orientation, _pose_covariance(body_pose, params, cov_params),
        inliers=count,
        reprojection_error_px=float(np.sqrt(np.mean(residual.reshape(-1, 2) ** 2) * 2)),
        places=tuple(int(p) for p in places),
    )


# ---------------------------------------------------------------------------- two-view
@dataclass(frozen=True, eq=False)
class PlaceView:
    """One retrieved place for the two-view estimate.

    Its pose, camera and the pixels of its MNN pairs with the query (same order in both arrays).
    """

    place_id: int
    pose: np.ndarray  # 4x4 map <- place camera body
    camera: CameraModel
    place_pixels: np.ndarray  # (N, 2) raw pixels of the place's image
    query_pixels: np.ndarray  # (N, 2) raw pixels of the query image


@dataclass(frozen=True, eq=False)
class _Relative:
    place_id: int
    centre: np.ndarray  # place camera centre in the map
    direction: np.ndarray  # unit direction to the query in the map
    rotation: np.ndarray  # query body rotation in the map from this place
    place_optical: np.ndarray  # map <- place optical rotation
    place_rays: np.ndarray  # (M, 2) normalised inlier coordinates (place)
    query_rays: np.ndarray  # (M, 2) normalised inlier coordinates (query)


def _homogeneous(x: np.ndarray) -> np.ndarray:
    return np.hstack([x, np.ones((len(x), 1))])


def _relative(view: PlaceView, query_camera: CameraModel,
              config: PoseConfig) -> _Relative | str:
    """Find the query's direction and rotation seen from one place, or say why not."""
    name = f"place {view.place_id}"
    if len(view.place_pixels) != len(view.query_pixels):
        raise ValueError(f"{name}: {len(view.place_pixels)} place pixels but "
                         f"{len(view.query_pixels)} query pixels")
    n = len(view.place_pixels)
    if n < config.two_view_min_inliers:
        return f"{name}: {n} matches, need {config.two_view_min_inliers}"
    xp = view.camera.normalized(view.place_pixels)
    xq = query_camera.normalized(view.query_pixels)
    focal = 0.5 * (view.camera.focal_px + query_camera.focal_px)
    try:
        e_all, mask = cv2.findEssentialMat(
            xp, xq, np.eye(3), method=_ESSENTIAL_METHODS[config.essential_method],
            prob=config.ransac_confidence,
            threshold=config.essential_threshold_px / focal)
    except cv2.error as err:
        return f"{name}: OpenCV failed ({str(err).strip().splitlines()[-1]})"
    if e_all is None or mask is None or e_all.shape[0] < 3:
        return f"{name}: no essential matrix"
    # parallax: what remains of the angles between corresponding rays after the best pure
    # rotation (Kabsch) is removed; checked before the pose, which is arbitrary without baseline
    ransac = mask.reshape(-1) > 0
    rp = _homogeneous(xp[ransac])
    rq = _homogeneous(xq[ransac])
    rp /= np.linalg.norm(rp, axis=1, keepdims=True)
    rq /= np.linalg.norm(rq, axis=1, keepdims=True)
    aligned = rp @ project_to_rotation(rq.T @ rp).T
    cos = np.sum(aligned * rq, axis=1)
    parallax = float(np.degrees(np.median(np.arccos(np.clip(cos, -1.0, 1.0))))) \
        if len(rq) else 0.0
    if parallax < config.min_parallax_deg:
        return f"{name}: baseline too small (median parallax {parallax:.2f} deg < " \
               f"{config.min_parallax_deg} deg)"
    best: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None
    for i in range(e_all.shape[0] // 3):
        good, rot, t, m = cv2.recoverPose(e_all[3 * i:3 * i + 3], xp, xq, np.eye(3),
                                          mask=mask.copy())
        if best is None or good > best[0]:
            best = (int(good), rot, t, m)
    assert best is not None
    good, rot, t, m = best
    if good < config.two_view_min_inliers:
        return f"{name}: {good} inliers in front of both cameras, need " \
               f"{config.two_view_min_inliers}"
    keep = m.reshape(-1) > 0
    xp, xq = xp[keep], xq[keep]
    pose = np.asarray(view.pose, np.float64)
    place_optical = pose[:3, :3] @ config.optical_in_body
    direction = place_optical @ (-rot.T @ t.reshape(3))
    query_optical = place_optical @ rot.T
    return _Relative(view.place_id, pose[:3, 3].copy(), direction / np.linalg.norm(direction),
                     query_optical @ config.optical_in_body.T, place_optical, xp, xq)


def _ray_intersection(rels: Sequence[_Relative]) -> tuple[np.ndarray, np.ndarray, float]:
    """Least-squares point nearest to all rays, sum of projectors, residual sum of squares."""
    a = np.zeros((3, 3))
    b = np.zeros(3)
    for r in rels:
        p = np.eye(3) - np.outer(r.direction, r.direction)
        a += p
        b += p @ r.centre
    centre = np.linalg.solve(a, b)
    rss = 0.0
    for r in rels:
        off = centre - r.centre
        perp = off - r.direction * (r.direction @ off)
        rss += float(perp @ perp)
    return centre, a, rss


def _epipolar_rms_px(rels: Sequence[_Relative], centre: np.ndarray,
                     query_optical: np.ndarray, focal: float) -> float:
    """RMS distance (query pixels) of inliers to the epipolar lines of the final pose."""
    sq, count = 0.0, 0
    for r in rels:
        rot = query_optical.T @ r.place_optical  # query <- place
        t = query_optical.T @ (r.centre - centre)
        norm = np.linalg.norm(t)
        if norm < 1e-12:
            continue
        tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]]) / norm
        lines = _homogeneous(r.place_rays) @ (tx @ rot).T
        dist = np.abs(np.sum(lines * _homogeneous(r.query_rays), axis=1))
        dist /= np.maximum(np.linalg.norm(lines[:, :2], axis=1), 1e-12)
        sq += float(np.sum((dist * focal) ** 2))
        count += len(dist)
    return math.sqrt(sq / count) if count else math.nan


def estimate_two_view(views: Sequence[PlaceView], query_camera: CameraModel,
                      config: PoseConfig | None = None) -> PoseEstimate:
    """Query camera pose from two or more places with known poses (no depth)."""
    config = config or PoseConfig()
    ids = [v.place_id for v in views]
    if len(views) < 2:
        return refused(f"two_view: needs two places, got {len(views)}", ids)
    rels: list[_Relative] = []
    reasons: list[str] = []
    for view in views:
        rel = _relative(view, query_camera, config)
        if isinstance(rel, str):
            reasons.append(rel)
        else:
            rels.append(rel)
    if len(rels) < 2:
        why = "; ".join(reasons)
        return refused(f"two_view: {len(rels)} usable places, need 2 ({why})", ids)
    dirs = np.array([r.direction for r in rels])
    sines = [np.linalg.norm(np.cross(dirs[i], dirs[j]))
             for i in range(len(dirs)) for j in range(i + 1, len(dirs))]
    angle = float(np.degrees(np.arcsin(min(1.0, float(max(sines))))))
    used = [r.place_id for r in rels]
    if angle < config.min_ray_angle_deg:
        return refused(f"two_view: rays are near-parallel (widest angle {angle:.2f} deg < "
                       f"{config.min_ray_angle_deg} deg)", used)
    centre, a, rss = _ray_intersection(rels)
    ranges = np.array([r.direction @ (centre - r.centre) for r in rels])
    if np.any(ranges <= 0):
        behind = [r.place_id for r, s in zip(rels, ranges, strict=True) if s <= 0]
        return refused(f"two_view: the rays meet behind place(s) {behind}", used)
    if ranges.max() > config.max_range_m:
        return refused(f"two_view: the rays meet {ranges.max():.1f} m from a place "
                       f"(limit {config.max_range_m} m)", used)
    rotations = [r.rotation for r in rels]
    rotation = mean_rotation(rotations)
    # covariance, see the module docstring
    dof = max(1, 2 * len(rels) - 3)
    floor = math.radians(config.direction_sigma_deg) * float(np.mean(ranges))
    s2 = max(rss / dof, floor ** 2)
    cov = np.zeros((6, 6))
    cov[:3, :3] = s2 * np.linalg.inv(a)
    spread = [rotation_vector(rotation.T @ r) for r in rotations]
    rot_var = float(np.sum(np.square(spread))) / (3 * max(1, len(rels) - 1))
    cov[3:, 3:] = np.eye(3) * max(rot_var, math.radians(config.rotation_sigma_deg) ** 2)
    pose = np.eye(4)
    pose[:3, :3] = rotation
    pose[:3, 3] = centre
    position, orientation = matrix_to_pose(pose)
    rms = _epipolar_rms_px(rels, centre, rotation @ config.optical_in_body,
                           query_camera.focal_px)
    return PoseEstimate(
        "two_view", position, orientation, cov,
        inliers=int(sum(len(r.query_rays) for r in rels)), reprojection_error_px=rms,
        reason="; ".join(reasons), places=tuple(used),
    )


# ---------------------------------------------------------------------------- keyframe
def keyframe_estimate(place_id: int, position: Sequence[float], orientation: Quat | None,
                      config: PoseConfig | None = None, reason: str = "") -> PoseEstimate:
    """Give the place's stored pose as the query's, with the configured spread."""
    config = config or PoseConfig()
    cov = np.zeros((6, 6))
    cov[:3, :3] = np.eye(3) * config.keyframe_sigma_m ** 2
    rot_var = math.radians(config.keyframe_sigma_deg) ** 2 if orientation is not None \
        else UNKNOWN_VARIANCE
    cov[3:, 3:] = np.eye(3) * rot_var
    x, y, z = (float(v) for v in position)
    return PoseEstimate("keyframe", (x, y, z), orientation, cov, reason=reason,
                        places=(int(place_id),))


# ---------------------------------------------------------------------------- all together
@dataclass(frozen=True, eq=False)
class PlaceObservation:
    """A retrieved place and its correspondences with the query (best place first).

    ``position``/``orientation`` are the stored pose of the place's camera body (orientation
    None when the map has none); ``place_points`` are its matched features' 3-D points in its
    optical frame (NaN rows without depth), or None for a map without depth.
    """

    place_id: int
    position: tuple[float, float, float]
    orientation: Quat | None
    camera: CameraModel
    query_pixels: np.ndarray
    place_pixels: np.ndarray
    place_points: np.ndarray | None = None
    query_indices: np.ndarray | None = None  # (N,) query feature of each pair (tracks)


def estimate_triangulated(observations: Sequence[PlaceObservation], query_camera: CameraModel,
                          config: PoseConfig | None = None) -> PoseEstimate:
    """Query pose without depth: points triangulated between places, then PnP (``two_view``).

    A query feature matched in two places forms a track; the places' poses are known, so the
    track is triangulated (``cv2.triangulatePoints``) and kept only if it reprojects within
    ``essential_threshold_px`` in both places, lies in front of both and is seen under at least
    ``min_triangulation_deg``: the known place-to-place geometry rejects wrong matches that an
    essential matrix of the query alone can adopt (repetitive facades). The query is then
    placed by :func:`estimate_pnp` on the triangulated points.
    """
    config = config or PoseConfig()
    usable = [o for o in observations
              if o.orientation is not None and o.query_indices is not None]
    ids = [o.place_id for o in observations]
    if len(usable) < 2:
        return refused(f"two_view: needs two places with poses, got {len(usable)}", ids)
    pixels, points = [], []
    for i in range(len(usable)):
        for j in range(i + 1, len(usable)):
            a, b = usable[i], usable[j]
            assert a.query_indices is not None and b.query_indices is not None
            assert a.orientation is not None and b.orientation is not None
            _, ia, ib = np.intersect1d(a.query_indices, b.query_indices, return_indices=True)
            if len(ia) == 0:
                continue
            xs, projections, centres = [], [], []
            for o, idx in ((a, ia), (b, ib)):
                assert o.orientation is not None
                world_from_optical = pose_matrix(o.position, o.orientation)
                world_from_optical[:3, :3] = world_from_optical[:3, :3] @ config.optical_in_body
                projections.append(np.linalg.inv(world_from_optical)[:3])
                xs.append(o.camera.normalized(o.place_pixels[idx]))
                centres.append(world_from_optical[:3, 3])
            hom = cv2.triangulatePoints(projections[0], projections[1], xs[0].T, xs[1].T)
            with np.errstate(divide="ignore", invalid="ignore"):
                world = (hom[:3] / hom[3]).T
            keep = np.all(np.isfinite(world), axis=1)
            for o, proj, x in zip((a, b), projections, xs, strict=True):
                cam = world @ proj[:, :3].T + proj[:, 3]
                with np.errstate(divide="ignore", invalid="ignore"):
                    err = np.linalg.norm(cam[:, :2] / cam[:, 2:] - x, axis=1) * o.camera.focal_px
                keep &= (cam[:, 2] > 0) & (err < config.essential_threshold_px)
            ra, rb = world - centres[0], world - centres[1]
            with np.errstate(divide="ignore", invalid="ignore"):
                cos = np.sum(ra * rb, axis=1) / (np.linalg.norm(ra, axis=1)
                                                 * np.linalg.norm(rb, axis=1))
            keep &= np.degrees(np.arccos(np.clip(np.nan_to_num(cos, nan=1.0), -1, 1))) \
                >= config.min_triangulation_deg
            pixels.append(a.query_pixels[ia][keep])
            points.append(world[keep])
    total = int(sum(len(p) for p in points))
    if total < config.pnp_min_inliers:
        return refused(f"two_view: {total} tracks triangulated between places, need "
                       f"{config.pnp_min_inliers}", ids)
    result = estimate_pnp(np.concatenate(pixels), np.concatenate(points), query_camera,
                          config, [o.place_id for o in usable])
    if not result.ok:
        return refused(result.reason.replace("pnp:", "two_view: triangulated", 1), ids)
    return dataclasses.replace(result, source="two_view")


def estimate_query_pose(observations: Sequence[PlaceObservation], query_camera: CameraModel,
                        config: PoseConfig | None = None) -> PoseEstimate:
    """PnP on the best place if it has depth, else two-view, else the best place's pose."""
    config = config or PoseConfig()
    if not observations:
        return refused("no accepted place")
    best = observations[0]
    reasons: list[str] = []
    if best.orientation is None:
        reasons.append(f"place {best.place_id} has no orientation")
    elif best.place_points is not None:
        pixels_list, points_list, used = [], [], []
        for o in observations[:config.pnp_places]:
            if o.place_points is not None and o.orientation is not None:
                pixels_list.append(o.query_pixels)
                points_list.append(points_in_map(
                    o.place_points, pose_matrix(o.position, o.orientation), config))
                used.append(o.place_id)
        pixels, points = np.concatenate(pixels_list), np.concatenate(points_list)
        result = estimate_pnp(pixels, points, query_camera, config, used)
        if result.ok:
            return calibrated(result, config)
        reasons.append(result.reason)
    views = [PlaceView(o.place_id, pose_matrix(o.position, o.orientation), o.camera,
                       o.place_pixels, o.query_pixels)
             for o in observations if o.orientation is not None]
    if best.orientation is not None and len(views) >= 2:
        if config.two_view_method == "triangulate":
            result = estimate_triangulated(observations, query_camera, config)
        else:
            result = estimate_two_view(views, query_camera, config)
        if result.ok:
            return calibrated(result, config)
        reasons.append(result.reason)
    elif best.orientation is not None:
        reasons.append("two_view: fewer than two places with poses")
    return keyframe_estimate(best.place_id, best.position, best.orientation, config,
                             "; ".join(reasons))
