"""Ray-cast rendering of a :class:`~selavpr_ros.synthetic.world.World` with a pinhole camera.

Every pixel's ray is intersected with the two facade planes and the road plane in closed form
(vectorised over the image), then shaded from the procedural descriptions: wall colour, texture,
windows (lit at night), doors, road markings, sky gradient, distance haze. Lighting presets give
the "time of day" of a traversal; sensor noise comes from a caller's generator, so a frame is a
deterministic function of (world, pose, camera, lighting, noise seed).

Camera convention: the pose is that of the camera body (REP 103: x forward, y left, z up) in
the world frame; the optical axis is the body's x axis, image u grows to the right (-y) and v
downwards (-z).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from selavpr_ros.errors import ConfigError
from selavpr_ros.synthetic.world import TEXTURE_RES, Facades, World


@dataclass(frozen=True)
class Camera:
    """Pinhole camera: image size, horizontal field of view, supersampling (anti-aliasing)."""

    width: int = 320
    height: int = 240
    hfov_deg: float = 90.0
    supersample: int = 1

    def __post_init__(self) -> None:
        if self.width < 16 or self.height < 16:
            raise ConfigError(f"image must be at least 16x16, got {self.width}x{self.height}")
        if not 10.0 <= self.hfov_deg <= 170.0:
            raise ConfigError(f"hfov_deg must be in [10, 170], got {self.hfov_deg}")
        if self.supersample not in (1, 2, 3, 4):
            raise ConfigError(f"supersample must be 1..4, got {self.supersample}")

    @property
    def focal_px(self) -> float:
        return self.width / 2.0 / np.tan(np.radians(self.hfov_deg) / 2.0)


@dataclass(frozen=True)
class Lighting:
    """The look of a time of day.

    Attributes:
        gain: overall exposure of lit surfaces.
        tint: RGB multiplier (colour temperature).
        ambient: light on surfaces in shadow.
        sun_left, sun_right: extra direct light on the left / right facades.
        sky_top, sky_horizon: RGB sky colours (0..1).
        haze: RGB colour distant surfaces fade to; haze_m: distance where half is haze.
        lit_windows: fraction of windows lit (emissive, warm); 0 by day.
        noise_sigma: Gaussian sensor noise in grey levels (0..255).
    """

    gain: float = 1.0
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    ambient: float = 0.55
    sun_left: float = 0.45
    sun_right: float = 0.1
    sky_top: tuple[float, float, float] = (0.35, 0.55, 0.9)
    sky_horizon: tuple[float, float, float] = (0.75, 0.85, 0.95)
    haze: tuple[float, float, float] = (0.75, 0.8, 0.85)
    haze_m: float = 150.0
    lit_windows: float = 0.0
    noise_sigma: float = 2.0


LIGHTING: dict[str, Lighting] = {
    "day": Lighting(),
    "afternoon": Lighting(gain=0.9, tint=(1.08, 0.97, 0.85), ambient=0.5, sun_left=0.08,
                          sun_right=0.45, sky_top=(0.3, 0.5, 0.85),
                          sky_horizon=(0.9, 0.85, 0.75), haze=(0.85, 0.78, 0.68), haze_m=130.0,
                          noise_sigma=3.0),
    "overcast": Lighting(gain=0.85, tint=(0.95, 0.97, 1.0), ambient=0.8, sun_left=0.05,
                         sun_right=0.05, sky_top=(0.7, 0.72, 0.75),
                         sky_horizon=(0.85, 0.86, 0.88), haze=(0.8, 0.8, 0.82), haze_m=90.0,
                         noise_sigma=3.0),
    "dusk": Lighting(gain=0.7, tint=(1.15, 0.85, 0.65), ambient=0.45, sun_left=0.05,
                     sun_right=0.35, sky_top=(0.3, 0.25, 0.45), sky_horizon=(0.95, 0.55, 0.3),
                     haze=(0.7, 0.45, 0.35), haze_m=120.0, lit_windows=0.3, noise_sigma=4.0),
    "night": Lighting(gain=0.28, tint=(0.85, 0.9, 1.2), ambient=0.5, sun_left=0.0, sun_right=0.0,
                      sky_top=(0.01, 0.01, 0.04), sky_horizon=(0.06, 0.05, 0.1),
                      haze=(0.03, 0.03, 0.05), haze_m=60.0, lit_windows=0.45, noise_sigma=6.0),
}


def yaw_quaternion(yaw: float) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a rotation by ``yaw`` radians about z."""
    return (0.0, 0.0, float(np.sin(yaw / 2.0)), float(np.cos(yaw / 2.0)))


@functools.lru_cache(maxsize=8)
def _body_rays(camera: Camera) -> np.ndarray:
    """(3, H, W) unit ray directions in the camera body frame (x forward, y left, z up)."""
    s = camera.supersample
    w, h = camera.width * s, camera.height * s
    f = camera.focal_px * s
    u = np.arange(w, dtype=np.float32) + 0.5 - w / 2.0
    v = np.arange(h, dtype=np.float32) + 0.5 - h / 2.0
    uu, vv = np.meshgrid(u, v)
    body = np.stack([np.full_like(uu, f), -uu, -vv])
    body /= np.linalg.norm(body, axis=0, keepdims=True)
    body.setflags(write=False)
    return body


