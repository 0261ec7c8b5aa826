"""Latency of the localizer's decide stage: final candidates, their metadata and the decision.

A map of ``--places`` places with tiny descriptors (so that extraction and re-ranking cost
nothing) is queried through :meth:`Localizer.query_features` at ``top_k = rerank_k``; the
decide stage is the part of a query after re-ranking (reading the candidates' metadata,
building the result, the distinct-candidate search and the confidence). One place in five has
no position, so both margin rules (metres and id distance) run.

    python bench/bench_decide.py --places 300 --queries 300 --top-k 100
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selavpr_ros.extractors.base import Extractor, ExtractorInfo, Features  # noqa: E402
from selavpr_ros.localizer import Localizer, LocalizerConfig  # noqa: E402
from selavpr_ros.map import PlaceInfo, PlaceMap  # noqa: E402

INFO = ExtractorInfo("bench-decide", "none", 32, 4, 8)


class _GivenFeatures(Extractor):
    """The bench hands features to the localizer; there are no images to extract from."""

    @property
    def info(self) -> ExtractorInfo:
        return INFO

    def extract(self, images: Sequence[np.ndarray]) -> Features:
        raise NotImplementedError("bench_decide passes features")


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--places", type=int, default=300)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--top-k", type=int, default=100)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    n = args.places
    glob = _unit(rng.standard_normal((n, INFO.global_dim)))
    local = _unit(rng.standard_normal((n, INFO.local_count, INFO.local_dim)))
    places = [PlaceInfo(stamp_ns=i, source="bench",
                        position=None if i % 5 == 0 else (1.5 * i, 0.0, 0.0),
                        orientation=None if i % 5 == 0 else (0.0, 0.0, 0.0, 1.0))
              for i in range(n)]
    top_k = min(args.top_k, n)
    config = LocalizerConfig(top_k=top_k, rerank_k=top_k, min_margin=0.0)
    stages: dict[str, list[float]] = {}
    accepted = 0
    with tempfile.TemporaryDirectory() as tmp:
        with PlaceMap.create(Path(tmp) / "bench.selavpr", INFO, local_dtype="float32") as pm:
            pm.append(Features(glob, local), places)
        with PlaceMap.open(Path(tmp) / "bench.selavpr") as place_map:
            localizer = Localizer(place_map, _GivenFeatures(), config)
            for q in range(args.queries + 5):
                target = q % n
                noise_g = 0.3 * rng.standard_normal(INFO.global_dim)
                noise_l = 0.3 * rng.standard_normal(local.shape[1:])
                query = Features(_unit(glob[target] + noise_g)[None],
                                 _unit(local[target] + noise_l)[None])
                result = localizer.query_features(query)
                if q < 5:  # warm-up
                    continue
                accepted += result.accepted
                for name, ms in result.stages:
                    stages.setdefault(name, []).append(ms)
    summary = {name: {"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95))}
               for name, v in stages.items()}
    print(f"{n} places, top_k = rerank_k = {top_k}, {args.queries} queries "
          f"({accepted} accepted); load average {os.getloadavg()[0]:.2f}, OMP_WAIT_POLICY "
          f"{os.environ.get('OMP_WAIT_POLICY', 'default')}")
    print(f"{'stage':<10}{'p50 ms':>10}{'p95 ms':>10}")
    for name, s in summary.items():
        print(f"{name:<10}{s['p50']:>10.3f}{s['p95']:>10.3f}")
    print(json.dumps({"bench": "decide", "places": n, "top_k": top_k, "queries": args.queries,
                      "accepted": accepted, "decide_ms": summary["decide"],
                      "stages_ms": summary, "load_avg": os.getloadavg()[0],
                      "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
