#!/usr/bin/env python3
"""Recall@1/5 of the classical extractor on Gardens Point Walking, through the real pipeline.

day_left is the map (built with PlaceMap, vocabulary fitted on day_left, stored in the map);
day_right and night_right are the queries, answered by Localizer.query_features; a query is
correct at N when one of its first N candidates is within +-2 frames (VPR-Bench tolerance). For
every re-rank setting (match filter and K) a map is created from the same cached features with
an extractor whose only difference is its RerankSettings (they are recorded in the map).

Extraction is timed per image on one thread (OPENBLAS/OMP/torch threads set to 1 before the
imports); other processes on the machine inflate it, so the median is reported.

    python bench/eval_classical_gardens_point.py [--data DIR] [--rerank-k 20 100]
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selavpr_ros.extractors.base import Features, RerankSettings  # noqa: E402
from selavpr_ros.extractors.classical import ClassicalConfig, ClassicalExtractor  # noqa: E402
from selavpr_ros.io.images import read_image_file  # noqa: E402
from selavpr_ros.localizer import Localizer, LocalizerConfig  # noqa: E402
from selavpr_ros.map import PlaceInfo, PlaceMap  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gardens_point_walking"
TOLERANCE = 2
FILTERS = {
    "none": RerankSettings("none"),
    "ratio0.8": RerankSettings("ratio", ratio=0.8),
    "ratio0.9": RerankSettings("ratio", ratio=0.9),
    "ratio0.95": RerankSettings("ratio", ratio=0.95),
    "minsim0.9": RerankSettings("min_similarity", min_similarity=0.9),
    "minsim0.8": RerankSettings("min_similarity", min_similarity=0.8),
}


def load(folder: Path, limit: int) -> list[np.ndarray]:
    files = sorted(folder.glob("*.jpg"))[:limit] if limit else sorted(folder.glob("*.jpg"))
    return [read_image_file(f) for f in files]


def extract_all(extractor: ClassicalExtractor, images: list[np.ndarray]) -> tuple[Features, float]:
    """Features of every image (one at a time) and the median extraction time in ms."""
    times, parts = [], []
    for image in images:
        t0 = time.perf_counter()
        parts.append(extractor.extract([image]))
        times.append((time.perf_counter() - t0) * 1e3)
    feats = Features(
        global_desc=np.concatenate([p.global_desc for p in parts]),
        local=np.concatenate([p.local for p in parts]),
        local_mask=np.concatenate([p.local_mask for p in parts]),
        keypoints=np.concatenate([p.keypoints for p in parts]),
    )
    return feats, float(np.median(times))


def build_map(path: Path, extractor: ClassicalExtractor, feats: Features) -> PlaceMap:
    place_map = PlaceMap.create(path, extractor)
    places = [
        PlaceInfo(stamp_ns=i, position=(float(i), 0.0, 0.0), orientation=(0.0, 0.0, 0.0, 1.0),
                  source="day_left", source_ref=f"Image{i:03d}.jpg")
        for i in range(len(feats))
    ]
    place_map.append(feats, places)
    return place_map


def recall(localizer: Localizer, queries: Features) -> tuple[float, float, float]:
    """R@1, R@5 and the median query time (search + re-rank) in ms."""
    hits1 = hits5 = 0
    times = []
    for q in range(len(queries)):
        result = localizer.query_features(queries.select(q))
        ids = [c.place_id for c in result.candidates[:5]]
        ok = [abs(i - q) <= TOLERANCE for i in ids]
        hits1 += bool(ok and ok[0])
        hits5 += any(ok)
        times.append(result.total_ms)
    n = len(queries)
    return hits1 / n, hits5 / n, float(np.median(times))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=0, help="first N images per folder (0=all)")
    parser.add_argument("--vocabulary-size", type=int, default=ClassicalConfig.vocabulary_size)
    parser.add_argument("--bin-sizes", default=",".join(map(str, ClassicalConfig.bin_sizes)))
    parser.add_argument("--step", type=int, default=ClassicalConfig.step)
    parser.add_argument("--long-side", type=int, default=ClassicalConfig.long_side)
    parser.add_argument("--contrast", type=float, default=ClassicalConfig.contrast_threshold)
    parser.add_argument("--local-stride", type=int, default=ClassicalConfig.local_stride)
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--rerank-k", type=int, nargs="*", default=[20])
    parser.add_argument("--filters", nargs="*", default=list(FILTERS), choices=list(FILTERS))
    parser.add_argument("--threads", type=int, default=1, help="torch threads for re-ranking")
    args = parser.parse_args()
    if not (args.data / "day_left").is_dir():
        print(f"Gardens Point not found at {args.data}", file=sys.stderr)
        return 2
    cv2.setNumThreads(1)
    torch.set_num_threads(args.threads)

    config = ClassicalConfig(
        vocabulary_size=args.vocabulary_size, step=args.step, long_side=args.long_side,
        bin_sizes=tuple(int(b) for b in args.bin_sizes.split(",")),
        contrast_threshold=args.contrast, local_stride=args.local_stride,
    )
    db = load(args.data / "day_left", args.limit)
    t0 = time.perf_counter()
    extractor = ClassicalExtractor(config).fit(db)
    fit_s = time.perf_counter() - t0
    db_feats, db_ms = extract_all(extractor, db)
    queries = {}
    for name in ("day_right", "night_right"):
        queries[name], q_ms = extract_all(extractor, load(args.data / name, args.limit))
        print(f"{name}: extraction median {q_ms:.1f} ms/image")
    info = extractor.info
    print(f"extractor {info.name}: global {info.global_dim}-d, {info.local_count} local "
          f"features, fit {fit_s:.1f} s on {len(db)} images, extraction median {db_ms:.1f} ms/"
          f"image (day_left, one thread), valid local fraction "
          f"{db_feats.local_mask.mean():.3f}")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        with build_map(Path(tmp) / "first", extractor, db_feats) as place_map:
            loc = Localizer(place_map, extractor, LocalizerConfig(top_k=args.top_k, rerank_k=0))
            for name, feats in queries.items():
                rows.append(("first stage", 0, name, *recall(loc, feats)))
                print(*rows[-1])
        for fname in args.filters:
            variant = ClassicalExtractor(
                dataclasses.replace(config, image_size=extractor.config.image_size,
                                    rerank=FILTERS[fname]),
                extractor.centroids,
            )
            with build_map(Path(tmp) / fname, variant, db_feats) as place_map:
                for k in args.rerank_k:
                    cfg = LocalizerConfig(top_k=max(args.top_k, k), rerank_k=k)
                    loc = Localizer(place_map, variant, cfg)
                    for name, feats in queries.items():
                        rows.append((f"rerank {fname}", k, name, *recall(loc, feats)))
                        print(*rows[-1])

    print("\n| stage | K | queries | R@1 | R@5 | query ms (median, search+rerank) |")
    print("|---|---|---|---|---|---|")
    for stage, k, name, r1, r5, ms in rows:
        print(f"| {stage} | {k or '-'} | {name} | {r1:.3f} | {r5:.3f} | {ms:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
