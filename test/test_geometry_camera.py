"""Camera model, feature pixels, depth points and MNN pairs.

The camera model from CameraInfo dicts and calibration YAML, its errors, scaling and JSON form;
feature pixels of grids and keypoints; depth points; MNN pairs against matching.mnn's count.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from selavpr_ros.errors import SelaVPRError
from selavpr_ros.extractors.base import ExtractorInfo, RerankSettings
from selavpr_ros.geometry import (
    CameraModel,
    CameraModelError,
    DepthImageError,
    depth_in_metres,
    feature_pixels,
    feature_points,
    grid_pixels,
    mnn_pairs,
)
from selavpr_ros.matching.mnn import mnn_scores

# written by hand in camera_calibration's format (values of a 640x480 camera)
CALIBRATION = """\
image_width: 640
image_height: 480
camera_name: narrow_stereo
camera_matrix:
  rows: 3
  cols: 3
  data: [525.5, 0.0, 319.2, 0.0, 524.1, 241.7, 0.0, 0.0, 1.0]
distortion_model: plumb_bob
distortion_coefficients:
  rows: 1
  cols: 5
  data: [0.12, -0.25, 0.001, -0.002, 0.0]
rectification_matrix:
  rows: 3
  cols: 3
  data: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
projection_matrix:
  rows: 3
  cols: 4
  data: [530.0, 0.0, 318.0, 0.0, 0.0, 529.0, 240.0, 0.0, 0.0, 0.0, 1.0, 0.0]
