"""A classical extractor that needs no learned weights: dense RootSIFT with a VLAD descriptor.

It lets the whole pipeline run on a fresh machine (SelaVPR weights are user downloads), serves
as the CPU fallback, and is the classical baseline SelaVPR is compared against.

- Local features: RootSIFT on a dense grid (``rootsift.dense_rootsift``) of the image resized to
  a fixed working size, with (x, y) keypoints in the original image's pixels and a mask of the
  patches with enough contrast.
- Global descriptor: VLAD (``vlad.vlad``) of the valid local features over a vocabulary learned
  by k-means from the map's own images.

The vocabulary (and the configuration, including the working size chosen from the map's images)
is the extractor's *state*: :meth:`ClassicalExtractor.fit` learns it, :meth:`state` gives the
arrays a map stores, :meth:`from_state` restores the extractor from them, and the fingerprint is
the sha256 of those arrays, so a map refuses queries from an extractor with another vocabulary.

How a map builder uses it::

    extractor = ClassicalExtractor(ClassicalConfig())  # not fitted yet: needs_fit is True
    extractor = extractor.fit(sample)                  # <= fit_sample_size images of the route
    place_map = PlaceMap.create(path, extractor)       # stores extractor.state()
    ...
    extractor = ClassicalExtractor.from_state(place_map.extractor_state())  # later, to query
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import cv2
import numpy as np

from selavpr_ros.errors import ConfigError, SelaVPRError
from selavpr_ros.extractors.base import (
    Extractor,
    ExtractorInfo,
    Features,
    RerankSettings,
    check_rgb_images,
)
from selavpr_ros.extractors.rootsift import DESCRIPTOR_DIM, DenseGrid, dense_rootsift
from selavpr_ros.extractors.vlad import fit_vocabulary, vlad

log = logging.getLogger(__name__)

NAME_PREFIX = "classical-rootsift-vlad"
STATE_VERSION = 1


class NotFittedError(SelaVPRError):
    """The classical extractor has no vocabulary yet (fit it, or restore it from a map)."""


# Re-ranking depth of classical maps: the smallest depth whose Recall@1 on Gardens Point (day
# and night queries, two maps) equals re-ranking all 100 candidates, at about half their cost
# (bench/eval_classical_gardens_point.py --sweep; figures in bench/PERFORMANCE.md, issue 17).
RERANK_K = 50


def _default_rerank() -> RerankSettings:
    return RerankSettings(match_filter="ratio", ratio=0.9, rerank_k=RERANK_K)


@dataclass(frozen=True)
class ClassicalConfig:
    """Settings of the classical extractor.

    The defaults (all grid features as local features, Lowe's ratio test at 0.9, re-ranking the
    top ``RERANK_K`` candidates) were chosen on Gardens Point with
    bench/eval_classical_gardens_point.py; the figures are in bench/PERFORMANCE.md.

    Attributes:
        long_side: the working image size's long side in pixels.
        image_size: (width, height) every image is resized to; None until :meth:`fit` sets it
            from the first sample image's aspect ratio and ``long_side``. A fixed size gives a
            fixed number of local features (queries of another aspect ratio are stretched).
        step: pixels between grid points.
        bin_sizes: SIFT cell sizes in pixels, one descriptor scale each (patch = 4 cells).
        contrast_threshold: minimum mean gradient magnitude (grey levels in [0, 1] per pixel)
            of a valid patch; flat patches (sky, black night areas) are masked out.
        vocabulary_size: k-means centroids; the global descriptor has ``k * 128`` dims.
        power_norm: signed square root of the VLAD vector (after intra-normalisation).
        fit_max_images: at most this many sample images are used by :meth:`fit` (evenly
            spaced when more are given).
        fit_descriptors_per_image: descriptors drawn at random from each sample image.
        kmeans_iterations: k-means iterations.
        seed: seeds the descriptor draw and k-means (fit is deterministic for a seed).
        local_stride: the local features (for re-ranking) are every ``local_stride``-th grid
            point in x and y of each scale; the VLAD descriptor always uses all of them. MNN
            re-ranking costs grow with the square of the feature count.
        rerank: match filter applied before MNN counting and the default re-ranking depth
            (stored in the map).
    """

    long_side: int = 320
    image_size: tuple[int, int] | None = None
    step: int = 8
    bin_sizes: tuple[int, ...] = (4, 6)
    contrast_threshold: float = 0.001
    vocabulary_size: int = 256
    power_norm: bool = True
    fit_max_images: int = 400
    fit_descriptors_per_image: int = 400
    kmeans_iterations: int = 20
    seed: int = 0
    local_stride: int = 1
    rerank: RerankSettings = field(default_factory=_default_rerank)

    def __post_init__(self) -> None:
        object.__setattr__(self, "bin_sizes", tuple(int(b) for b in self.bin_sizes))
        if self.image_size is not None:
            object.__setattr__(self, "image_size", tuple(int(v) for v in self.image_size))
            if len(self.image_size) != 2 or min(self.image_size) < 32:
                raise ConfigError(
                    f"image_size must be (width, height), each >= 32, got {self.image_size}"
                )
        if self.long_side < 32:
            raise ConfigError(f"long_side must be >= 32, got {self.long_side}")
        if self.vocabulary_size < 1:
            raise ConfigError(f"vocabulary_size must be >= 1, got {self.vocabulary_size}")
        if self.fit_max_images < 1 or self.fit_descriptors_per_image < 1:
            raise ConfigError("fit_max_images and fit_descriptors_per_image must be >= 1")
        if self.local_stride < 1:
            raise ConfigError(f"local_stride must be >= 1, got {self.local_stride}")
        if self.kmeans_iterations < 1:
            raise ConfigError(f"kmeans_iterations must be >= 1, got {self.kmeans_iterations}")
        if not isinstance(self.rerank, RerankSettings):
            raise ConfigError(f"rerank must be RerankSettings, got {type(self.rerank).__name__}")
        _ = self.grid  # validates step, bin_sizes and contrast_threshold
        if self.image_size is not None and self.local_count == 0:
            raise ConfigError(f"image_size {self.image_size} is too small for the grid")

    @property
    def grid(self) -> DenseGrid:
        return DenseGrid(self.step, self.bin_sizes, self.contrast_threshold)

    @property
    def local_count(self) -> int:
        return len(self.local_subset)

    @property
    def local_subset(self) -> np.ndarray:
        """Indices of the grid descriptors kept as local features."""
        if self.image_size is None:
            raise NotFittedError("the working image size is set by fit()")
        width, height = self.image_size
        return self.grid.subset(height, width, self.local_stride)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rerank"] = self.rerank.to_dict()
        data["bin_sizes"] = list(self.bin_sizes)
        data["image_size"] = list(self.image_size) if self.image_size else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassicalConfig:
        data = dict(data)
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown classical extractor settings: {sorted(unknown)}")
        rerank = RerankSettings.from_dict(data.pop("rerank", {}))
        size = data.pop("image_size", None)
        return cls(**data, image_size=tuple(size) if size else None, rerank=rerank)


def working_size(image_hw: tuple[int, int], long_side: int) -> tuple[int, int]:
    """(width, height) with the image's aspect ratio and the given long side."""
    height, width = image_hw
    scale = long_side / max(height, width)
    return max(32, round(width * scale)), max(32, round(height * scale))


