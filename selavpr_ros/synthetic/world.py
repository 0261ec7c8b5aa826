"""A procedural street: two rows of textured building facades along a straight road.

The world is pure data (numpy arrays) generated from a seed, so two traversals rendered from it
see the same buildings, windows and textures, and a test can regenerate it exactly. Coordinates
(REP 103): x along the street, y to the left, z up, metres. The left facades stand on the plane
``y = +street_width / 2``, the right ones on ``y = -street_width / 2``; the road is ``z = 0``.
Each building has its own width, height, wall colour, wall texture, window grid and a door, so
every stretch of street looks different — what place recognition needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from selavpr_ros.errors import ConfigError

TEXTURE_RES = 8  # texels per metre of the world's noise textures


@dataclass(frozen=True)
class WorldConfig:
    """Size and variety of the street.

    Attributes:
        length_m: street length covered by buildings (from x = -20 m to length_m + 20 m).
        street_width_m: distance between the two facade rows.
        building_width_m: (min, max) width of one building along the street.
        building_height_m: (min, max) height.
        gap_probability: chance of a narrow gap (an alley, showing the sky) after a building.
    """

    length_m: float = 200.0
    street_width_m: float = 14.0
    building_width_m: tuple[float, float] = (7.0, 18.0)
    building_height_m: tuple[float, float] = (7.0, 24.0)
    gap_probability: float = 0.2

    def __post_init__(self) -> None:
        if self.length_m <= 0 or self.street_width_m <= 2:
            raise ConfigError("length_m must be > 0 and street_width_m > 2")
        for name in ("building_width_m", "building_height_m"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ConfigError(f"{name} must be (min, max) with 0 < min <= max")
        if not 0 <= self.gap_probability < 1:
            raise ConfigError("gap_probability must be in [0, 1)")


@dataclass(frozen=True, eq=False)
class Facades:
    """One row of buildings, as arrays indexed by building (sorted by ``start``).

    A gap is a building of height 0. ``texture`` is a (rows, cols) float32 noise map over the
    whole row in world metres (TEXTURE_RES texels per metre, rows = height upwards).
    """

    start: np.ndarray  # (B,) x where each building begins
    end: np.ndarray  # (B,)
    height: np.ndarray  # (B,)
    colour: np.ndarray  # (B, 3) float32 wall albedo, 0..1
    pattern: np.ndarray  # (B,) int: 0 plaster, 1 bricks, 2 horizontal bands, 3 panels
    floor_h: np.ndarray  # (B,) floor height (window rows)
    bay_w: np.ndarray  # (B,) window bay width (window columns)
    window_frac: np.ndarray  # (B, 2) window width and height as fractions of bay and floor
    window_colour: np.ndarray  # (B, 3)
    lit_seed: np.ndarray  # (B,) int, decides which windows are lit at night
    door_x: np.ndarray  # (B,) door position from the building start
    texture: np.ndarray
    x0: float  # x of texture column 0


@dataclass(frozen=True, eq=False)
class World:
    config: WorldConfig
    left: Facades
    right: Facades
    road_texture: np.ndarray  # (rows, cols) noise over (x, y) of the road
    seed: int

    @property
    def half_width(self) -> float:
        return self.config.street_width_m / 2.0


def _noise(
    rng: np.random.Generator, shape: tuple[int, int], scales: tuple[int, ...]
) -> np.ndarray:
    """Smooth value noise in [-1, 1]: random grids upsampled at a few scales and summed."""
    out = np.zeros(shape, np.float32)
    for i, scale in enumerate(scales):
        small = rng.standard_normal((max(2, shape[0] // scale), max(2, shape[1] // scale)))
        up = cv2.resize(small.astype(np.float32), (shape[1], shape[0]),
                        interpolation=cv2.INTER_CUBIC)
        out += up / (i + 1)
    out /= np.abs(out).max() + 1e-6
    return out


def _facades(rng: np.random.Generator, cfg: WorldConfig, max_height: float) -> Facades:
    x0, x1 = -20.0, cfg.length_m + 20.0
    starts, ends, heights = [], [], []
    x = x0
    while x < x1:
        width = rng.uniform(*cfg.building_width_m)
        starts.append(x)
        ends.append(x + width)
        heights.append(rng.uniform(*cfg.building_height_m))
        x += width
        if rng.random() < cfg.gap_probability:
            gap = rng.uniform(2.0, 5.0)
            starts.append(x)
            ends.append(x + gap)
            heights.append(0.0)
            x += gap
    n = len(starts)
    hue = rng.uniform(0, 180, n)
    sat = rng.uniform(40, 200, n)
    val = rng.uniform(110, 240, n)
    hsv = np.stack([hue, sat, val], axis=1).astype(np.uint8)[None]
    colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0].astype(np.float32) / 255.0
    window_colour = rng.uniform(0.05, 0.35, (n, 3)).astype(np.float32)
    window_colour[:, 2] += 0.1  # glass reflects a little sky
    cols = int((x1 - x0 + 40) * TEXTURE_RES)
    rows = int((max_height + 2) * TEXTURE_RES)
    return Facades(
        start=np.array(starts, np.float32),
        end=np.array(ends, np.float32),
        height=np.array(heights, np.float32),
        colour=colour,
        pattern=rng.integers(0, 4, n),
        floor_h=rng.uniform(2.8, 4.0, n).astype(np.float32),
        bay_w=rng.uniform(1.8, 3.5, n).astype(np.float32),
        window_frac=np.stack([rng.uniform(0.35, 0.75, n), rng.uniform(0.35, 0.65, n)],
                             axis=1).astype(np.float32),
        window_colour=window_colour,
        lit_seed=rng.integers(0, 2**31, n),
        door_x=rng.uniform(0.2, 0.8, n).astype(np.float32),
        texture=_noise(rng, (rows, cols), (2, 8, 32)),
        x0=x0 - 20.0,
    )


def make_world(seed: int, config: WorldConfig | None = None) -> World:
    """Generate the street of ``seed`` (deterministic: the same seed gives identical arrays)."""
    cfg = config or WorldConfig()
    rng = np.random.default_rng([int(seed), 0x57EE7])
    left = _facades(rng, cfg, cfg.building_height_m[1])
    right = _facades(rng, cfg, cfg.building_height_m[1])
    rows = int(cfg.street_width_m * TEXTURE_RES) + 2
    cols = int((cfg.length_m + 80.0) * TEXTURE_RES)
    road = _noise(rng, (rows, cols), (1, 4, 16))
    return World(cfg, left, right, road, int(seed))