"""


def info(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "width": 640, "height": 480, "distortion_model": "plumb_bob",
        "d": [0.12, -0.25, 0.001, -0.002, 0.0],
        "k": [525.5, 0.0, 319.2, 0.0, 524.1, 241.7, 0.0, 0.0, 1.0],
        "r": [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0],
        "p": [530.0, 0, 318.0, 0, 0, 529.0, 240.0, 0, 0, 0, 1.0, 0],
        "binning_x": 0, "binning_y": 0,
        "roi": {"x_offset": 0, "y_offset": 0, "height": 0, "width": 0, "do_rectify": False},
    }
    base.update(changes)
    return base


def test_yaml_and_camera_info_give_the_same_model(tmp_path: Path) -> None:
    path = tmp_path / "camera.yaml"
    path.write_text(CALIBRATION)
    from_yaml = CameraModel.from_yaml(path)
    from_info = CameraModel.from_camera_info(info())
    assert from_yaml.name == "narrow_stereo" and from_yaml.same_as(from_info)
    assert (from_yaml.width, from_yaml.height) == (640, 480)
    assert from_yaml.fx == 525.5 and from_yaml.fy == 524.1
    assert from_yaml.k[0, 2] == 319.2 and from_yaml.k[1, 2] == 241.7
    assert from_yaml.d.tolist() == [0.12, -0.25, 0.001, -0.002, 0.0]
    # JSON round trip (what a map stores)
    text = json.dumps(from_yaml.to_dict())
    back = CameraModel.from_dict(json.loads(text))
    assert back.same_as(from_yaml) and back.name == "narrow_stereo"


@pytest.mark.parametrize("model,coefficients", [
    ("rational_polynomial", [0.1, -0.05, 0.001, 0.0005, 0.01, 0.05, -0.02, 0.003]),
    ("equidistant", [0.05, -0.01, 0.002, -0.0004]),
    ("plumb_bob", [-0.3, 0.1, 0.0, 0.0, -0.02]),
])
def test_undistortion_inverts_projection(model: str, coefficients: list[float]) -> None:
    camera = CameraModel.from_camera_info(info(distortion_model=model, d=coefficients))
    rng = np.random.default_rng(0)
    rays = np.column_stack([rng.uniform(-0.5, 0.5, 50), rng.uniform(-0.4, 0.4, 50),
                            np.ones(50)])
    pixels = camera.project(rays * rng.uniform(1, 20, (50, 1)))
    assert np.abs(pixels - camera.project(rays)).max() < 1e-9  # projection ignores depth
    assert np.allclose(camera.normalized(pixels), rays[:, :2], atol=1e-9)


def test_pixels_of_an_undistorted_camera_map_through_k() -> None:
    camera = CameraModel.pinhole(320, 240, 160.0)
    # the principal point is the centre of the image, between pixels 159 and 160
    assert camera.k[0, 2] == 159.5 and camera.k[1, 2] == 119.5
    assert np.allclose(camera.normalized(np.array([[159.5, 119.5], [319.5, 119.5]])),
                       [[0, 0], [1.0, 0]])
    assert not camera.has_distortion


def test_scaling_keeps_pixel_centres() -> None:
    camera = CameraModel.from_camera_info(info())
    half = camera.scaled(320, 240)
    assert half.fx == pytest.approx(262.75) and half.fy == pytest.approx(262.05)
    # (319.2 + 0.5) / 2 - 0.5 and (241.7 + 0.5) / 2 - 0.5
    assert half.k[0, 2] == pytest.approx(159.35) and half.k[1, 2] == pytest.approx(120.6)
    assert np.array_equal(half.d, camera.d)
    # a ray lands on the same place of the scaled image: (x + 0.5) / 2 - 0.5
    ray = np.array([[0.2, -0.1, 1.0]])
    assert np.allclose(half.project(ray), (camera.project(ray) + 0.5) / 2 - 0.5, atol=1e-9)
    binned = CameraModel.from_camera_info(info(binning_x=2, binning_y=2))
    assert binned.same_as(half)


@pytest.mark.parametrize("changes,message", [
    ({"k": [0.0] * 9}, "not calibrated"),
    ({"k": [0.0, 0, 320, 0, 500, 240, 0, 0, 1]}, "focal lengths must be > 0"),
    ({"k": [500, 0, 320, 0, 500, 240]}, "K must have 9 values"),
    ({"k": [500, 0, 900, 0, 500, 240, 0, 0, 1]}, "principal point"),
    ({"k": [500, 0, 320, 0, 500, 240, 0, 0, 2]}, "upper triangular"),
    ({"d": [0.1, 0.2, 0.3]}, "takes (0, 4, 5) coefficients, got 3"),
    ({"distortion_model": "equidistant"}, "takes (4,) coefficients, got 5"),
    ({"distortion_model": "kannala"}, "not supported"),
    ({"width": 0}, "width must be a positive integer"),
    ({"height": 480.5}, "height must be a positive integer"),
    ({"d": [0.1, float("nan"), 0, 0, 0]}, "non-finite"),
    ({"p": [0.0, 0, 318.0, 0, 0, 529.0, 240.0, 0, 0, 0, 1.0, 0]}, "P has a focal length"),
    ({"p": [5300.0, 0, 318.0, 0, 0, 5290.0, 240.0, 0, 0, 0, 1.0, 0]}, "disagree"),
    ({"r": [1.0, 2.0, 0, 0, 1, 0, 0, 0, 1]}, "not a rotation"),
    ({"roi": {"x_offset": 10, "y_offset": 0, "height": 100, "width": 100}},
     "region of interest"),
])
def test_bad_camera_info_is_refused_in_one_line(changes: dict[str, object],
                                                message: str) -> None:
    with pytest.raises(CameraModelError, match=message.replace("(", r"\(").replace(")", r"\)")
                       ) as err:
        CameraModel.from_camera_info(info(**changes))
    assert isinstance(err.value, SelaVPRError) and "\n" not in str(err.value)


def test_missing_fields_and_bad_yaml_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CameraModelError, match="lacks k"):
        CameraModel.from_camera_info({"width": 640, "height": 480})
    with pytest.raises(CameraModelError, match="unknown camera model fields"):
        CameraModel.from_dict({**CameraModel.pinhole(64, 48, 50).to_dict(), "path": "/x"})
    cases = {
        "missing.yaml": CALIBRATION.replace("image_height: 480\n", ""),
        "rows.yaml": CALIBRATION.replace("rows: 1\n  cols: 5", "rows: 1\n  cols: 4"),
        "shape.yaml": CALIBRATION.replace("  rows: 3\n  cols: 3\n  data: [525.5",
                                          "  rows: 1\n  cols: 9\n  data: [525.5"),
        "broken.yaml": "image_width: [640\n",
        "list.yaml": "- 1\n- 2\n",
    }
    expected = {"missing.yaml": "lacks image_height", "rows.yaml": "1x4 but has 5 values",
                "shape.yaml": "camera_matrix must be 3x3", "broken.yaml": "not valid YAML",
                "list.yaml": "not a YAML mapping"}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(CameraModelError, match=expected[name]) as err:
            CameraModel.from_yaml(tmp_path / name)
        assert name in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(CameraModelError, match="cannot read"):
        CameraModel.from_yaml(tmp_path / "absent.yaml")


def test_grid_pixels_by_hand() -> None:
    # 61x61 grid of a 224x224 input: cell m sits on input pixel 3.5 m + 6.5
    # a 640x480 image: x = (3.5 m + 7) * 640 / 224 - 0.5, y = (3.5 m + 7) * 480 / 224 - 0.5
    px = grid_pixels((61, 61), (480, 640), np.array([0, 60, 61 * 30 + 30, 61 * 61 - 1]))
    assert np.allclose(px[0], [19.5, 14.5])
    assert np.allclose(px[1], [(210 + 7) * 640 / 224 - 0.5, 14.5])  # last column, first row
    assert np.allclose(px[2], [319.5, 239.5])  # the centre cell is the image centre
    assert np.allclose(px[3], [(217) * 640 / 224 - 0.5, 217 * 480 / 224 - 0.5])
    # a 224x224 image: the input pixels themselves; other grid sizes (ViT at 448: 125x125)
    assert np.allclose(grid_pixels((61, 61), (224, 224), np.array([1]))[0], [10.0, 6.5])
    assert np.allclose(grid_pixels((125, 125), (448, 448), np.array([124]))[0], [440.5, 6.5])
    with pytest.raises(SelaVPRError):
        grid_pixels((60, 60), (224, 224))


def test_feature_pixels_for_grid_and_keypoint_extractors() -> None:
    grid = ExtractorInfo("selavpr-vitl14-224x224", "f", 1024, 61 * 61, 128, local_grid=(61, 61))
    assert np.allclose(feature_pixels(grid, (480, 640), np.array([0])), [[19.5, 14.5]])
    keyed = ExtractorInfo("classical", "f", 64, 3, 128, variable_local_count=True,
                          has_keypoints=True)
    kp = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], np.float32)
    assert np.array_equal(feature_pixels(keyed, (480, 640), np.array([2, 0]), kp),
                          [[5.0, 6.0], [1.0, 2.0]])
    with pytest.raises(SelaVPRError, match="needs the image's keypoints"):
        feature_pixels(keyed, (480, 640), np.array([0]))


def test_depth_encodings_and_points() -> None:
    camera = CameraModel.pinhole(8, 6, 4.0)  # principal point (3.5, 2.5)
    mm = np.full((6, 8), 2000, np.uint16)
    mm[0, 0] = 0  # no reading
    metres = depth_in_metres(mm, "16UC1")
    assert metres.dtype == np.float32 and np.isnan(metres[0, 0]) and metres[1, 1] == 2.0
    pts = feature_points(mm, "16UC1", np.array([[3.5, 2.5], [7.0, 2.5], [0.0, 0.0],
                                                [20.0, 1.0]]), camera)
    assert pts.dtype == np.float32
    assert np.allclose(pts[0], [0, 0, 2.0]) and np.allclose(pts[1], [(7 - 3.5) / 4 * 2, 0, 2.0])
    assert np.all(np.isnan(pts[2])) and np.all(np.isnan(pts[3]))  # no depth; outside
    # 32FC1 at half resolution (registered, same aspect): pixel (x+0.5)/2-0.5 rounded
    half = np.full((3, 4), 5.0, np.float32)
    half[1, 2] = np.inf
    half[2, 3] = -1.0
    pts = feature_points(half, "32FC1", np.array([[0.0, 0.0], [5.0, 3.0], [7.0, 5.0]]), camera)
    assert np.allclose(pts[0], [(0 - 3.5) / 4 * 5, (0 - 2.5) / 4 * 5, 5.0])
    assert np.all(np.isnan(pts[1])) and np.all(np.isnan(pts[2]))
    assert np.all(np.isfinite(pts[0].astype(np.float16)))  # storable as fp16


@pytest.mark.parametrize("depth,encoding,message", [
    (np.zeros((6, 8), np.uint16), "rgb8", "must be 16UC1 \\(mm\\) or 32FC1 \\(m\\)"),
    (np.zeros((6, 8), np.float32), "16UC1", "16UC1 depth must be uint16, got float32"),
    (np.zeros((6, 8, 3), np.float32), "32FC1", "must be \\(H, W\\)"),
    (np.zeros((6, 6), np.float32), "32FC1", "6x6 is not registered to the 8x6"),
])
def test_bad_depth_is_refused(depth: np.ndarray, encoding: str, message: str) -> None:
    camera = CameraModel.pinhole(8, 6, 4.0)
    with pytest.raises(DepthImageError, match=message):
        feature_points(depth, encoding, np.zeros((1, 2)), camera)


@pytest.mark.parametrize("rerank", [
    RerankSettings(), RerankSettings("ratio", ratio=0.9), RerankSettings("ratio", ratio=0.97),
    RerankSettings("min_similarity", min_similarity=0.2),
])
def test_mnn_pairs_match_the_mnn_count(rerank: RerankSettings) -> None:
    rng = np.random.default_rng(7)
    query = rng.normal(size=(300, 32)).astype(np.float32)
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    places = []
    for _ in range(3):  # noisy copies of a shuffled part of the query, plus distractors
        p = np.concatenate([query[rng.permutation(300)[:200]] + rng.normal(0, 0.4, (200, 32)),
                            rng.normal(size=(60, 32))]).astype(np.float32)
        places.append(p / np.linalg.norm(p, axis=1, keepdims=True))
    stacked = np.stack(places)
    qmask = rng.random(300) > 0.1
    pmask = rng.random((3, 260)) > 0.1
    counts = mnn_scores(query, stacked, query_mask=qmask, candidate_mask=pmask,
                        match_filter=rerank.match_filter, ratio=rerank.ratio,
                        min_similarity=rerank.min_similarity)
    for i in range(3):
        pairs = mnn_pairs(query, places[i], query_mask=qmask, place_mask=pmask[i],
                          rerank=rerank)
        assert len(pairs) == counts[i] and counts[i] > 10
        assert np.all(qmask[pairs.query]) and np.all(pmask[i][pairs.place])
        sim = places[i].astype(np.float64) @ query.astype(np.float64).T
        sim[~pmask[i]] = -np.inf
        sim[:, ~qmask] = -np.inf
        # mutual: each pair is the best in its row and in its column, up to rounding (1e-5:
        # the pairs come from torch's float32 products, this check from numpy's in float64)
        at = sim[pairs.place, pairs.query]
        assert np.all(at >= sim[:, pairs.query].max(axis=0) - 1e-5)
        assert np.all(at >= sim[pairs.place].max(axis=1) - 1e-5)
        assert np.allclose(pairs.similarity, sim[pairs.place, pairs.query], atol=1e-5)
    # fp16 grid features (as read from a map) and torch tensors work alike
    half = mnn_pairs(torch.from_numpy(query.astype(np.float16)),
                     places[0].astype(np.float16))
    assert len(half) == mnn_scores(query.astype(np.float16), stacked[:1].astype(np.float16))[0]
