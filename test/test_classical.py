"""The classical extractor: fitting, state and fingerprint, features, map and factory."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from selavpr_ros.errors import ConfigError, MapFormatError
from selavpr_ros.extractors.base import RerankSettings
from selavpr_ros.extractors.classical import (
    NAME_PREFIX,
    ClassicalConfig,
    ClassicalExtractor,
    NotFittedError,
    working_size,
)
from selavpr_ros.extractors.factory import ExtractorSpec, create_extractor, extractor_for_map
from selavpr_ros.localizer import Localizer, LocalizerConfig
from selavpr_ros.map import PlaceInfo, PlaceMap

SMALL = ClassicalConfig(vocabulary_size=8, fit_descriptors_per_image=100, kmeans_iterations=5)


def scene(seed: int, size: tuple[int, int] = (192, 128)) -> np.ndarray:
    """Make a random textured RGB image (blurred blobs and rectangles), different per seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    img = (rng.random((h // 8, w // 8, 3)) * 255).astype(np.uint8)
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(12):
        x, y = rng.integers(0, w - 20), rng.integers(0, h - 20)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.rectangle(img, (int(x), int(y)), (int(x) + 18, int(y) + 14), colour, -1)
    return img


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    return [scene(i) for i in range(6)]


@pytest.fixture(scope="module")
def fitted(images: list[np.ndarray]) -> ClassicalExtractor:
    return ClassicalExtractor(SMALL).fit(images)


def test_unfitted_extractor_says_so() -> None:
    extractor = ClassicalExtractor(SMALL)
    assert extractor.needs_fit and extractor.fit_sample_size == SMALL.fit_max_images
    with pytest.raises(NotFittedError, match="fit it on the map's images"):
        _ = extractor.info
    with pytest.raises(NotFittedError):
        extractor.extract([scene(0)])


def test_fit_sets_the_working_size_and_describes_the_features(
    fitted: ClassicalExtractor,
) -> None:
    assert not fitted.needs_fit
    # 192x128 images at long side 320 -> 320x213 (aspect kept)
    assert fitted.config.image_size == (320, 213)
    info = fitted.info
    assert info.name == "classical-rootsift-vlad8-320x213"
    assert info.global_dim == 8 * 128 and info.local_dim == 128
    assert info.variable_local_count and info.has_keypoints
    assert info.rerank == SMALL.rerank
    assert working_size((540, 960), 320) == (320, 180)


def test_features_shapes_norms_and_keypoints_in_original_pixels(
    fitted: ClassicalExtractor,
) -> None:
    big = cv2.resize(scene(1), (960, 640))
    features = fitted.extract([scene(1), big])
    info = fitted.info
    assert features.global_desc.shape == (2, info.global_dim)
    assert features.local.shape == (2, info.local_count, 128)
    features.check_against(info)
    assert np.allclose(np.linalg.norm(features.global_desc, axis=1), 1.0, atol=1e-5)
    valid = features.local_mask
    norms = np.linalg.norm(features.local[valid], axis=1)
    assert np.allclose(norms, 1.0, atol=1e-4)
    # Working image 320x213, first descriptor (bin 4) centred at 3 + 1.5 * 4 = 9 working px;
    # in a 960x640 image that is (9 + 0.5) * 3 - 0.5 = 28 px in x and (9.5) * 640/213 - 0.5 in y.
    assert np.allclose(features.keypoints[1, 0], [28.0, 9.5 * 640 / 213 - 0.5], atol=1e-3)
    assert np.allclose(features.keypoints[0, 0], [9.5 * 192 / 320 - 0.5, 9.5 * 128 / 213 - 0.5],
                       atol=1e-3)


def test_fit_is_deterministic_and_the_fingerprint_is_the_vocabulary(
    images: list[np.ndarray], fitted: ClassicalExtractor,
) -> None:
    again = ClassicalExtractor(SMALL).fit(images)
    assert np.array_equal(again.centroids, fitted.centroids)
    assert again.info == fitted.info
    other_seed = ClassicalExtractor(dataclasses.replace(SMALL, seed=5)).fit(images)
    assert not np.array_equal(other_seed.centroids, fitted.centroids)
    assert other_seed.info.fingerprint != fitted.info.fingerprint
    # same config, other centroids -> other fingerprint
    moved = ClassicalExtractor(fitted.config, fitted.centroids + 0.01)
    assert moved.info.fingerprint != fitted.info.fingerprint


def test_state_round_trip_gives_the_same_extractor(fitted: ClassicalExtractor) -> None:
    state = fitted.state()
    assert all(a.dtype.kind in "uf" for a in state.values())  # plain arrays, no pickle
    restored = ClassicalExtractor.from_state(state)
    assert restored.info == fitted.info
    # the fingerprint hashes the stored bytes as they are (here: other key order, same settings)
    import json

    reordered = json.dumps(json.loads(state["config"].tobytes()), sort_keys=False, indent=1)
    other = ClassicalExtractor.from_state(
        {**state, "config": np.frombuffer(reordered.encode(), np.uint8)})
    assert other.config == fitted.config
    assert other.info.fingerprint != fitted.info.fingerprint
    assert other.state()["config"].tobytes() == reordered.encode()
    image = scene(9)
    a, b = fitted.extract([image]), restored.extract([image])
    assert np.array_equal(a.global_desc, b.global_desc)
    assert np.array_equal(a.local, b.local)


def test_bad_state_is_refused(fitted: ClassicalExtractor) -> None:
    state = fitted.state()
    with pytest.raises(ConfigError, match="missing"):
        ClassicalExtractor.from_state({"centroids": state["centroids"]})
    with pytest.raises(ConfigError, match="invalid config"):
        ClassicalExtractor.from_state({**state, "config": np.frombuffer(b"{", np.uint8)})
    with pytest.raises(ConfigError, match="centroids must be"):
        ClassicalExtractor.from_state({**state, "centroids": state["centroids"][:3]})
    # a state from an untrusted map: not an object, or nested beyond the parser's recursion
    for text in (b"[1, 2]", b"[" * 100_000 + b"]" * 100_000):
        with pytest.raises(ConfigError, match="invalid config"):
            ClassicalExtractor.from_state({**state, "config": np.frombuffer(text, np.uint8)})


def test_local_stride_keeps_every_other_grid_point(fitted: ClassicalExtractor) -> None:
    sparse = ClassicalExtractor(dataclasses.replace(fitted.config, local_stride=2),
                                fitted.centroids)
    # 320x213, step 8: bin 4 has x0 = 3..299 (38 columns) x y0 = 3..195 (25 rows); bin 6 has
    # x0 = 5..293 (37) x y0 = 5..189 (24). Stride 2 keeps ceil(n/2) of each axis.
    assert fitted.info.local_count == 38 * 25 + 37 * 24
    assert sparse.info.local_count == 19 * 13 + 19 * 12
    image = scene(3)
    full, part = fitted.extract([image]), sparse.extract([image])
    assert np.array_equal(full.global_desc, part.global_desc)  # VLAD uses every descriptor
    # the kept features are the full grid's at the same keypoints
    index = {tuple(k): i for i, k in enumerate(full.keypoints[0].tolist())}
    rows = [index[tuple(k)] for k in part.keypoints[0].tolist()]
    assert np.array_equal(part.local[0], full.local[0][rows])
    kp = part.keypoints[0]
    assert len(np.unique(np.round(kp[:, 0], 3))) < len(np.unique(np.round(
        full.keypoints[0][:, 0], 3)))


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        ClassicalConfig(vocabulary_size=0)
    with pytest.raises(ConfigError):
        ClassicalConfig(step=0)
    with pytest.raises(ConfigError):
        ClassicalConfig(image_size=(16, 400))
    with pytest.raises(ConfigError, match="local_stride"):
        ClassicalConfig(local_stride=0)
    with pytest.raises(ConfigError, match="unknown classical"):
        ClassicalConfig.from_dict({"colour": True})


def test_map_stores_the_vocabulary_and_refuses_another(
    tmp_path: Path, images: list[np.ndarray], fitted: ClassicalExtractor,
) -> None:
    path = tmp_path / "m.selavpr"
    features = fitted.extract(images)
    with PlaceMap.create(path, fitted) as pm:
        pm.append(features, [PlaceInfo(stamp_ns=i, position=(float(i), 0.0, 0.0))
                             for i in range(len(images))])
    with PlaceMap.open(path, verify=True) as pm:
        restored = extractor_for_map(ExtractorSpec(kind="classical"), pm)
        assert restored.info == fitted.info
        localizer = Localizer(pm, restored, LocalizerConfig(top_k=3, min_margin=0))
        # a map image finds itself, first stage and after re-ranking
        for i in (0, 4):
            assert localizer.query(images[i]).candidates[0].place_id == i
        other = ClassicalExtractor(SMALL).fit(images[::-1][:3])
        with pytest.raises(MapFormatError, match="cannot be queried"):
            Localizer(pm, other)


def test_factory_builds_an_unfitted_classical_extractor(tmp_path: Path) -> None:
    extractor = create_extractor(ExtractorSpec(kind="classical", vocabulary_size=32))
    assert extractor.needs_fit and extractor.config.vocabulary_size == 32
    from selavpr_ros.extractors.base import ExtractorInfo

    info = ExtractorInfo(NAME_PREFIX + "-x", "w", global_dim=4, local_count=2, local_dim=2)
    with PlaceMap.create(tmp_path / "m", info) as pm:
        with pytest.raises(MapFormatError, match="holds no vocabulary"):
            extractor_for_map(ExtractorSpec(kind="classical"), pm)


def test_rerank_settings_are_recorded(tmp_path: Path, fitted: ClassicalExtractor) -> None:
    settings = RerankSettings("min_similarity", min_similarity=0.9)
    variant = ClassicalExtractor(dataclasses.replace(fitted.config, rerank=settings),
                                 fitted.centroids)
    with PlaceMap.create(tmp_path / "m", variant) as pm:
        assert pm.extractor_info.rerank == settings
    with PlaceMap.open(tmp_path / "m") as pm:
        assert pm.extractor_info.rerank == settings
        assert extractor_for_map(ExtractorSpec(), pm).rerank == settings


def test_weights_only_extractors_keep_the_no_op_fit_hooks() -> None:
    from selavpr_ros.extractors.base import Extractor, ExtractorInfo

    class WeightsOnly(Extractor):
        info = ExtractorInfo("w", "sha", global_dim=2, local_count=1, local_dim=2)

        def extract(self, images):  # type: ignore[no-untyped-def]
            raise NotImplementedError

    extractor = WeightsOnly()
    assert not extractor.needs_fit and extractor.fit_sample_size == 0
    assert extractor.fit([scene(0)]) is extractor
    assert extractor.state() == {}
