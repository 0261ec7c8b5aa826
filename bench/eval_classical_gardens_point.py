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
    python bench/eval_classical_gardens_point.py --sweep 5 10 20 50 100 --threads 2 \
        [--map day_right --queries night_right]

``--sweep`` (the default filter only, the setting behind ``ClassicalConfig``'s re-ranking
depth): every query is re-ranked once at the largest K, and Recall@1 at each smaller K comes
from re-ordering the first K global candidates by the same rule as the localizer (MNN count,
then global similarity, then place id), since a candidate's count does not depend on K; the
seconds per query at each K are measured on ``--timing-queries`` real queries at that K
(extraction median + search + fetch + re-rank + decide), in wall time and in this process's
CPU time divided by the torch threads (an estimate of the wall time on an idle machine, since
the machine these figures come from is shared).
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
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


def sweep(localizer: Localizer, queries: Features, ks: list[int],
          step: int) -> dict[int, float]:
    """Recall@1 at every K in ``ks`` from one pass at the localizer's (largest) K.

    Query ``q`` is image ``q * step`` of its folder (the map has every image).
    """
    hits = dict.fromkeys([0, *ks], 0)
    for q in range(len(queries)):
        cands = localizer.query_features(queries.select(q)).candidates
        by_rank = sorted(cands, key=lambda c: c.global_rank)
        for k in hits:
            first = min(by_rank[:k], key=lambda c: (-c.rerank_score, -c.global_similarity,
                                                  c.place_id)) if k else by_rank[0]
            hits[k] += abs(first.place_id - q * step) <= TOLERANCE
    return {k: h / len(queries) for k, h in hits.items()}


def seconds_per_query(localizer: Localizer, queries: Features,
                      count: int) -> tuple[float, float]:
    """Median seconds of search + fetch + re-rank + decide over ``count`` spread queries.

    Returns wall seconds and CPU seconds of this process (all threads), both medians; on a
    shared machine the CPU seconds divided by the threads estimate the wall time when idle.
    """
    picks = np.linspace(0, len(queries) - 1, min(count, len(queries))).astype(int)
    wall, cpu = [], []
    for q in picks:
        c0 = time.process_time()
        wall.append(localizer.query_features(queries.select(int(q))).total_ms / 1e3)
        cpu.append(time.process_time() - c0)
    return float(np.median(wall)), float(np.median(cpu))


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
    parser.add_argument("--map", default="day_left", help="the map's folder")
    parser.add_argument("--queries", nargs="+", default=["day_right", "night_right"])
    parser.add_argument("--sweep", type=int, nargs="*", default=None,
                        help="Recall@1 and s/query at these K with the default filter")
    parser.add_argument("--timing-queries", type=int, default=20)
    parser.add_argument("--timing-only", action="store_true",
                        help="--sweep: seconds per query only (no Recall@1 pass)")
    parser.add_argument("--query-step", type=int, default=1,
                        help="--sweep: every N-th query image (the map keeps all)")
    args = parser.parse_args()
    if not (args.data / args.map).is_dir():
        print(f"Gardens Point not found at {args.data}", file=sys.stderr)
        return 2
    cv2.setNumThreads(1)
    torch.set_num_threads(args.threads)

    config = ClassicalConfig(
        vocabulary_size=args.vocabulary_size, step=args.step, long_side=args.long_side,
        bin_sizes=tuple(int(b) for b in args.bin_sizes.split(",")),
        contrast_threshold=args.contrast, local_stride=args.local_stride,
    )
    db = load(args.data / args.map, args.limit)
    t0 = time.perf_counter()
    extractor = ClassicalExtractor(config).fit(db)
    fit_s = time.perf_counter() - t0
    db_feats, db_ms = extract_all(extractor, db)
    queries = {}
    for name in args.queries:
        images = load(args.data / name, args.limit)[:: args.query_step if args.sweep else 1]
        queries[name], q_ms = extract_all(extractor, images)
        print(f"{name}: extraction median {q_ms:.1f} ms/image")
    info = extractor.info
    print(f"extractor {info.name}: global {info.global_dim}-d, {info.local_count} local "
          f"features, fit {fit_s:.1f} s on {len(db)} images, extraction median {db_ms:.1f} ms/"
          f"image ({args.map}, one thread), valid local fraction "
          f"{db_feats.local_mask.mean():.3f}")

    if args.sweep:
        return run_sweep(args, extractor, db_feats, queries, db_ms)
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


def run_sweep(args: argparse.Namespace, extractor: ClassicalExtractor, db_feats: Features,
              queries: dict[str, Features], extract_ms: float) -> int:
    """Recall@1 and seconds per query against the re-ranking depth, default filter."""
    ks = sorted(set(args.sweep))
    top_k = max(args.top_k, *ks)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, \
            build_map(Path(tmp) / "sweep", extractor, db_feats) as place_map:
        for name, feats in queries.items():
            deep = Localizer(place_map, extractor, LocalizerConfig(top_k=top_k, rerank_k=ks[-1]))
            recalls = ({} if args.timing_only else sweep(deep, feats, ks, args.query_step))
            for k in [0, *ks]:
                loc = Localizer(place_map, extractor, LocalizerConfig(top_k=top_k, rerank_k=k))
                wall, cpu = seconds_per_query(loc, feats, args.timing_queries)
                load = os.getloadavg()[0]
                rows.append((name, k, recalls.get(k, float("nan")), extract_ms / 1e3 + wall,
                             extract_ms / 1e3 + cpu / torch.get_num_threads(), load))
                print(*rows[-1], flush=True)
    print(f"\n| queries (map {args.map}, every {args.query_step}) | rerank K | R@1 | "
          "s/query (median) | CPU s / threads | load |")
    print("|---|---|---|---|---|---|")
    for name, k, r1, s, cpu_s, load in rows:
        print(f"| {name} | {k} | {r1:.3f} | {s:.3f} | {cpu_s:.3f} | {load:.1f} |")
    print(json.dumps({"bench": "classical_rerank_sweep", "map": args.map,
                      "query_step": args.query_step,
                      "filter": extractor.info.rerank.to_dict(), "top_k": top_k,
                      "threads": torch.get_num_threads(), "extract_ms": extract_ms,
                      "rows": [dict(zip(("queries", "k", "r1", "s_per_query",
                                         "cpu_s_per_thread", "load"), r, strict=True))
                               for r in rows], "load_avg": os.getloadavg()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
