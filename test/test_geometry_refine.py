"""Sub-grid query keypoints of the classical extractor recover a known image shift."""

from __future__ import annotations

import cv2
import numpy as np

from selavpr_ros.extractors.classical import ClassicalConfig, ClassicalExtractor
from selavpr_ros.geometry.refine import ClassicalRefiner
from selavpr_ros.synthetic import LIGHTING, Camera, WorldConfig, make_world
from selavpr_ros.synthetic.render import render


def test_refined_query_pixels_follow_a_subgrid_shift() -> None:
    world = make_world(4, WorldConfig(length_m=80.0))
    place = render(world, (30.0, -2.0, 1.6), 0.4, Camera(width=320, height=240, supersample=2),
                   LIGHTING["day"])
    shift = np.array([2.6, -1.7])  # pixels, less than half the 8 px grid step
    warp = np.array([[1.0, 0.0, shift[0]], [0.0, 1.0, shift[1]]])
    query = cv2.warpAffine(place, warp, (320, 240), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT)
    extractor = ClassicalExtractor(ClassicalConfig(vocabulary_size=8, long_side=320,
                                                   fit_descriptors_per_image=200,
                                                   kmeans_iterations=3)).fit([place])
    features = extractor.extract([place])
    assert features.keypoints is not None and features.local_mask is not None
    # away from the borders, on textured patches: the same grid point in both images
    kp = features.keypoints[0]
    inner = (kp[:, 0] > 30) & (kp[:, 0] < 290) & (kp[:, 1] > 30) & (kp[:, 1] < 210)
    idx = np.nonzero(inner & features.local_mask[0])[0]
    assert len(idx) > 200
    refined = ClassicalRefiner(extractor.config, query)(idx, features.local[0][idx])
    moved = refined - kp[idx]
    # the grid keypoint is off by the whole shift; the refined one by a fraction of a pixel
    assert np.linalg.norm(np.median(moved, axis=0) - shift) < 0.5
    assert np.median(np.linalg.norm(moved - shift, axis=1)) < 1.0