def state_fingerprint(state: dict[str, np.ndarray]) -> str:
    """sha256 over the state arrays (name, dtype, shape, bytes) in name order."""
    digest = hashlib.sha256()
    for key in sorted(state):
        array = np.ascontiguousarray(state[key])
        digest.update(f"{key}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


class ClassicalExtractor(Extractor):
    """Dense RootSIFT local features and a VLAD global descriptor (see the module docstring).

    Args:
        config: settings; ``config.image_size`` must be set when ``centroids`` are given.
        centroids: (vocabulary_size, 128) float32 vocabulary, or None for an unfitted extractor
            (then only :meth:`fit` can be used).
    """

    def __init__(self, config: ClassicalConfig | None = None,
                 centroids: np.ndarray | None = None, *,
                 config_json: bytes | None = None) -> None:
        self.config = config or ClassicalConfig()
        # the stored config bytes, kept as they are so that a map's fingerprint never depends
        # on how a later version would serialise the same settings
        self._config_json = config_json
        self._centroids: np.ndarray | None = None
        self._info: ExtractorInfo | None = None
        if centroids is None:
            return
        centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        expected = (self.config.vocabulary_size, DESCRIPTOR_DIM)
        if centroids.shape != expected:
            raise ConfigError(f"centroids must be {expected}, got {centroids.shape}")
        if not np.all(np.isfinite(centroids)):
            raise ConfigError("centroids must be finite")
        if self.config.image_size is None:
            raise ConfigError("a fitted classical extractor needs config.image_size")
        centroids.setflags(write=False)
        self._centroids = centroids
        self._subset = self.config.local_subset
        width, height = self.config.image_size
        self._info = ExtractorInfo(
            name=f"{NAME_PREFIX}{self.config.vocabulary_size}-{width}x{height}",
            fingerprint=state_fingerprint(self.state()),
            global_dim=self.config.vocabulary_size * DESCRIPTOR_DIM,
            local_count=self.config.local_count,
            local_dim=DESCRIPTOR_DIM,
            variable_local_count=True,
            has_keypoints=True,
            rerank=self.config.rerank,
        )

    # ---------------------------------------------------------------- state
    @property
    def needs_fit(self) -> bool:
        return self._centroids is None

    @property
    def fit_sample_size(self) -> int:
        return self.config.fit_max_images

    @property
    def info(self) -> ExtractorInfo:
        if self._info is None:
            raise NotFittedError(
                "the classical extractor has no vocabulary yet: fit it on the map's images "
                "(Extractor.fit) or restore it from the map (ClassicalExtractor.from_state)"
            )
        return self._info

    @property
    def centroids(self) -> np.ndarray:
        if self._centroids is None:
            raise NotFittedError("the classical extractor has no vocabulary yet")
        return self._centroids

    def state(self) -> dict[str, np.ndarray]:
        """``config`` (UTF-8 JSON as uint8) and ``centroids`` (k, 128) float32."""
        raw = self._config_json
        if raw is None:
            raw = json.dumps({"version": STATE_VERSION, "config": self.config.to_dict()},
                             sort_keys=True).encode("utf-8")
        return {
            "config": np.frombuffer(raw, dtype=np.uint8).copy(),
            "centroids": self.centroids,
        }

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> ClassicalExtractor:
        """Restore a fitted extractor from :meth:`state` arrays (e.g. a map's).

        Raises:
            ConfigError: the arrays are not a classical extractor's state.
        """
        missing = {"config", "centroids"} - set(state)
        if missing:
            raise ConfigError(
                f"not a classical extractor state: missing {sorted(missing)} "
                f"(found {sorted(state)}); was the map built by another extractor?"
            )
        raw = np.asarray(state["config"])
        try:
            if raw.dtype != np.uint8 or raw.ndim != 1:
                raise ValueError(f"config must be 1-d uint8, got {raw.shape} {raw.dtype}")
            data = json.loads(raw.tobytes().decode("utf-8"))
            if data.get("version") != STATE_VERSION:
                raise ValueError(f"state version {data.get('version')!r} is not supported")
            config = ClassicalConfig.from_dict(data["config"])
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as err:
            raise ConfigError(f"classical extractor state has an invalid config: {err}") from err
        return cls(config, np.asarray(state["centroids"]), config_json=raw.tobytes())

    def fit(self, images: Sequence[np.ndarray]) -> ClassicalExtractor:
        """Return a fitted copy: working size from the first image, k-means vocabulary from all.

        At most ``config.fit_max_images`` images are used (evenly spaced), and
        ``config.fit_descriptors_per_image`` valid descriptors of each, drawn with
        ``config.seed``.

        Raises:
            ConfigError: too few valid descriptors for the vocabulary size.
        """
        check_rgb_images(images)
        cfg = self.config
        if cfg.image_size is None:
            cfg = replace(cfg, image_size=working_size(images[0].shape[:2], cfg.long_side))
        picks = np.linspace(0, len(images) - 1, min(len(images), cfg.fit_max_images))
        rng = np.random.default_rng(cfg.seed)
        samples = []
        for i in np.unique(np.round(picks).astype(np.int64)):
            desc, _, valid = self._describe(images[int(i)], cfg)
            desc = desc[valid]
            if len(desc) > cfg.fit_descriptors_per_image:
                desc = desc[rng.choice(len(desc), cfg.fit_descriptors_per_image, replace=False)]
            samples.append(desc)
        data = np.concatenate(samples) if samples else np.zeros((0, DESCRIPTOR_DIM), np.float32)
        centroids = fit_vocabulary(
            data, cfg.vocabulary_size, iterations=cfg.kmeans_iterations, seed=cfg.seed
        )
        log.info("learned a %d-word vocabulary from %d descriptors of %d images",
                 cfg.vocabulary_size, len(data), len(samples))
        return ClassicalExtractor(cfg, centroids)

    # ---------------------------------------------------------------- extraction
    @staticmethod
    def _describe(
        image: np.ndarray, config: ClassicalConfig
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Descriptors, keypoints in the original image's pixels, and validity of one image."""
        assert config.image_size is not None
        width, height = config.image_size
        h0, w0 = image.shape[:2]
        interp = cv2.INTER_AREA if w0 >= width and h0 >= height else cv2.INTER_LINEAR
        small = cv2.resize(image, (width, height), interpolation=interp)
        grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        desc, kp, valid = dense_rootsift(grey, config.grid)
        # pixel centres map as (x + 0.5) * scale - 0.5
        kp = (kp + 0.5) * np.array([w0 / width, h0 / height], np.float32) - 0.5
        return desc, kp.astype(np.float32), valid

    def extract(self, images: Sequence[np.ndarray]) -> Features:
        """Global (B, k*128) VLAD, local (B, L, 128) RootSIFT with mask and keypoints."""
        check_rgb_images(images)
        centroids = self.centroids
        subset = self._subset
        glob, local, mask, keypoints = [], [], [], []
        for image in images:
            desc, kp, valid = self._describe(image, self.config)
            glob.append(vlad(desc[valid], centroids, power_norm=self.config.power_norm))
            local.append(desc[subset])
            mask.append(valid[subset])
            keypoints.append(kp[subset])
        return Features(
            global_desc=np.stack(glob),
            local=np.stack(local),
            local_mask=np.stack(mask),
            keypoints=np.stack(keypoints),
        )