def _rays(camera: Camera, yaw: float, pitch: float) -> np.ndarray:
    """(3, H, W) unit ray directions in the world frame."""
    body = _body_rays(camera)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cy, sy = np.cos(yaw), np.sin(yaw)
    # pitch about y (positive looks down), then yaw about z
    x = cp * body[0] + sp * body[2]
    z = -sp * body[0] + cp * body[2]
    y = body[1]
    return np.stack([cy * x - sy * y, sy * x + cy * y, z]).astype(np.float32)


def _hash01(*ints: np.ndarray) -> np.ndarray:
    """Hash integer arrays to a deterministic pseudo-random number in [0, 1) per element."""
    h = np.asarray(np.uint64(1469598103934665603))  # an array, so numpy keeps it uint64
    for a in ints:
        h = (h ^ a.astype(np.uint64)) * np.uint64(1099511628211)
        h ^= h >> np.uint64(29)
    return (h % np.uint64(1 << 24)).astype(np.float32) / float(1 << 24)


def _building_at(row: Facades, x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the building at each facade point, and whether the point is on its wall."""
    b = np.clip(np.searchsorted(row.start, x, side="right") - 1, 0, len(row.start) - 1)
    return b, (z >= 0) & (z <= row.height[b])


def _plane_distances(
    world: World, position: tuple[float, float, float], d: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray lengths to the left facade plane, the right one and the road (inf: never)."""
    _, py, pz = (np.float32(v) for v in position)
    dy, dz = d[1].ravel(), d[2].ravel()
    inf = np.float32(np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_left = np.where(dy > 1e-6, (world.half_width - py) / dy, inf)
        t_right = np.where(dy < -1e-6, (-world.half_width - py) / dy, inf)
        t_road = np.where(dz < -1e-6, -pz / dz, inf)
    return t_left, t_right, t_road


def _facade_colour(
    row: Facades, x: np.ndarray, z: np.ndarray, lighting: Lighting
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Albedo (M, 3) and emission (M, 3) of the M points on a building, and which they are.

    Points above a roof or in a gap between buildings are not on a facade; the returned
    ``on`` (N,) bool selects the M points the colours belong to.
    """
    b, on = _building_at(row, x, z)
    b, x, z = b[on], x[on], z[on]
    height = row.height[b]
    floor_h, bay_w = row.floor_h[b], row.bay_w[b]
    u = x - row.start[b]  # metres from the building's start
    width = row.end[b] - row.start[b]
    tex_c = np.clip(((x - row.x0) * TEXTURE_RES).astype(np.int64), 0, row.texture.shape[1] - 1)
    tex_r = np.clip((z * TEXTURE_RES).astype(np.int64), 0, row.texture.shape[0] - 1)
    shade = 1.0 + 0.18 * row.texture[tex_r, tex_c]
    pattern = row.pattern[b]
    # bricks: 0.3 m courses of 0.6 m bricks, alternate courses offset, dark mortar
    bu = (u + 0.3 * (np.floor(z / 0.3) % 2)) % 0.6
    shade[(pattern == 1) & (((z % 0.3) < 0.05) | (bu < 0.06))] *= 0.7
    shade[(pattern == 2) & ((z % floor_h) < 0.45)] *= 0.6  # a band at every floor slab
    shade[(pattern == 3) & ((u % bay_w) < 0.12)] *= 0.75  # panel seams
    shade[z > height - 0.35] *= 0.55  # cornice
    albedo = row.colour[b] * shade[:, None]
    # windows on a grid of bays x floors; the ground floor has shop windows and a door
    floor = np.floor(z / floor_h)
    fz = (z % floor_h) / floor_h
    bay = np.floor(u / bay_w)
    du = np.abs((u % bay_w) / bay_w - 0.5)
    dz = np.abs(fz - 0.55)
    wfrac, hfrac = row.window_frac[b, 0] / 2, row.window_frac[b, 1] / 2
    upper = (u > 0.6) & (u < width - 0.6) & (z < height - 0.8) & (floor >= 1)
    window = upper & (du < wfrac) & (dz < hfrac)
    frame = upper & ~window & (du < wfrac + 0.06) & (dz < hfrac + 0.05)
    shop = (u > 0.6) & (u < width - 0.6) & (floor == 0) & (z > 0.5) & (z < 2.6) & (du < 0.42)
    glass = window | shop
    albedo[glass] = row.window_colour[b[glass]] * (0.8 + 0.4 * fz[glass])[:, None]
    albedo[frame] = 0.85
    albedo[(np.abs(u - row.door_x[b] * width) < 0.6) & (z < 2.3)] = (0.25, 0.15, 0.08)
    emission = np.zeros_like(albedo)
    if lighting.lit_windows > 0 and glass.any():
        lit = _hash01(row.lit_seed[b[glass]], bay[glass].astype(np.int64),
                      floor[glass].astype(np.int64))
        idx = np.nonzero(glass)[0][lit < lighting.lit_windows]
        warm = np.array([1.0, 0.78, 0.4], np.float32)
        emission[idx] = warm * (0.7 + 0.3 * lit[lit < lighting.lit_windows])[:, None]
    return albedo.astype(np.float32), emission, on


def _road_colour(world: World, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    tex = world.road_texture
    r = np.clip(((y + world.half_width) * TEXTURE_RES).astype(np.int64), 0, tex.shape[0] - 1)
    c = np.clip(((x + 40.0) * TEXTURE_RES).astype(np.int64), 0, tex.shape[1] - 1)
    noise = tex[r, c]
    grey = 0.32 + 0.08 * noise
    sidewalk = np.abs(y) > world.half_width - 2.5
    tiles = sidewalk & (((x % 1.0) < 0.05) | (((np.abs(y)) % 1.0) < 0.05))
    grey = np.where(sidewalk, 0.55 + 0.06 * noise, grey)
    grey = np.where(tiles, 0.42, grey)
    kerb = np.abs(np.abs(y) - (world.half_width - 2.5)) < 0.15
    grey = np.where(kerb, 0.7, grey)
    dash = (np.abs(y) < 0.08) & ((x % 6.0) < 3.0)
    grey = np.where(dash, 0.9, grey)
    colour = np.stack([grey, grey, grey * 1.03], axis=1)
    return colour.astype(np.float32)


def render(
    world: World,
    position: tuple[float, float, float],
    yaw: float,
    camera: Camera,
    lighting: Lighting,
    rng: np.random.Generator | None = None,
    pitch: float = 0.0,
) -> np.ndarray:
    """Render the (H, W, 3) uint8 RGB image seen from ``position`` looking along ``yaw`` (rad).

    Sensor noise (``lighting.noise_sigma``) is drawn from ``rng``; without one there is none.
    """
    px, py, pz = (np.float32(v) for v in position)
    if not (abs(py) < world.half_width and pz > 0):
        raise ConfigError(f"the camera must stand in the street above the road, got {position}")
    d = _rays(camera, yaw, pitch)
    shape = d.shape[1:]
    dx, dy, dz = (c.ravel() for c in d)
    n = dx.size
    inf = np.float32(np.inf)
    t_left, t_right, t_road = _plane_distances(world, position, d)
    out = np.zeros((n, 3), np.float32)
    dist = np.full(n, inf, np.float32)
    lit_side = np.zeros(n, np.float32)

    # road first, facades overwrite where they are hit before the road
    road = np.isfinite(t_road)
    rx, ry = px + t_road[road] * dx[road], py + t_road[road] * dy[road]
    inside = np.abs(ry) <= world.half_width
    idx = np.nonzero(road)[0][inside]
    out[idx] = _road_colour(world, rx[inside], ry[inside])
    dist[idx] = t_road[idx]
    lit_side[idx] = 0.5 * (lighting.sun_left + lighting.sun_right)
    emission = np.zeros((n, 3), np.float32)
    for row, t, sun in ((world.left, t_left, lighting.sun_left),
                        (world.right, t_right, lighting.sun_right)):
        cand = np.nonzero(np.isfinite(t) & (t < dist))[0]
        if cand.size == 0:
            continue
        hx, hz = px + t[cand] * dx[cand], pz + t[cand] * dz[cand]
        albedo, glow, on = _facade_colour(row, hx, hz, lighting)
        hit = cand[on]
        out[hit] = albedo
        emission[hit] = glow
        dist[hit] = t[hit]
        lit_side[hit] = sun

    surface = np.isfinite(dist)
    light = (lighting.ambient + lit_side)[:, None] * np.asarray(lighting.tint, np.float32)
    colour = out * light * lighting.gain + emission
    haze = np.asarray(lighting.haze, np.float32)
    fade = 1.0 - np.exp2(-np.where(surface, dist, 0.0) / lighting.haze_m)
    colour = colour * (1.0 - fade[:, None]) + haze * fade[:, None]
    # sky: horizon colour to top colour with elevation
    elevation = np.clip(dz, 0.0, 1.0)[:, None] ** 0.6
    sky = (np.asarray(lighting.sky_horizon, np.float32) * (1.0 - elevation)
           + np.asarray(lighting.sky_top, np.float32) * elevation)
    colour = np.where(surface[:, None], colour, sky)
    image: np.ndarray = colour.reshape(*shape, 3)
    if camera.supersample > 1:
        image = cv2.resize(image, (camera.width, camera.height), interpolation=cv2.INTER_AREA)
    image = image * 255.0
    if rng is not None and lighting.noise_sigma > 0:
        image = image + rng.normal(0.0, lighting.noise_sigma, image.shape).astype(np.float32)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)
