"""``selavpr map-info MAP [--json]``: what a place map holds, at a glance."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "map-info",
        help="print a place map's manifest and statistics",
        description="Print a place map's manifest (format, id, extractor, sizes, index) and "
                    "statistics of its places (time span, bounding box, sources, size on disk).",
    )
    parser.add_argument("map", metavar="MAP", help="place map directory")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--verify", action="store_true",
                        help="also check every file's sha256 (slow for large maps)")
    parser.set_defaults(handler=run)


def map_info(path: str | Path, verify: bool = False) -> dict[str, Any]:
    """Return the manifest plus statistics of the places of the map at ``path``."""
    from selavpr_ros.map import PlaceMap
    from selavpr_ros.mapping.builder import directory_size

    with PlaceMap.open(path, verify=verify) as place_map:
        m = place_map.manifest
        manifest = m.to_dict()
        stamps: list[int] = []
        positions: list[tuple[float, float, float]] = []
        sources: Counter[str] = Counter()
        count = place_map.count
        for start in range(0, count, 5000):
            for place in place_map.places(range(start, min(start + 5000, count))):
                if place.stamp_ns:
                    stamps.append(place.stamp_ns)
                if place.position is not None:
                    positions.append(place.position)
                sources[place.source] += 1
    stats: dict[str, Any] = {
        "places": count,
        "with_position": len(positions),
        "time_span": None,
        "bounding_box": None,
        "sources": dict(sources),
        "bytes_on_disk": directory_size(Path(path)),
        "verified": verify,
    }
    if stamps:
        stats["time_span"] = {"first_ns": min(stamps), "last_ns": max(stamps),
                              "seconds": (max(stamps) - min(stamps)) / 1e9}
    if positions:
        stats["bounding_box"] = {
            "min": [min(p[i] for p in positions) for i in range(3)],
            "max": [max(p[i] for p in positions) for i in range(3)],
        }
    return {
        "path": str(path),
        "format_version": manifest["format_version"],
        "map_id": m.map_id,
        "created": m.created,
        "modified": m.modified,
        "generation": m.generation,
        "map_frame": m.map_frame,
        "extractor": manifest["extractor"],
        "global": manifest["global"],
        "local": manifest["local"],
        "index": manifest["index"]["spec"],
        "provenance": manifest["provenance"],
        "statistics": stats,
    }


def _local_format(loc: dict[str, Any]) -> str:
    fmt = loc["format"]
    lossless = fmt["dtype"] in ("float16", "float32") and not fmt["pca_dim"] and fmt["stride"] == 1
    return (f"{fmt['name']} ({loc['stored_count']} x {loc['stored_dim']} {fmt['dtype']} per "
            f"place{', lossless' if lossless else ''})")


def _index(spec: dict[str, Any]) -> str:
    text = str(spec["kind"])
    if spec["kind"] in ("ivf", "ivfsq8", "ivfpq"):
        text += f", nlist {spec['nlist']}, nprobe {spec['nprobe']}, coarse {spec['coarse']}"
    elif spec["kind"] == "hnsw":
        text += f", efSearch {spec['ef_search']}"
    elif spec["kind"] == "pqfs":  # k_factor: absent from manifests older than pqfs
        text += f", {spec['pq_m']} x 4-bit PQ re-scored x{spec.get('k_factor', 1)} with SQ8"
    if spec.get("target_recall"):
        text += (f"; tuned for recall@100 {spec['target_recall']:.3f}, reached "
                 f"{spec['tuned_recall']:.3f} on held-out places")
    return text


def run(args: argparse.Namespace) -> int:
    from selavpr_ros.extractors.base import RerankSettings
    from selavpr_ros.mapping.builder import format_bytes

    info = map_info(args.map, verify=args.verify)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    ex, st = info["extractor"], info["statistics"]
    loc = info["local"]
    grid = "x".join(str(v) for v in loc["grid"]) if loc["grid"] else str(loc["count"])
    lines = [
        f"map         {info['path']}",
        f"format      version {info['format_version']}, id {info['map_id']}, generation "
        f"{info['generation']}",
        f"created     {info['created']}, modified {info['modified']}",
        f"extractor   {ex['name']} (fingerprint {ex['fingerprint']})",
        f"re-ranking  {RerankSettings.from_dict(ex.get('rerank', {})).describe()}",
        f"descriptors global {info['global']['dim']} float32; local {grid} x {loc['dim']} "
        f"{loc['dtype']}",
        f"local form  {_local_format(loc)}",
        f"index       {_index(info['index'])}",
        f"map frame   {info['map_frame']}",
        f"places      {st['places']} ({st['with_position']} with a position)",
    ]
    if st["time_span"]:
        span = st["time_span"]
        lines.append(f"time span   {span['first_ns'] / 1e9:.3f} .. {span['last_ns'] / 1e9:.3f} s "
                     f"({span['seconds']:.1f} s)")
    if st["bounding_box"]:
        lo, hi = st["bounding_box"]["min"], st["bounding_box"]["max"]
        lines.append("bounds      " + ", ".join(
            f"{axis} {a:.2f}..{b:.2f}" for axis, a, b in zip("xyz", lo, hi, strict=True)))
    for source, n in st["sources"].items():
        lines.append(f"source      {source or '(none)'}: {n}")
    for part in info["provenance"]:
        lines.append(f"merged from {part['path']} (map {part['map_id']}): ids {part['first_id']}"
                     f"..{part['first_id'] + part['places'] - 1}")
    lines.append(f"size        {format_bytes(st['bytes_on_disk'])}"
                 + (" (checksums verified)" if st["verified"] else ""))
    print("\n".join(lines))
    return 0
