"""Map on disk: bytes per place, open time, and fetching K candidates' local features.

Synthetic SelaVPR-shaped features (global 1024 fp32, local 61x61x128 stored fp16) are written
through :class:`PlaceMap` in commits of ``--commit`` places, so the files, manifest, index and
metadata are exactly what a real map holds. Fetch compares the previous gather (fancy index into
a temporary, then scattered) with the current one (one copy per place into a reused buffer),
interleaved; with ``--device cuda`` the device cache is built and gathered as well.

    python bench/bench_map.py --places 1000
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selavpr_ros.extractors.base import ExtractorInfo, Features  # noqa: E402
from selavpr_ros.localizer.cache import LocalFeatureCache  # noqa: E402
from selavpr_ros.map import PlaceInfo, PlaceMap  # noqa: E402

INFO = ExtractorInfo("selavpr-vitl14-224-synthetic", "random", 1024, 61 * 61, 128,
                     local_grid=(61, 61))


def legacy_gather(place_map: PlaceMap, ids: np.ndarray) -> np.ndarray:
    """Gather as before this change: fancy index per segment, scattered into the output."""
    arrays = place_map._arrays["local"]
    out = np.empty((len(ids), *arrays.row_shape), arrays.dtype)
    seg = np.searchsorted(np.asarray(arrays._starts), ids, side="right") - 1
    for s in np.unique(seg):
        rows = np.nonzero(seg == s)[0]
        local = ids[rows] - arrays._starts[s]
        order = np.argsort(local, kind="stable")
        out[rows[order]] = arrays._arrays[s][local[order]]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--places", type=int, default=1000)
    parser.add_argument("--commit", type=int, default=100, help="places per append")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cpu", help="device of the cache measurement")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: tmp)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "bench.selavpr"
        t0 = time.perf_counter()
        with PlaceMap.create(path, INFO) as pm:
            for start in range(0, args.places, args.commit):
                n = min(args.commit, args.places - start)
                g = rng.standard_normal((n, 1024), dtype=np.float32)
                g /= np.linalg.norm(g, axis=1, keepdims=True)
                loc = rng.standard_normal((n, 61 * 61, 128), dtype=np.float32)
                loc /= np.linalg.norm(loc, axis=2, keepdims=True)
                pm.append(Features(g, loc), [
                    PlaceInfo(stamp_ns=start + i, position=(float(i), 0.0, 0.0),
                              orientation=(0.0, 0.0, 0.0, 1.0)) for i in range(n)])
        build_s = time.perf_counter() - t0
        disk = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        opens, first_search = [], []
        query = rng.standard_normal((1, 1024), dtype=np.float32)
        for _ in range(5):
            t0 = time.perf_counter()
            with PlaceMap.open(path) as pm:
                pm.load_index()
                t1 = time.perf_counter()
                pm.search(query, args.k)
                first_search.append(time.perf_counter() - t1)
            opens.append(t1 - t0)
        fetch: dict[str, list[float]] = {"legacy": [], "buffer": []}
        cache_row: dict[str, float] = {}
        with PlaceMap.open(path) as pm:
            k = min(args.k, args.places)
            buf = np.empty((k, 61 * 61, 128), np.float16)
            for _ in range(args.repeats):
                ids = rng.choice(args.places, k, replace=False)
                t0 = time.perf_counter()
                want = legacy_gather(pm, ids)
                t1 = time.perf_counter()
                got = pm.features(ids, local_out=buf).local
                fetch["buffer"].append(time.perf_counter() - t1)
                fetch["legacy"].append(t1 - t0)
                assert np.array_equal(want, got)
            device = torch.device(args.device)
            t0 = time.perf_counter()
            cache = LocalFeatureCache.build(pm, device, 2**40)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            cache_row["build_s"] = time.perf_counter() - t0
            if cache is not None:
                gathers = []
                for _ in range(args.repeats):
                    ids = rng.choice(args.places, k, replace=False)
                    t0 = time.perf_counter()
                    cache.gather(ids)
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    gathers.append(time.perf_counter() - t0)
                cache_row["gather_ms"] = 1e3 * statistics.median(gathers)
                cache_row["mib"] = cache.nbytes / 2**20
    row = {
        "bench": "map", "places": args.places, "commit": args.commit, "k": k,
        "build_s": build_s, "disk_bytes_per_place": disk / args.places,
        "open_ms": 1e3 * statistics.median(opens),
        "first_search_ms": 1e3 * statistics.median(first_search),
        "fetch_legacy_ms": 1e3 * statistics.median(fetch["legacy"]),
        "fetch_ms": 1e3 * statistics.median(fetch["buffer"]),
        "cache_device": args.device, "cache": cache_row,
    }
    print(f"{args.places} places: {row['disk_bytes_per_place'] / 2**20:.3f} MiB/place on disk, "
          f"open {row['open_ms']:.1f} ms, first search {row['first_search_ms']:.1f} ms; "
          f"fetch K={k}: legacy {row['fetch_legacy_ms']:.1f} ms, now {row['fetch_ms']:.1f} ms; "
          f"cache on {args.device}: {cache_row}")
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
