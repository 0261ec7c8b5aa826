"""The extractor interface shared by the place map, the re-ranker and the localizer.

An extractor turns RGB images into one global descriptor per image (for retrieval) and a set of
local features per image (for re-ranking), optionally with keypoint coordinates. The map, the
matcher and the localizer only see :class:`Features` and :class:`ExtractorInfo`, so SelaVPR and a
classical extractor are interchangeable. A map records the :class:`ExtractorInfo` of the
extractor that built it and refuses queries from any other (name or weights fingerprint differ).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from selavpr_ros.errors import ConfigError

MatchFilter = Literal["none", "ratio", "min_similarity"]
_MATCH_FILTERS: tuple[str, ...] = ("none", "ratio", "min_similarity")


@dataclass(frozen=True)
class RerankSettings:
    """How mutual nearest neighbours are filtered before they are counted.

    SelaVPR's dense learned features use the plain MNN count (``"none"``), as in the paper.
    Sparse classical features need a filter: ``"ratio"`` keeps a mutual match only when the
    query feature's best candidate feature is clearly closer than its second best (Lowe's test on
    Euclidean distances of unit vectors, ``d1 < ratio * d2``); ``"min_similarity"`` keeps it only
    when the cosine similarity is at least ``min_similarity``.

    ``rerank_k`` is the extractor's default re-ranking depth: how many of the global search's
    candidates a localizer re-ranks when its own ``rerank_k`` is not set (None: all of them).
    Each extractor sets the depth its features need at an acceptable cost (chosen from
    measurements, bench/PERFORMANCE.md); maps written before the depth was recorded read as
    None, which re-ranks all candidates as those maps always did.
    """

    match_filter: MatchFilter = "none"
    ratio: float = 0.8
    min_similarity: float = 0.0
    rerank_k: int | None = None

    def __post_init__(self) -> None:
        if self.match_filter not in _MATCH_FILTERS:
            raise ConfigError(
                f"match_filter must be one of {_MATCH_FILTERS}, got {self.match_filter!r}"
            )
        if not 0.0 < self.ratio <= 1.0:
            raise ConfigError(f"ratio must be in (0, 1], got {self.ratio}")
        if not -1.0 <= self.min_similarity <= 1.0:
            raise ConfigError(f"min_similarity must be in [-1, 1], got {self.min_similarity}")
        if self.rerank_k is not None and (isinstance(self.rerank_k, bool)
                                          or not isinstance(self.rerank_k, int)
                                          or self.rerank_k < 0):
            raise ConfigError(f"rerank_k must be None or an integer >= 0, got {self.rerank_k!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "match_filter": self.match_filter,
            "ratio": self.ratio,
            "min_similarity": self.min_similarity,
            "rerank_k": self.rerank_k,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RerankSettings:
        """Read settings as stored; a missing ``rerank_k`` (older maps) reads as None."""
        unknown = set(data) - {"match_filter", "ratio", "min_similarity", "rerank_k"}
        if unknown:
            raise ConfigError(f"unknown re-rank settings: {sorted(unknown)}")
        return cls(**data)

    def describe_filter(self) -> str:
        """Return the match filter in words, e.g. "MNN with a ratio test at 0.9"."""
        return {"none": "plain MNN count",
                "ratio": f"MNN with a ratio test at {self.ratio:g}",
                "min_similarity": f"MNN with similarity >= {self.min_similarity:g}",
                }[self.match_filter]

    def describe(self) -> str:
        """One line for map-info: the filter and the default depth."""
        depth = "all candidates" if self.rerank_k is None else f"the top {self.rerank_k}"
        return f"{self.describe_filter()}, re-ranking {depth} by default"


@dataclass(frozen=True)
class ExtractorInfo:
    """What a map must know about the extractor that made it (stored in its manifest).

    Attributes:
        name: extractor family and configuration, e.g. ``"selavpr-vitl14-224"``.
        fingerprint: identifies the weights (or the learned vocabulary); two extractors with the
            same name and fingerprint produce the same features for the same image.
        global_dim: length D of the global descriptor.
        local_count: number L of local features per image (the maximum, for variable counts).
        local_dim: channels C of one local feature.
        local_grid: (H, W) when local features form a dense grid (H*W == L), else None.
        variable_local_count: True when images have fewer than L valid features (a mask is kept).
        has_keypoints: True when the extractor returns (x, y) coordinates of its local features.
        rerank: match filter applied before counting mutual nearest neighbours.
    """

    name: str
    fingerprint: str
    global_dim: int
    local_count: int
    local_dim: int
    local_grid: tuple[int, int] | None = None
    variable_local_count: bool = False
    has_keypoints: bool = False
    rerank: RerankSettings = field(default_factory=RerankSettings)

    def __post_init__(self) -> None:
        if not self.name or not self.fingerprint:
            raise ConfigError("an extractor needs a non-empty name and fingerprint")
        for attr in ("global_dim", "local_count", "local_dim"):
            if int(getattr(self, attr)) <= 0:
                raise ConfigError(f"{attr} must be positive, got {getattr(self, attr)}")
        if self.local_grid is not None:
            object.__setattr__(self, "local_grid", tuple(int(v) for v in self.local_grid))
            if math.prod(self.local_grid) != self.local_count:
                raise ConfigError(
                    f"local_grid {self.local_grid} does not hold local_count {self.local_count}"
                )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "fingerprint": self.fingerprint,
            "global_dim": self.global_dim,
            "local_count": self.local_count,
            "local_dim": self.local_dim,
            "local_grid": list(self.local_grid) if self.local_grid is not None else None,
            "variable_local_count": self.variable_local_count,
            "has_keypoints": self.has_keypoints,
            "rerank": self.rerank.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExtractorInfo:
        data = dict(data)
        grid = data.pop("local_grid", None)
        rerank = RerankSettings.from_dict(data.pop("rerank", {}))
        return cls(**data, local_grid=tuple(grid) if grid else None, rerank=rerank)

    def describe(self) -> str:
        """One line for error messages: name and fingerprint."""
        return f"{self.name!r} (fingerprint {self.fingerprint})"


@dataclass(frozen=True, eq=False)
class Features:
    """Features of a batch of B images.

    Attributes:
        global_desc: (B, D) float32, L2-normalised global descriptors.
        local: (B, L, C) local features (float32 from extractors, float16 when read from a map),
            L2-normalised per feature.
        local_mask: (B, L) bool, True for valid features; None when all L are valid.
        keypoints: (B, L, 2) float32 (x, y) pixel coordinates; None when not provided.
    """

    global_desc: np.ndarray
    local: np.ndarray
    local_mask: np.ndarray | None = None
    keypoints: np.ndarray | None = None

    def __post_init__(self) -> None:
        g, loc = self.global_desc, self.local
        if g.ndim != 2 or g.dtype != np.float32:
            raise ValueError(f"global_desc must be (B, D) float32, got {g.shape} {g.dtype}")
        if loc.ndim != 3 or loc.shape[0] != g.shape[0]:
            raise ValueError(f"local must be (B={g.shape[0]}, L, C), got {loc.shape}")
        if loc.dtype not in (np.float16, np.float32):
            raise ValueError(f"local must be float16 or float32, got {loc.dtype}")
        if self.local_mask is not None and (
            self.local_mask.shape != loc.shape[:2] or self.local_mask.dtype != np.bool_
        ):
            raise ValueError(
                f"local_mask must be {loc.shape[:2]} bool, got "
                f"{self.local_mask.shape} {self.local_mask.dtype}"
            )
        if self.keypoints is not None and self.keypoints.shape != (*loc.shape[:2], 2):
            raise ValueError(
                f"keypoints must be {(*loc.shape[:2], 2)}, got {self.keypoints.shape}"
            )

    def __len__(self) -> int:
        return int(self.global_desc.shape[0])

    def select(self, index: int | slice | np.ndarray) -> Features:
        """Return the features of a subset of the batch (always keeps the batch axis)."""
        if isinstance(index, (int, np.integer)):
            index = slice(int(index), int(index) + 1)
        return Features(
            global_desc=self.global_desc[index],
            local=self.local[index],
            local_mask=None if self.local_mask is None else self.local_mask[index],
            keypoints=None if self.keypoints is None else self.keypoints[index],
        )

    def check_against(self, info: ExtractorInfo) -> None:
        """Raise ValueError when these features cannot come from an extractor with ``info``."""
        _, dim = self.global_desc.shape
        _, count, channels = self.local.shape
        if dim != info.global_dim:
            raise ValueError(f"global descriptor has {dim} dims, expected {info.global_dim}")
        if (count, channels) != (info.local_count, info.local_dim):
            raise ValueError(
                f"local features are {count}x{channels}, expected "
                f"{info.local_count}x{info.local_dim}"
            )
        if info.has_keypoints and self.keypoints is None:
            raise ValueError(f"extractor {info.name!r} provides keypoints but they are missing")


class Extractor(abc.ABC):
    """Turns RGB images into :class:`Features`; SelaVPR and classical backends implement it."""

    @property
    @abc.abstractmethod
    def info(self) -> ExtractorInfo:
        """Name, weights fingerprint, descriptor sizes and re-rank settings."""

    @abc.abstractmethod
    def extract(self, images: Sequence[np.ndarray]) -> Features:
        """Extract features of images given as (H, W, 3) uint8 RGB arrays (any size)."""

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def fingerprint(self) -> str:
        return self.info.fingerprint

    @property
    def global_dim(self) -> int:
        return self.info.global_dim

    @property
    def local_shape(self) -> tuple[int, ...]:
        """(H, W, C) for a dense grid, else (L, C)."""
        info = self.info
        if info.local_grid is not None:
            return (*info.local_grid, info.local_dim)
        return (info.local_count, info.local_dim)

    @property
    def rerank(self) -> RerankSettings:
        return self.info.rerank

    # Learned state: extractors whose state comes from the map's own images (a classical
    # extractor's visual vocabulary) are fitted before the map is created, and their state is
    # stored in the map. A map builder does::
    #
    #     if extractor.needs_fit:
    #         extractor = extractor.fit(sample)  # up to extractor.fit_sample_size images
    #     place_map = PlaceMap.create(path, extractor)  # stores extractor.state()
    #
    # and a map's user restores the extractor from ``place_map.extractor_state()`` (see
    # ``extractors.factory.create_extractor``). Weights-only extractors (SelaVPR) keep the
    # defaults below: nothing to fit, no state.
    @property
    def needs_fit(self) -> bool:
        """True while the extractor still has to learn its state from sample images."""
        return False

    @property
    def fit_sample_size(self) -> int:
        """How many sample images :meth:`fit` wants at most (spread over the whole route)."""
        return 0

    def fit(self, images: Sequence[np.ndarray]) -> Extractor:
        """Return a fitted extractor, learned from (H, W, 3) uint8 RGB sample images of the map.

        Deterministic: the same images give the same state. The default returns ``self``.
        """
        return self

    def state(self) -> dict[str, np.ndarray]:
        """Learned arrays a map stores (numeric ``.npy``, no pickle); {} when there are none.

        The fingerprint in :attr:`info` must identify this state (e.g. hash it), so that a map
        refuses queries from an extractor with another state.
        """
        return {}


def check_rgb_images(images: Sequence[np.ndarray]) -> None:
    """Raise ValueError unless every image is an (H, W, 3) uint8 array."""
    if len(images) == 0:
        raise ValueError("no images given")
    for i, image in enumerate(images):
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            shape = getattr(image, "shape", type(image).__name__)
            raise ValueError(f"image {i} must be an (H, W, 3) RGB array, got {shape}")
        if image.dtype != np.uint8:
            raise ValueError(f"image {i} must be uint8, got {image.dtype}")
