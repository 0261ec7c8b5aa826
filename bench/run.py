"""Run every benchmark of the project and write one JSON and one Markdown table.

    python bench/run.py                                    # CPU defaults, about 15 minutes
    python bench/run.py --device cuda --sections extraction,feature_error,mnn,ransac
    python bench/run.py --search-sizes 1000 10000 100000 1000000
    python bench/run.py --device cuda --sections runner,localizer,map,mnn
    python bench/run.py --device cuda --sections mnn_fused --k 100   # needs triton, not faiss

Each section runs its bench script (bench/bench_*.py) in a fresh process, so one section's
memory peak and threads do not leak into the next, and reads the JSON line it prints last.
Sections whose modules are missing (faiss for search, rclpy for the node) are skipped with a
note rather than failing the run. Ours and the reference are always timed in the same process,
interleaved, so ratios hold even when the machine is shared; absolute times vary. Output:
``bench_results/<UTC timestamp>.json`` and ``.md`` (the directory is git-ignored).
Model weights are random in every section: timings only, never recognition quality.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))

import headline  # noqa: E402  (bench/headline.py)


def machine(device: str) -> dict[str, Any]:
    """CPU, GPU and library versions, and the load when the run started."""
    import numpy
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(), "torch": torch.__version__,
        "numpy": numpy.__version__, "platform": platform.platform(),
        "load_avg_start": os.getloadavg(),
    }
    for mod in ("faiss", "cv2"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = None
    info["gpu"] = torch.cuda.get_device_name(0) if device == "cuda" else None
    if device == "cuda":
        info["cuda"] = torch.version.cuda
    try:
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        info["ram_gib"] = round(int(mem) / 2**20, 1)
    except (OSError, IndexError):
        pass
    return info


def run_script(name: str, args: list[str], timeout: float) -> dict[str, Any]:
    """Run bench/<name> and return its last JSON line (or an error record)."""
    cmd = [sys.executable, str(BENCH / name), *args]
    start = time.perf_counter()
    print(f"$ {' '.join(cmd[1:])}", flush=True)
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "cmd": cmd[1:]}
    wall = time.perf_counter() - start
    print(proc.stdout, end="", flush=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-800:]}",
                "cmd": cmd[1:]}
    result = json.loads(lines[-1])
    result.update(cmd=cmd[1:], wall_s=wall, returncode=proc.returncode)
    return result


# --- what each section runs ----------------------------------------------------------------

def _extraction_args(args: argparse.Namespace) -> list[list[str]]:
    precisions = ["fp32", "bf16"] if args.device == "cpu" else ["fp16", "bf16", "fp32"]
    iters = ["--iters", str(args.iters), "--warmup", "1", "--backbone", args.backbone]
    if args.depth:
        iters += ["--depth", str(args.depth)]
    return [["--device", args.device, "--precision", p, "--batch", *map(str, args.batches),
             *iters] for p in precisions]


def _feature_error_args(args: argparse.Namespace) -> list[list[str]]:
    return [["--device", args.device, "--backbone", args.backbone]]


def _mnn_args(args: argparse.Namespace) -> list[list[str]]:
    ks = list(map(str, args.k))
    return [["--device", args.device, "--k", *ks, "--reference-k", *ks,
             "--repeats", str(args.repeats), "--grid", str(args.grid)]]


def _mnn_fused_args(args: argparse.Namespace) -> list[list[str]]:
    """GPU only (the script reports itself skipped without CUDA); K = the largest --k."""
    return [["--k", str(max(args.k)), "--grid", str(args.grid),
             "--repeats", str(max(20, args.repeats))]]


def _mnn_gemm_args(args: argparse.Namespace) -> list[list[str]]:
    return [["--k", str(max(args.k)), "--repeats", str(args.repeats), "--grid", str(args.grid),
             "--filter", f, "--bf16"] for f in ("none", "ratio")]


def _classical_rerank_args(args: argparse.Namespace) -> list[list[str]]:
    """Classical extractor on Gardens Point: Recall@1 and s/query against the depth."""
    data = ["--data", str(args.gardens_point)] if args.gardens_point else []
    sweep = ["--sweep", "5", "10", "20", "50", "100", "--threads", "2", "--timing-queries",
             "10", "--query-step", str(args.query_step)]
    return [[*data, *sweep], [*data, *sweep, "--map", "day_right", "--queries", "night_right"]]


def _ransac_args(args: argparse.Namespace) -> list[list[str]]:
    return [["--device", args.device, "--k", *map(str, args.k), "--repeats",
             str(args.repeats), "--grid", str(args.grid)]]


def _search_args(args: argparse.Namespace) -> list[list[str]]:
    return [["--sizes", *map(str, args.search_sizes), "--kinds", *args.search_kinds,
             "--queries", str(args.queries)]]


def _runner_args(args: argparse.Namespace) -> list[list[str]]:
    """End to end from uint8, eager vs CUDA graphs."""
    cuda = args.device == "cuda"
    extra = ["--depth", str(args.depth)] if args.depth else []
    return [["--device", args.device, "--backbone", args.backbone, *extra,
             "--precisions", *(["fp16", "fp32", "fp32-tf32"] if cuda else ["fp32"]),
             "--batch", *map(str, args.batches if cuda else [1]),
             "--iters", str(30 if cuda else args.iters)]]


def _sweep_args(args: argparse.Namespace) -> list[list[str]]:
    return [["--size", str(max(args.search_sizes)), "--kinds", "ivf", "hnsw",
             "--queries", str(args.queries)]]


def _localizer_args(args: argparse.Namespace) -> list[list[str]]:
    cuda = args.device == "cuda"
    extra = ["--depth", str(args.depth)] if args.depth else []
    return [["--device", args.device, "--precision", "fp16" if cuda else "fp32",
             "--backbone", args.backbone, *extra,
             "--places", str(args.localizer_places or (300 if cuda else 40)),
             "--queries", str(50 if cuda else 5)]]


def _decide_args(args: argparse.Namespace) -> list[list[str]]:
    return [["--places", "300", "--top-k", "100", "--queries", str(args.queries)]]


def _map_args(args: argparse.Namespace) -> list[list[str]]:
    return [["--places", str(args.map_places), "--device", args.device]]


def _node_args(args: argparse.Namespace) -> list[list[str]]:
    return [["--device", args.device, "--precision",
             "fp16" if args.device == "cuda" else "fp32",
             "--rates", "10", "30", "--seconds", str(args.node_seconds)]]


def _formats_args(args: argparse.Namespace) -> list[list[str]]:
    """Local formats: bytes, recall, MNN agreement, cold fetch."""
    return [["--selavpr-places", str(args.format_places),
             "--fetch-places", str(max(100, args.format_places))]]


def _search_auto_args(args: argparse.Namespace) -> list[list[str]]:
    """Build-map --index auto at the largest sizes."""
    return [["--sizes", *map(str, args.auto_sizes), "--queries", str(args.queries)]]


def _descriptor_stats_args(args: argparse.Namespace) -> list[list[str]]:
    """Route structure of the synthetic map against Gardens Point VLAD descriptors."""
    return [["--places", str(max(args.auto_sizes)), "--queries", str(args.queries)]]


def _merge_args(args: argparse.Namespace) -> list[list[str]]:
    return [["--places", str(args.merge_places)]]


# --- how each section is written in Markdown -------------------------------------------------

def fmt(value: Any, spec: str = ".2f") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def _extraction_md(report: dict[str, Any], runs: list[dict[str, Any]]) -> list[str]:
    lines = [f"## Extraction ({report['args']['backbone']}, 224x224, random weights)", "",
             "| precision | batch | ours img/s | reference img/s | ours/ref | ours ms/img |"
             " ours peak MiB | ref peak MiB |", "|---|---|---|---|---|---|---|---|"]
    for run in runs:
        if "error" in run:
            lines.append(f"| ? | | error: {run['error'][:80]} | | | | | |")
            continue
        for batch in sorted({r["batch"] for r in run["results"]}):
            r = {x["impl"]: x for x in run["results"] if x["batch"] == batch}
            o, f = r["ours"], r.get("reference", {})
            lines.append(
                f"| {run['precision']} | {batch} | {o['images_per_s']:.2f} | "
                f"{fmt(f.get('images_per_s'))} | "
                f"{fmt(run['ours_over_reference'].get(str(batch)))}x | "
                f"{o['ms_per_batch'] / batch:.1f} | {fmt(o['peak_mib'], '.0f')} | "
                f"{fmt(f.get('peak_mib'), '.0f')} |")
    return lines + ["", "Reference: a straightforward forward (naive attention, position "
                    "embedding resized every call), same weights, same process, interleaved; "
                    "peak = process RSS high-water mark (CPU) or max allocated (CUDA).", ""]


def _feature_error_md(report: dict[str, Any], d: dict[str, Any]) -> list[str]:
    lines = ["## Reduced-precision feature error vs fp32 (random weights)", "",
             "| precision | global cos min | local cos min | local cos mean | "
             "local max abs |", "|---|---|---|---|---|"]
    for r in d["rows"]:
        lines.append(f"| {r['precision']} | {r['global_cos_min']:.6f} | "
                     f"{r['local_cos_min']:.6f} | {r['local_cos_mean']:.6f} | "
                     f"{r['local_max_abs']:.4f} |")
    return lines + [""]


def _mnn_md(report: dict[str, Any], d: dict[str, Any]) -> list[str]:
    lines = [f"## MNN re-ranking ({d['grid']}x{d['grid']}x{d['dim']}, {d['device']}, "
             f"{d['precision']}, "
             f"median of {report['args']['repeats']})", "",
             "| K | ours s | reference s | ref/ours (speed-up) | ours MiB | reference MiB |"
             " memory ours/ref | identical counts |", "|---|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        speed = r["ref_s"] / r["ours_s"] if r["ref_s"] else None
        lines.append(f"| {r['k']} | {r['ours_s']:.3f} | {fmt(r['ref_s'], '.3f')} | "
                     f"{fmt(speed)}x | {r['ours_mib']:.0f} | {fmt(r['ref_mib'], '.0f')} | "
                     f"{fmt(r['memory_ratio'], '.3f')} | {fmt(r['counts_equal'])} |")
    return lines + ["", "Reference: one unchunked (K, 3721, 3721) product and two arg-maxima. "
                    "Memory: growth of the peak RSS (CPU) / max allocated (CUDA) during one "
                    "call.", ""]


def _mnn_fused_md(report: dict[str, Any], d: dict[str, Any]) -> list[str]:
    lines = [f"## Fused GPU MNN re-ranking (Triton) vs unfused, K={d['k']}, "
             f"{d['grid']}x{d['grid']}x{d['dim']}, fp16, {d['device']}", "",
             "| candidates | pairs kept | fused ms | unfused ms | speed-up | counts identical "
             "(candidates differing) | first fused call ms |", "|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        lines.append(f"| {r['case']} | {r['pairs']} | {r['fused_ms']:.3f} | "
                     f"{r['unfused_ms']:.3f} | {r['speedup']:.2f}x | {r['counts_identical']} "
                     f"({r['candidates_differing']}) | {r['first_call_ms']:.0f} |")
    plain = next(r for r in d["rows"] if r["case"] == "fp16" and not r["pairs"])
    met = "met" if plain["fused_ms"] <= d["target_ms"] and plain["counts_identical"] else "not met"
    check = d.get("integer_check", {})
    return lines + ["", "Correctness on integer features (exact products, ties): fused = "
                    f"chunked fp16: {check.get('fused_equals_chunked_fp16')}, fused = exact "
                    f"CPU fp32: {check.get('fused_equals_exact_cpu')}.", "",
                    f"Target re-rank <= {d['target_ms']:.0f} ms with identical counts: "
                    f"**{met}** ({plain['fused_ms']:.3f} ms). Median of {d['repeats']}, "
                    "interleaved, device synchronised, counts copied back; unfused = the "
                    "chunked method (one (K, L, L) fp16 product, two arg-maxima); first call = "
                    f"compile + autotune (chose {d.get('best_config')}); triton "
                    f"{d.get('triton')}.", ""]


def _mnn_gemm_md(report: dict[str, Any], runs: list[dict[str, Any]]) -> list[str]:
    lines = ["## Exact fp32 MNN re-ranking vs this CPU's fp32 GEMM (same run, same shapes)", "",
             "| K | grid | filter | GEMM full GFLOP/s | GEMM blocked GFLOP/s | ours GFLOP/s | "
             "ours / faster GEMM | load |", "|---|---|---|---|---|---|---|---|"]
    for d in runs:
        if "error" in d:
            lines.append(f"| – | – | – | not measured: {d['error']} | | | | |")
            continue
        g = d["gflops"]
        lines.append(f"| {d['k']} | {d['grid']} | {d['filter']} | {g['gemm_full']:.1f} | "
                     f"{g['gemm_blocked']:.1f} | {g['ours']:.1f} | {100 * d['ratio']:.0f} % | "
                     f"{d['load_avg'][0]:.1f}-{d['load_avg'][1]:.1f} |")
    lines += ["", "GEMM full: torch.mm per candidate into one (L, L) output; blocked: "
              "the tiled method's row blocks, products only.", ""]
    for d in runs:
        b = d.get("bf16")
        if b:
            native = "native" if b["native"] else "emulated: no bf16 instructions"
            lines += [f"bf16 re-ranking ({native}, filter {d['filter']}): "
                      f"{b['speedup_over_fp32_ours']:.2f}x the exact fp32 re-ranking (blocked "
                      f"products {b['speedup_over_fp32_blocked']:.2f}x); MNN counts vs fp32 on "
                      f"{b['candidates']} candidates: mean |diff| {b['mean_abs_count_diff']:.1f} "
                      f"of {b['mean_fp32_count']:.0f} (agreement {100 * b['agreement']:.2f} %).",
                      ""]
    return lines


def _classical_rerank_md(report: dict[str, Any], runs: list[dict[str, Any]]) -> list[str]:
    lines = ["## Classical extractor: re-ranking depth on Gardens Point (default filter)", "",
             "| map | queries | K | R@1 | s/query | CPU s / threads | load |",
             "|---|---|---|---|---|---|---|"]
    for d in runs:
        if "error" in d:
            lines.append(f"| – | – | – | not measured: {d['error']} | |")
            continue
        for r in d["rows"]:
            lines.append(f"| {d['map']} | {r['queries']} (every {d['query_step']}) | {r['k']} | "
                         f"{r['r1']:.3f} | {r['s_per_query']:.3f} | "
                         f"{r['cpu_s_per_thread']:.3f} | {r['load']:.1f} |")
    return lines + ["", "s/query: extraction median + search + fetch + re-rank + decide, "
                    "median over 10 queries per K; CPU s / threads: the same in process CPU "
                    "time over the torch threads (an idle-machine estimate).", ""]


def _ransac_md(report: dict[str, Any], d: dict[str, Any]) -> list[str]:
    lines = [f"## MNN count vs MNN + RANSAC (same candidates, {d['device']})", "",
             "| K | MNN count s | RANSAC s (findFundamentalMat per candidate) | "
             "MNN + RANSAC s | MNN share |", "|---|---|---|---|---|"]
    for r in d["rows"]:
        lines.append(f"| {r['k']} | {r['mnn_count_s']:.3f} | {r['ransac_s']:.3f} | "
                     f"{r['mnn_plus_ransac_s']:.3f} | "
                     f"{100 * r['mnn_share_of_two_stage']:.0f} % |")
    return lines + [""]


def _search_md(report: dict[str, Any], d: dict[str, Any]) -> list[str]:
    lines = [f"## Global search (D={d['dim']}, single queries, recall@{d['k']} vs exact,"
             f" {d['threads']} threads, synthetic route-structured map)", "",
             "| places | index | nlist | build s | query ms | bytes/place | recall@K |",
             "|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        lines.append(f"| {r['places']} | {r['kind']} | {fmt(r['nlist'])} | "
                     f"{r['build_s']:.2f} | {r['query_ms']:.3f} | "
                     f"{r['bytes_per_place']:.0f} | {fmt(r['recall_at_k'], '.4f')} |")
    return lines + [""]


def _runner_md(report: dict[str, Any], d: dict[str, Any]) -> list[str]:
    lines = [f"## Extraction end to end ({d['backbone']}, uint8 {d['image_hw'][0]}x"
             f"{d['image_hw'][1]} in, features on the host, {d['device']})", "",
             "| precision | batch | eager ms/img | CUDA graph ms/img | speed-up | "
             "graph p95 ms | max abs diff | capture failed |", "|---|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        lines.append(f"| {r['precision']} | {r['batch']} | {r['eager_ms_per_img']:.2f} | "
                     f"{r['graph_ms_per_img']:.2f} | {r['speedup']:.2f}x | "
                     f"{r['graph_p95_ms']:.2f} | {r['max_abs_diff']:.1e} | "
                     f"{r['graph_failed']} |")
    return lines + ["", "On the CPU both columns run eagerly (graphs are CUDA only).", ""]


def _sweep_md(report: dict[str, Any], d: dict[str, Any]) -> list[str]:
    lines = [f"## IVF nprobe / HNSW efSearch sweep ({d['places']} places, recall@{d['k']}, "
             f"flat {d['flat_query_ms']:.1f} ms/query)", "",
             "| index | nlist | nprobe / efSearch | query ms | recall@K |",
             "|---|---|---|---|---|"]
    for r in d["rows"]:
        lines.append(f"| {r['kind']} | {fmt(r['nlist'])} | {r['setting']} | "
                     f"{r['query_ms']:.2f} | {r['recall_at_k']:.4f} |")
    return lines + [""]


def _localizer_md(report: dict[str, Any], d: dict[str, Any]) -> list[str]:
    lines = [f"## In-process localizer ({d['backbone']} {d['precision']} on {d['device']}"
             f" {d['gpu']}, {d['places']} places, top_k {d['top_k']}, random weights)", "",
             "| stage | p50 ms | p95 ms |", "|---|---|---|"]
    for name, r in d["stages_ms"].items():
        lines.append(f"| {name} | {r['p50']:.2f} | {r['p95']:.2f} |")
    return lines + [""]


def _decide_md(report: dict[str, Any], d: dict[str, Any]) -> list[str]:
    r = d["decide_ms"]
    return [f"## Decide stage ({d['places']} places, top_k = rerank_k = {d['top_k']}, "
            f"{d['queries']} queries, CPU)", "",
            "| decide p50 ms | p95 ms | target | load | OMP_WAIT_POLICY |",
            "|---|---|---|---|---|",
            f"| {r['p50']:.3f} | {r['p95']:.3f} | <= 0.3 | {d['load_avg']:.2f} | "
            f"{d['omp_wait_policy']} |", ""]


def _map_md(report: dict[str, Any], d: dict[str, Any]) -> list[str]:
    return [f"## Map on disk ({d['places']} synthetic SelaVPR places, commits of "
            f"{d['commit']})", "",
            "| MiB/place on disk | open ms | first search ms | fetch K="
            f"{d['k']} before ms | fetch now ms | cache on {d['cache_device']} |",
            "|---|---|---|---|---|---|",
            f"| {d['disk_bytes_per_place'] / 2**20:.3f} | {d['open_ms']:.1f} | "
            f"{d['first_search_ms']:.2f} | {d['fetch_legacy_ms']:.1f} | "
            f"{d['fetch_ms']:.1f} | {d['cache']} |", ""]


def _node_md(report: dict[str, Any], d: dict[str, Any]) -> list[str]:
    lines = [f"## localizer_node over DDS ({d['model']}, {d['device']}, "
             f"{d['frame_hw'][1]}x{d['frame_hw'][0]} rgb8)", "",
             "| rate Hz | sent | answered | dropped | p50 ms | p95 ms | p99 ms | "
             "node dropped | node received | node CPU % of a core |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        lines.append(f"| {r['rate_hz']:.0f} | {r['sent']} | {r['answered']} | "
                     f"{r['dropped']} | {fmt(r.get('p50_ms'), '.1f')} | "
                     f"{fmt(r.get('p95_ms'), '.1f')} | {fmt(r.get('p99_ms'), '.1f')} | "
                     f"{fmt(r.get('node_frames_dropped'))} | "
                     f"{fmt(r.get('node_frames_received'))} | "
                     f"{fmt(r.get('node_cpu_percent'), '.0f')} |")
    return lines + [""]


def _formats_md(report: dict[str, Any], d: dict[str, Any]) -> list[str]:
    lines = ["## Local formats (bytes per place, recall, MNN agreement, fetch K=100)", "",
             "| format | GP queries | R@1 | R@5 | local bytes/place (classical) |",
             "|---|---|---|---|---|"]
    for r in d.get("gardens_point", []):
        lines.append(f"| {r['format']} | {r['queries']} | {r['r1']:.3f} | {r['r5']:.3f} | "
                     f"{r['local_bytes_per_place']:.0f} |")
    lines += ["", "| format | SelaVPR MiB/place | count rel. diff | top-1 agree | "
              "rank Spearman |", "|---|---|---|---|---|"]
    for r in d.get("selavpr", []):
        lines.append(f"| {r['format']} | {r['local_mib_per_place']:.3f} | "
                     f"{r['count_rel_diff']:.4f} | {r['top1_agreement']:.2f} | "
                     f"{r['rank_spearman']:.3f} |")
    lines += ["", "| format | fetch cold ms | fetch warm ms | disk bytes/place |",
              "|---|---|---|---|"]
    for r in d.get("fetch", []):
        lines.append(f"| {r['format']} | {r['cold_ms']:.1f} | {r['warm_ms']:.1f} | "
                     f"{r['disk_bytes_per_place']:.0f} |")
    return lines + [""]


def _search_auto_md(report: dict[str, Any], d: dict[str, Any]) -> list[str]:
    lines = ["## Tuned index (--index auto, target recall@100 on held-out places)", "",
             "| places | kind | setting | held-out recall | query ms | recall@100 | "
             "recall of neighbours within 20 places | index MiB | build s | load |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        setting = (f"nlist {r['nlist']}, nprobe {r['nprobe']}" if r["kind"] != "pqfs" else
                   f"PQ{r['pq_m']}x4, k_factor {r['k_factor']}")
        lines.append(f"| {r['places']} | {r['kind']} | {setting} | "
                     f"{r['held_out_recall']:.4f} | {r['query_ms']:.2f} | "
                     f"{r['recall_at_k']:.4f} | {r['recall_of_near']:.4f} | "
                     f"{r['index_bytes'] / 2**20:.0f} | {r['build_s']:.0f} | "
                     f"{max(r['load_average']):.1f} |")
    return lines + [""]


def _descriptor_stats_md(report: dict[str, Any], d: dict[str, Any]) -> list[str]:
    names = list(d["rows"])
    keys = sorted({k for r in d["rows"].values() for k in r})
    lines = ["## Synthetic vs real descriptor statistics", "",
             "| statistic | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(
            fmt(d["rows"][n].get(key), ".4f") for n in names) + " |")
    return lines + [""]


def _merge_md(report: dict[str, Any], d: dict[str, Any]) -> list[str]:
    return [f"## Merging two maps of {d['places_per_input']} places", "",
            f"merge {d['merge_s']:.1f} s; building each: "
            + ", ".join(f"{b:.1f} s" for b in d["build_s"]), ""]


@dataclass(frozen=True)
class Section:
    """One benchmark section: the script it runs, with which arguments, and its Markdown.

    ``arguments`` gives one argument list per run of ``script``; a section with several runs
    (extraction: one per precision) keeps their results as a list. ``title`` heads the note of
    a section that was skipped or failed.
    """

    script: str
    arguments: Callable[[argparse.Namespace], list[list[str]]]
    render: Callable[[dict[str, Any], Any], list[str]]
    title: str
    needs: str | None = None
    timeout_factor: float = 1.0
    several: bool = False


# in the order of the Markdown report
TABLE: dict[str, Section] = {
    "extraction": Section("bench_model.py", _extraction_args, _extraction_md,
                          "Extraction (ViT-L/14, 224x224)", several=True),
    "feature_error": Section("bench_feature_error.py", _feature_error_args, _feature_error_md,
                             "Reduced-precision feature error"),
    "mnn": Section("bench_matching.py", _mnn_args, _mnn_md, "MNN re-ranking"),
    "mnn_fused": Section("bench_mnn_fused.py", _mnn_fused_args, _mnn_fused_md,
                         "Fused GPU MNN re-ranking (Triton)"),
    "mnn_gemm": Section("bench_mnn_gemm.py", _mnn_gemm_args, _mnn_gemm_md,
                        "MNN vs GEMM throughput", several=True),
    "classical_rerank": Section("eval_classical_gardens_point.py", _classical_rerank_args,
                                _classical_rerank_md, "Classical re-ranking depth",
                                needs="faiss", timeout_factor=2, several=True),
    "ransac": Section("bench_ransac.py", _ransac_args, _ransac_md,
                      "MNN vs spatial verification"),
    "search": Section("bench_search.py", _search_args, _search_md, "Global search",
                      needs="faiss", timeout_factor=4),
    "runner": Section("bench_runner.py", _runner_args, _runner_md,
                      "Extraction end to end (InferenceRunner)"),
    "sweep": Section("bench_search_sweep.py", _sweep_args, _sweep_md, "Search parameter sweep",
                     needs="faiss", timeout_factor=4),
    "localizer": Section("bench_localizer.py", _localizer_args, _localizer_md,
                         "In-process localizer", needs="faiss"),
    "decide": Section("bench_decide.py", _decide_args, _decide_md, "Decide stage",
                      needs="faiss"),
    "map": Section("bench_map.py", _map_args, _map_md, "Map on disk", needs="faiss"),
    "formats": Section("bench_local_formats.py", _formats_args, _formats_md, "Local formats",
                       needs="faiss", timeout_factor=2),
    "descriptor_stats": Section("bench_descriptor_stats.py", _descriptor_stats_args,
                                _descriptor_stats_md, "Synthetic vs real descriptors",
                                needs="faiss", timeout_factor=2),
    "search_auto": Section("bench_search_auto.py", _search_auto_args, _search_auto_md,
                           "Tuned index (--index auto)", needs="faiss", timeout_factor=4),
    "merge": Section("bench_merge.py", _merge_args, _merge_md, "Merging maps", needs="faiss",
                     timeout_factor=2),
    "node": Section("bench_node.py", _node_args, _node_md, "End-to-end node latency",
                    needs="rclpy"),
}
# the order the sections run in by default
SECTIONS = ("extraction", "runner", "feature_error", "mnn", "mnn_fused", "mnn_gemm", "ransac",
            "search", "sweep", "classical_rerank", "localizer", "decide", "map", "node",
            "formats", "descriptor_stats", "search_auto", "merge")
NEEDS = {name: section.needs for name, section in TABLE.items() if section.needs}


def run_sections(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in args.sections:
        section = TABLE[name]
        module = NEEDS.get(name)
        if module and importlib.util.find_spec(module) is None:
            out[name] = {"skipped": f"{module} is not installed here"}
            print(f"[{name}] skipped: {module} is not installed", flush=True)
            continue
        timeout = args.timeout * section.timeout_factor
        results = [run_script(section.script, arguments, timeout)
                   for arguments in section.arguments(args)]
        out[name] = results if section.several else results[0]
    return out


def _not_measured(title: str, data: Any) -> list[str] | None:
    """Return the note of a skipped or failed section (None when it has results)."""
    if isinstance(data, dict) and ("skipped" in data or "error" in data):
        return [f"## {title}", "", f"Not measured: {data.get('skipped') or data.get('error')}",
                ""]
    return None


def markdown(report: dict[str, Any]) -> str:
    """Write the report as Markdown tables, one per section."""
    m = report["machine"]
    lines = [f"# selavpr_ros benchmarks ({report['started']})", "",
             f"- Machine: {m['cpu']} ({m['cpu_count']} cores, {m.get('ram_gib', '?')} GiB RAM)"
             + (f", GPU {m['gpu']} (CUDA {m.get('cuda')})" if m.get("gpu") else ", no GPU"),
             f"- Python {m['python']}, torch {m['torch']} ({m['torch_threads']} threads), "
             f"numpy {m['numpy']}, faiss {m['faiss'] or 'not installed'}, "
             f"OpenCV {m['cv2'] or 'not installed'}",
             f"- Load average at start {m['load_avg_start']}, at end {report['load_avg_end']} "
             "(a shared machine: read the ratios, measured interleaved in one process)",
             f"- Command: `{report['command']}`",
             "- All model weights are random: the timings are real, the features are not.", "",
             "## Headline figures", "", headline.table([report])]
    for name, section in TABLE.items():
        data = report["sections"].get(name)
        if data is None:
            continue
        note = _not_measured(section.title, data)
        lines += note if note is not None else section.render(report, data)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--backbone", default="vitl14", help="extraction backbone")
    parser.add_argument("--depth", type=int, default=None, help="fewer blocks (quick runs)")
    parser.add_argument("--grid", type=int, default=61, help="local-feature grid of MNN/RANSAC")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--iters", type=int, default=3, help="timed forwards per batch size")
    parser.add_argument("--k", type=int, nargs="+", default=[20, 100])
    parser.add_argument("--repeats", type=int, default=3, help="MNN/RANSAC timed repeats")
    parser.add_argument("--search-sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--search-kinds", nargs="+", default=["flat", "ivf", "ivfpq", "hnsw"])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--localizer-places", type=int, default=0,
                        help="map size of the localizer section (0: 300 on CUDA, 40 on CPU)")
    parser.add_argument("--map-places", type=int, default=1000)
    parser.add_argument("--node-seconds", type=float, default=10.0, help="per rate")
    parser.add_argument("--format-places", type=int, default=20,
                        help="SelaVPR places of the local-format section")
    parser.add_argument("--auto-sizes", type=int, nargs="+", default=[100000],
                        help="map sizes of the tuned-index section (e.g. 100000 1000000)")
    parser.add_argument("--merge-places", type=int, default=50000, help="places per input map")
    parser.add_argument("--gardens-point", type=Path, default=None,
                        help="Gardens Point Walking folder (default: ../shared/data/...)")
    parser.add_argument("--query-step", type=int, default=2,
                        help="classical_rerank: every N-th query image")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per bench script")
    parser.add_argument("--out", type=Path, default=ROOT / "bench_results")
    parser.add_argument("--headline", type=Path, nargs="+", default=None, metavar="REPORT",
                        help="run nothing: print the headline table of these reports (.json)")
    parser.add_argument("--readme", type=Path, default=None,
                        help="with --headline: write the table into this README")
    args = parser.parse_args(argv)
    if args.headline:
        text = headline.table([json.loads(p.read_text()) for p in args.headline])
        if args.readme:
            headline.replace_in(args.readme, text)
        print(text, end="")
        return 0
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    started = dt.datetime.now(dt.timezone.utc)
    report: dict[str, Any] = {
        "started": started.strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python bench/run.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": machine(args.device),
    }
    t0 = time.perf_counter()
    report["sections"] = run_sections(args)
    report["wall_s"] = time.perf_counter() - t0
    report["load_avg_end"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / started.strftime("%Y%m%dT%H%M%SZ")
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1))
    stem.with_suffix(".md").write_text(markdown(report))
    print(f"wrote {stem}.json and {stem}.md ({report['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
