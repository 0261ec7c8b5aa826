#!/usr/bin/env python3
"""Merging two maps (``selavpr merge-maps``) vs building one of them.

Each input map is built the way ``build-map`` writes one: commits of ``--commit`` places through
``PlaceMap.append`` (flat index, sha256 of every file, fsync), from synthetic features; feature
extraction is left out, so the build time is a lower bound of a real build's. The two maps are
then merged with ``map.merge.merge_maps`` (files copied and checked, metadata renumbered, index
rebuilt). Local features are ``--local`` rows x dims fp16 per place (the default keeps 2 x 50k
places on a small disk; a SelaVPR place is 3721 x 128).

    python bench/bench_merge.py --places 50000 --local 64 64
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from selavpr_ros.extractors.base import ExtractorInfo, Features  # noqa: E402
from selavpr_ros.map import PlaceInfo, PlaceMap  # noqa: E402
from selavpr_ros.map.merge import merge_maps  # noqa: E402


def build(path: Path, info: ExtractorInfo, places: int, commit: int, seed: int) -> float:
    """Build a map of ``places`` places in commits of ``commit``; return the seconds taken."""
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    with PlaceMap.create(path, info) as pm:
        for start in range(0, places, commit):
            n = min(commit, places - start)
            g = rng.standard_normal((n, info.global_dim), dtype=np.float32)
            g /= np.linalg.norm(g, axis=1, keepdims=True)
            loc = rng.standard_normal((n, info.local_count, info.local_dim), dtype=np.float32)
            loc /= np.linalg.norm(loc, axis=2, keepdims=True)
            pm.append(Features(g, loc.astype(np.float16)), [
                PlaceInfo(stamp_ns=start + i, position=(float(start + i), float(seed), 0.0),
                          orientation=(0.0, 0.0, 0.0, 1.0), source=f"drive{seed}",
                          source_ref=str(start + i)) for i in range(n)])
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--places", type=int, default=5000, help="places per input map")
    parser.add_argument("--local", type=int, nargs=2, default=[64, 64], metavar=("L", "C"))
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--commit", type=int, default=100)
    parser.add_argument("--tmp", type=Path, default=None)
    args = parser.parse_args()
    info = ExtractorInfo("bench-merge", "random", args.dim, args.local[0], args.local[1])
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        root = Path(tmp)
        build_s = [build(root / f"in{i}", info, args.places, args.commit, i) for i in (1, 2)]
        print(f"built 2 x {args.places} places: {build_s[0]:.1f} s, {build_s[1]:.1f} s",
              flush=True)
        summary = merge_maps(root / "merged", [root / "in1", root / "in2"])
        disk = sum(f.stat().st_size for f in (root / "merged").rglob("*") if f.is_file())
        with PlaceMap.open(root / "merged") as pm:
            assert pm.count == 2 * args.places
    row = {"bench": "merge", "places_per_input": args.places, "local": args.local,
           "dim": args.dim, "commit": args.commit, "build_s": build_s,
           "merge_s": summary.seconds, "merged_bytes": disk,
           "merge_faster_than_build": summary.seconds < min(build_s)}
    print(f"merge of 2 x {args.places}: {summary.seconds:.1f} s (builds {build_s[0]:.1f} s, "
          f"{build_s[1]:.1f} s), {disk / 2**20:.0f} MiB")
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
