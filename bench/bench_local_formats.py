#!/usr/bin/env python3
"""Compact local formats: bytes per place, Recall@1/5, MNN agreement and cold fetch time.

Three parts, each per local format (fp16 = the lossless reference):

- ``gardens_point``: the classical extractor on Gardens Point Walking (day_left is the map,
  day_right and night_right the queries, +-2 frames, the extractor's own re-rank settings),
  through ``PlaceMap`` and ``Localizer.query_features``: R@1/R@5 and local bytes per place.
- ``selavpr``: SelaVPR features (ViT-S, one block, 224 input: the 61x61x128 grid of the real
  model; random weights) of Gardens Point images: MNN counts of every query against every map
  place in each format vs fp16 (mean relative difference, top-1 and rank agreement), and bytes
  per place as stored.
- ``fetch``: K=100 candidates read from a map of synthetic SelaVPR-shaped places with a cold
  page cache (``posix_fadvise(DONTNEED)`` on every map file before each read) and warm.

    python bench/bench_local_formats.py [--parts gardens_point selavpr fetch]

Prints tables and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from selavpr_ros.extractors.base import Features  # noqa: E402
from selavpr_ros.map import PlaceInfo, PlaceMap  # noqa: E402
from selavpr_ros.map.local_format import LocalFormat  # noqa: E402
from selavpr_ros.matching import mnn_scores  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "gardens_point_walking"
FORMATS = ["fp16", "int8", "int4", "pca64", "pca64-int8", "pca64-int4", "pca64-int8/2"]
MIB = 2**20


def parse(name: str) -> LocalFormat:
    base, _, stride = name.partition("/")
    return LocalFormat.parse(base, int(stride or 1))


def places(n: int) -> list[PlaceInfo]:
    return [PlaceInfo(stamp_ns=i, position=(float(i), 0.0, 0.0),
                      orientation=(0.0, 0.0, 0.0, 1.0), source="bench", source_ref=str(i))
            for i in range(n)]


def make_map(path: Path, extractor: object, feats: Features, fmt: str) -> PlaceMap:
    pm = PlaceMap.create(path, extractor, local_format=parse(fmt))  # type: ignore[arg-type]
    for start in range(0, len(feats), 100):
        stop = min(len(feats), start + 100)
        pm.append(feats.select(slice(start, stop)), places(len(feats))[start:stop])
    return pm


def local_bytes_per_place(pm: PlaceMap) -> float:
    """Bytes of the stored local features (codes, scales, masks) per place, from the files."""
    total = sum(e.bytes for s in pm.manifest.segments for k, e in s.files.items()
                if k in ("local", "scale", "mask"))
    return total / max(1, pm.count)


def gardens_point(args: argparse.Namespace, tmp: Path) -> list[dict]:
    import eval_classical_gardens_point as gp
    from selavpr_ros.extractors.classical import ClassicalConfig, ClassicalExtractor
    from selavpr_ros.localizer import Localizer, LocalizerConfig

    db = gp.load(args.data / "day_left", args.limit)
    extractor = ClassicalExtractor(ClassicalConfig()).fit(db)
    cache = args.feature_cache / f"gp-classical-{args.limit}.npz" if args.feature_cache else None
    if cache is not None and cache.is_file():  # extraction is deterministic: reuse it
        data = np.load(cache)
        db_feats = Features(*(data[f"db_{k}"] for k in ("g", "l", "m", "k")))
        queries = {name: Features(*(data[f"{name}_{k}"] for k in ("g", "l", "m", "k")))
                   for name in ("day_right", "night_right")}
    else:
        db_feats, _ = gp.extract_all(extractor, db)
        queries = {name: gp.extract_all(extractor, gp.load(args.data / name, args.limit))[0]
                   for name in ("day_right", "night_right")}
        if cache is not None:
            arrays = {}
            for part, f in (("db", db_feats), *queries.items()):
                arrays.update({f"{part}_g": f.global_desc, f"{part}_l": f.local,
                               f"{part}_m": f.local_mask, f"{part}_k": f.keypoints})
            np.savez(cache, **arrays)
    rows = []
    for fmt in args.formats:
        if "/" in fmt:
            continue  # the classical extractor's features are not a dense grid
        with make_map(tmp / f"gp-{fmt}", extractor, db_feats, fmt) as pm:
            loc = Localizer(pm, extractor, LocalizerConfig(top_k=100, rerank_k=args.rerank_k))
            for name, feats in queries.items():
                r1, r5, ms = gp.recall(loc, feats)
                rows.append({"format": fmt, "queries": name, "r1": r1, "r5": r5,
                             "query_ms": ms, "local_bytes_per_place": local_bytes_per_place(pm)})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def selavpr_features(args: argparse.Namespace) -> tuple[object, Features, Features]:
    import eval_classical_gardens_point as gp
    from selavpr_ros.extractors.selavpr import SelaVPRExtractor
    from selavpr_ros.model import SelaVPR, SelaVPRConfig

    torch.manual_seed(0)
    model = SelaVPR(SelaVPRConfig(backbone="vits14", depth=1, image_size=224)).eval()
    extractor = SelaVPRExtractor(model, batch_size=4)
    names = sorted((args.data / "day_left").glob("*.jpg"))[: args.selavpr_places]
    db = [gp.read_image_file(p) for p in names]
    picks = np.linspace(0, args.selavpr_places - 1, args.selavpr_queries).round().astype(int)
    qnames = sorted((args.data / "day_right").glob("*.jpg"))
    queries = [gp.read_image_file(qnames[i]) for i in picks]
    return extractor, extractor.extract(db), extractor.extract(queries)


def ranks(x: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(-x, kind="stable"), kind="stable").astype(np.float64)


def selavpr(args: argparse.Namespace, tmp: Path) -> list[dict]:
    extractor, db, queries = selavpr_features(args)
    ids = np.arange(len(db))
    counts: dict[str, np.ndarray] = {}
    rows = []
    for fmt in args.formats:
        with make_map(tmp / f"sv-{fmt}", extractor, db, fmt) as pm:
            codes, scale, _ = pm.local_codes(ids)
            per_query = []
            t0 = time.perf_counter()
            for q in queries.local:
                qs, _ = pm.codec.query(q)
                per_query.append(mnn_scores(qs, codes, candidate_scale=scale))
            counts[fmt] = np.stack(per_query).astype(np.float64)
            rows.append({"format": fmt, "local_bytes_per_place": local_bytes_per_place(pm),
                         "local_mib_per_place": local_bytes_per_place(pm) / MIB,
                         "rerank_s_per_query": (time.perf_counter() - t0) / len(queries)})
    ref = counts["fp16"]
    for row in rows:
        c = counts[row["format"]]
        rel = np.abs(c - ref).sum() / ref.sum()
        spearman = float(np.mean([np.corrcoef(ranks(a), ranks(b))[0, 1]
                                  for a, b in zip(c, ref, strict=True)]))
        row.update(count_rel_diff=float(rel), mean_count=float(c.mean()),
                   top1_agreement=float(np.mean(c.argmax(1) == ref.argmax(1))),
                   rank_spearman=spearman)
        print(json.dumps(row), flush=True)
    return rows


def drop_cache(path: Path) -> None:
    for f in path.rglob("*"):
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def fetch(args: argparse.Namespace, tmp: Path) -> list[dict]:
    from selavpr_ros.extractors.base import ExtractorInfo

    info = ExtractorInfo("bench-selavpr-shape", "random", 1024, 61 * 61, 128, (61, 61))
    rng = np.random.default_rng(0)
    rows = []
    n, k = args.fetch_places, min(100, args.fetch_places)
    for fmt in args.formats:
        path = tmp / f"fetch-{fmt}"
        with PlaceMap.create(path, info, local_format=parse(fmt)) as pm:
            for start in range(0, n, 50):
                m = min(50, n - start)
                g = rng.standard_normal((m, 1024), dtype=np.float32)
                g /= np.linalg.norm(g, axis=1, keepdims=True)
                loc = rng.standard_normal((m, 61 * 61, 128), dtype=np.float32)
                loc /= np.linalg.norm(loc, axis=2, keepdims=True)
                pm.append(Features(g, loc), places(n)[start:start + m])
        cold, warm = [], []
        with PlaceMap.open(path) as pm:
            fm = pm.local_format
            shape = (k, fm.stored_count(info), fm.stored_dim(info))
            buf = np.empty(shape, fm.code_dtype)
            for _ in range(args.repeats):
                ids = rng.choice(n, k, replace=False)
                drop_cache(path)
                t0 = time.perf_counter()
                pm.local_codes(ids, out=buf)
                cold.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                pm.local_codes(ids, out=buf)
                warm.append(time.perf_counter() - t0)
        rows.append({"format": fmt, "k": k, "places": n,
                     "cold_ms": 1e3 * statistics.median(cold),
                     "warm_ms": 1e3 * statistics.median(warm),
                     "disk_bytes_per_place": sum(
                         f.stat().st_size for f in path.rglob("*") if f.is_file()) / n})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["gardens_point", "selavpr", "fetch"],
                        choices=["gardens_point", "selavpr", "fetch"])
    parser.add_argument("--formats", nargs="+", default=FORMATS)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=0, help="Gardens Point images per folder")
    parser.add_argument("--rerank-k", type=int, default=20)
    parser.add_argument("--selavpr-places", type=int, default=20)
    parser.add_argument("--selavpr-queries", type=int, default=5)
    parser.add_argument("--fetch-places", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tmp", type=Path, default=None, help="scratch directory (on the disk "
                        "to measure; default: the system's temporary directory)")
    parser.add_argument("--feature-cache", type=Path, default=None,
                        help="directory to keep Gardens Point classical features between runs")
    args = parser.parse_args()
    if "fp16" not in args.formats:
        args.formats.insert(0, "fp16")
    out: dict[str, object] = {"bench": "local_formats", "formats": args.formats}
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for part in args.parts:
            t0 = time.perf_counter()
            out[part] = globals()[part](args, Path(tmp))
            print(f"{part}: {time.perf_counter() - t0:.0f} s", flush=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
