"""Small real maps for the node tests (random weights, clearly untrained).

The extractor is the one-block ViT-S SelaVPR at 112x112 input (8x8 patches, 29x29 local
features) of ``map_build_testlib.make_checkpoint``: the same loading and extraction code as a
real checkpoint, cheap enough for a 2-core CPU. With random weights an image is only recognised
when it is (nearly) the same image, which is exactly what these tests send.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from selavpr_ros.extractors.factory import ExtractorSpec, create_extractor
from selavpr_ros.map import PlaceInfo, PlaceMap
from selavpr_ros.map.local_format import LocalFormat


def place_images(count: int, seed: int = 0, size: tuple[int, int] = (96, 128)) -> list[np.ndarray]:
    """Distinct textured images (random coloured rectangles over smooth noise)."""
    rng = np.random.default_rng(seed)
    h, w = size
    images = []
    for _ in range(count):
        base = cv2.resize(rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8), (w, h),
                          interpolation=cv2.INTER_CUBIC)
        for _ in range(6):
            x0, y0 = int(rng.integers(0, w - 10)), int(rng.integers(0, h - 10))
            x1, y1 = x0 + int(rng.integers(8, w // 2)), y0 + int(rng.integers(8, h // 2))
            color = tuple(int(c) for c in rng.integers(0, 256, 3))
            cv2.rectangle(base, (x0, y0), (x1, y1), color, thickness=-1)
        images.append(base)
    return images


def place_pose(i: int) -> tuple[tuple[float, float, float], tuple[float, float, float, float]]:
    """Place i sits 30 m after place i-1 along x (far enough to count as distinct places)."""
    return (30.0 * i, 0.5 * i, 0.0), (0.0, 0.0, 0.0, 1.0)


def build_map(path: Path, checkpoint: Path, images: list[np.ndarray],
              local_format: str = "fp16") -> Path:
    """Build a map with one place per image, stamps 1 s apart, poses from :func:`place_pose`."""
    extractor = create_extractor(ExtractorSpec(checkpoint=str(checkpoint), batch_size=8))
    with PlaceMap.create(path, extractor,
                         local_format=LocalFormat.parse(local_format)) as place_map:
        features = extractor.extract(images)
        places = [PlaceInfo(stamp_ns=(1_000 + i) * 10**9, frame_id="camera",
                            position=place_pose(i)[0], orientation=place_pose(i)[1],
                            source="test", source_ref=f"image{i}")
                  for i in range(len(images))]
        place_map.append(features, places)
    return path
