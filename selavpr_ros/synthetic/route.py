"""Two (or more) traversals of one procedural street, with exact poses.

The first traversal is the mapping drive; later ones revisit the street with a lateral offset
(another lane), frames at other positions along the street, a swaying heading, another time of
day and sensor noise — the conditions a place recognition system must survive. Everything is
derived from one seed: the world from ``seed``, each traversal's heading sway and noise from
``(seed, traversal index)``; the same seed gives byte-identical images.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from selavpr_ros.errors import ConfigError
from selavpr_ros.synthetic.render import LIGHTING, Camera, render, yaw_quaternion
from selavpr_ros.synthetic.world import World, WorldConfig, make_world

log = logging.getLogger(__name__)

START_NS = 1_700_000_000 * 1_000_000_000  # a fixed epoch start keeps files reproducible


@dataclass(frozen=True)
class Traversal:
    """How one drive along the street differs from the others.

    Attributes:
        lateral_m: camera y (0 = street centre, positive = left).
        lighting: a key of :data:`selavpr_ros.synthetic.render.LIGHTING`.
        phase_m: start offset along the street (frames fall between the other drive's).
        yaw_sway_deg: amplitude of a slow heading sway (a driver is never perfectly straight).
        start_offset_s: start time relative to the route's first traversal.
    """

    lateral_m: float = -2.0
    lighting: str = "day"
    phase_m: float = 0.0
    yaw_sway_deg: float = 3.0
    start_offset_s: float = 0.0

    def __post_init__(self) -> None:
        if self.lighting not in LIGHTING:
            raise ConfigError(f"lighting must be one of {sorted(LIGHTING)}, got {self.lighting!r}")


def _default_traversals() -> tuple[Traversal, ...]:
    return (
        Traversal(lateral_m=-2.0, lighting="day", phase_m=0.0, yaw_sway_deg=3.0),
        Traversal(lateral_m=1.0, lighting="afternoon", phase_m=0.5, yaw_sway_deg=4.0,
                  start_offset_s=3600.0 * 6),
    )


@dataclass(frozen=True)
class RouteConfig:
    """A synthetic route: the world, the camera, frame spacing and the traversals.

    Attributes:
        seed: decides the world and every traversal's randomness.
        frames: frames per traversal.
        spacing_m: distance between consecutive frames along the street.
        rate_hz: frame rate (timestamps are ``start + i / rate_hz``).
        camera_height_m: camera z above the road.
        world: street size and variety (its length grows to cover the frames when needed).
        camera: image size, field of view, supersampling.
        traversals: the drives; the first is usually mapped, the others are queries.
    """

    seed: int = 0
    frames: int = 100
    spacing_m: float = 1.5
    rate_hz: float = 10.0
    camera_height_m: float = 1.6
    world: WorldConfig = field(default_factory=WorldConfig)
    camera: Camera = field(default_factory=Camera)
    traversals: tuple[Traversal, ...] = field(default_factory=_default_traversals)

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ConfigError(f"frames must be >= 1, got {self.frames}")
        if self.spacing_m <= 0 or self.rate_hz <= 0:
            raise ConfigError("spacing_m and rate_hz must be > 0")
        if not 0.2 <= self.camera_height_m <= 20:
            raise ConfigError(f"camera_height_m must be in [0.2, 20], got {self.camera_height_m}")
        if not self.traversals:
            raise ConfigError("a route needs at least one traversal")
        half = self.world.street_width_m / 2.0
        for t in self.traversals:
            if abs(t.lateral_m) > half - 0.5:
                raise ConfigError(
                    f"lateral_m {t.lateral_m} puts the camera outside the {2 * half} m street"
                )

    @property
    def route_length_m(self) -> float:
        phase = max(t.phase_m for t in self.traversals)
        return (self.frames - 1) * self.spacing_m + phase


@dataclass(frozen=True, eq=False)
class SyntheticFrame:
    """One rendered frame with its exact pose (camera body in the world frame, REP 103)."""

    traversal: int
    index: int
    stamp_ns: int
    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float]  # (x, y, z, w)
    yaw: float
    image: np.ndarray  # (H, W, 3) uint8 RGB

    @property
    def name(self) -> str:
        return f"frame_{self.index:05d}.png"


def route_world(config: RouteConfig) -> World:
    """Make the route's world, long enough for every frame (deterministic from the seed)."""
    world_cfg = config.world
    needed = config.route_length_m + 80.0  # the camera sees ~100 m ahead
    if world_cfg.length_m < needed:
        from dataclasses import replace

        world_cfg = replace(world_cfg, length_m=needed)
    return make_world(config.seed, world_cfg)


def traversal_poses(
    config: RouteConfig, traversal: int
) -> list[tuple[int, tuple[float, float, float], float]]:
    """(stamp_ns, position, yaw) of every frame of one traversal, without rendering."""
    trav = config.traversals[traversal]
    rng = np.random.default_rng([config.seed, traversal, 1])
    sway_phase = rng.uniform(0, 2 * np.pi)
    sway_period_m = rng.uniform(25.0, 45.0)
    start_ns = START_NS + int(round(trav.start_offset_s * 1e9))
    poses = []
    for i in range(config.frames):
        x = 5.0 + trav.phase_m + i * config.spacing_m
        yaw = np.radians(trav.yaw_sway_deg) * np.sin(2 * np.pi * x / sway_period_m + sway_phase)
        stamp = start_ns + int(round(i * 1e9 / config.rate_hz))
        poses.append((stamp, (float(x), float(trav.lateral_m), config.camera_height_m),
                      float(yaw)))
    return poses


def render_traversal(
    config: RouteConfig, traversal: int, world: World | None = None
) -> Iterator[SyntheticFrame]:
    """Render one traversal frame by frame (a generator: frames are not all kept in memory)."""
    if not 0 <= traversal < len(config.traversals):
        raise ConfigError(f"traversal {traversal} does not exist "
                          f"(the route has {len(config.traversals)})")
    world = world or route_world(config)
    lighting = LIGHTING[config.traversals[traversal].lighting]
    noise = np.random.default_rng([config.seed, traversal, 2])
    for i, (stamp, position, yaw) in enumerate(traversal_poses(config, traversal)):
        image = render(world, position, yaw, config.camera, lighting, noise)
        yield SyntheticFrame(traversal, i, stamp, position, yaw_quaternion(yaw), yaw, image)


def render_route(config: RouteConfig) -> list[list[SyntheticFrame]]:
    """Every traversal, rendered (keeps all images in memory; fine for ~100s of frames)."""
    world = route_world(config)
    return [list(render_traversal(config, t, world)) for t in range(len(config.traversals))]
