"""The evaluation report: one JSON file with the exact protocol, and a Markdown summary.

JSON layout (``schema`` = :data:`SCHEMA`; undefined numbers are ``null``)::

    schema, created, mode ("offline" | "live")
    protocol: map {path, map_id, places, map_frame, extractor {...}},
              queries {source..., frames, image_sizes {"HxW": count}},
              positives {by: radius | frame_tolerance, ...}, recall_ns, pr_score,
              extractor {kind, checkpoint, device, precision, name, input_size, fingerprint,
                         trained}, localizer {LocalizerConfig fields}
    counts: queries, failed, without_ground_truth, evaluated, with_positive, without_positive,
            accepted, accepted_correct, accepted_wrong, rejected, top1_correct
    recall: {before_rerank, after_rerank}: {ns, recall {N: r}, hits, queries_evaluated, ...}
    precision_recall: {score: {auc, recall_at_100_precision, threshold_at_100_precision,
                               parameter, precision_at_accept, recall_at_accept, curve {...}}}
    latency: stages_ms {stage: {count, mean, p50, p95, p99, max}}, end_to_end_ms {...},
             wall_s, throughput_hz, peak_rss_mb, peak_cuda_mb
    live (live mode only): frames sent / answered / dropped, node diagnostics, agreement
    versions, machine
    queries: one record per query frame (QueryRecord fields + outcome + positives)
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

from selavpr_ros import __version__
from selavpr_ros.eval import latency as lat
from selavpr_ros.eval.evaluate import PR_SCORE_PARAMETER, EvalConfig, QueryRecord, Scores

SCHEMA = "selavpr_ros.evaluation/1"
UNTRAINED_PREFIX = "untrained-"


def versions() -> dict[str, str]:
    out = {"selavpr_ros": __version__}
    for dist in ("numpy", "torch", "faiss-cpu", "faiss-gpu", "rosbags", "matplotlib",
                 "opencv-python-headless", "rclpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def extractor_description(extractor: Any, kind: str, checkpoint: str = "",
                          device: str = "cpu", precision: str = "fp32") -> dict[str, Any]:
    """Which extractor and weights answered, and at which input resolution."""
    info = extractor.info
    out: dict[str, Any] = {
        "kind": kind, "checkpoint": checkpoint, "device": device,
        "precision": precision, "name": info.name, "fingerprint": info.fingerprint,
        "trained": not info.fingerprint.startswith(UNTRAINED_PREFIX),
        "global_dim": info.global_dim, "local_count": info.local_count,
        "local_dim": info.local_dim,
    }
    config = getattr(getattr(extractor, "model", None), "config", None)
    size = getattr(config, "image_size", None)
    if size is not None:
        hw = (size, size) if isinstance(size, int) else tuple(size)
        out["input_size"] = f"{hw[0]}x{hw[1]}"
    wh = getattr(getattr(extractor, "config", None), "image_size", None)
    if "input_size" not in out and wh is not None:  # classical: (width, height)
        out["input_size"] = f"{wh[1]}x{wh[0]}"
    return out


def build_report(
    *,
    mode: str,
    place_map: Any,
    extractor: dict[str, Any],
    localizer_config: Any,
    eval_config: EvalConfig,
    source: dict[str, Any],
    records: Sequence[QueryRecord],
    scores: Scores,
    latency: dict[str, Any],
    live: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the report as a JSON-ready dict (see the module docstring)."""
    sizes = Counter(f"{r.image_hw[0]}x{r.image_hw[1]}" for r in records if r.image_hw)
    pr = {}
    for name, curve in scores.pr.items():
        pr[name] = {**curve.as_dict(), "parameter": PR_SCORE_PARAMETER[name]}
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "mode": mode,
        "protocol": {
            "map": {
                "path": str(place_map.path), "map_id": place_map.map_id,
                "places": len(place_map), "map_frame": place_map.map_frame,
                "extractor": place_map.extractor_info.to_dict(),
            },
            "queries": {**source, "frames": len(records), "image_sizes": dict(sizes)},
            "positives": eval_config.positives_protocol(),
            "recall_ns": list(eval_config.ns),
            "recall_over": "queries with at least one positive",
            "pr_score": eval_config.pr_score,
            "pr_rule": "predicted = accepted and score >= threshold; correct = top candidate "
                       "is a positive; ties enter together; AUC = sum (R_i - R_i-1) * P_i",
            "extractor": extractor,
            "localizer": asdict(localizer_config),
        },
        "counts": scores.counts,
        "recall": {"before_rerank": scores.recall_before.as_dict(),
                   "after_rerank": scores.recall_after.as_dict()},
        "precision_recall": pr,
        "latency": latency,
        "versions": versions(),
        "machine": lat.machine(),
    }
    if live is not None:
        report["live"] = live
    from selavpr_ros.eval.pose_errors import pose_errors

    poses = pose_errors(records)
    if poses is not None:
        report["pose"] = poses
    report["queries"] = [
        {**r.to_dict(), "outcome": scores.outcomes.get(r.index, "unanswered"),
         "positives": list(scores.positives.get(r.index, ()))}
        for r in records
    ]
    return report


def write_json(report: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(report, indent=1, allow_nan=False, default=_json_default) + "\n")
    return path


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _pct(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.1f} %"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def markdown(report: dict[str, Any], plots: dict[str, str] | None = None) -> str:
    """Write a human summary of ``report`` (and links to its plots)."""
    p, c = report["protocol"], report["counts"]
    ext, q = p["extractor"], p["queries"]
    positives = p["positives"]
    rule = (f"within ±{positives['frames']} frames" if positives["by"] == "frame_tolerance"
            else f"within {positives['radius_m']:g} m ({positives['distance']})")
    where = q.get("bag") or q.get("images")
    topic = f" topic `{q['image_topic']}`" if q.get("image_topic") else ""
    lines = [
        f"# Place recognition evaluation ({report['mode']})", "",
        f"- **Map**: `{p['map']['path']}` ({p['map']['places']} places, "
        f"id `{p['map']['map_id']}`)",
        f"- **Queries**: `{where}`{topic}: {q['frames']} frames, image sizes "
        + ", ".join(f"{k} ({v})" for k, v in q["image_sizes"].items()),
        f"- **Extractor**: {ext['name']} (input {ext.get('input_size', 'native')}, "
        f"weights `{ext['fingerprint'][:24]}`, {ext['device']}/{ext['precision']})",
        f"- **Positives**: map places {rule}; Recall@N over the {c['with_positive']} queries "
        f"with a positive ({c['without_positive']} without one, {c['without_ground_truth']} "
        f"without ground truth, {c['unanswered']} unanswered: undecodable, or dropped live)",
        f"- **Localizer**: top_k {p['localizer']['top_k']}, rerank_k "
        f"{p['localizer']['rerank_k']}, min_margin {p['localizer']['min_margin']}",
        "",
    ]
    if not ext.get("trained", True):
        lines += ["> **Untrained weights**: these figures exercise the pipeline only; they say "
                  "nothing about place recognition quality.", ""]
    before, after = report["recall"]["before_rerank"], report["recall"]["after_rerank"]
    ns = before["ns"]
    lines += ["## Recall@N", "",
              "| | " + " | ".join(f"R@{n}" for n in ns) + " |",
              "|---|" + "---|" * len(ns),
              "| global retrieval | " + " | ".join(_pct(before["recall"][str(n)]) for n in ns)
              + " |",
              "| after re-ranking | " + " | ".join(_pct(after["recall"][str(n)]) for n in ns)
              + " |", ""]
    lines += ["## Accept decision", "",
              f"{c['accepted']} of {c['evaluated']} queries accepted: {c['accepted_correct']} "
              f"correct, {c['accepted_wrong']} wrong; {c['rejected']} rejected.", "",
              "| score | PR AUC | recall @ 100 % precision | threshold (score >=) | "
              "sets | precision / recall as accepted |",
              "|---|---|---|---|---|---|"]
    for name, pr in report["precision_recall"].items():
        thr, auc = pr["threshold_at_100_precision"], pr["auc"]
        lines.append(
            f"| {name}{' (headline)' if name == p['pr_score'] else ''} | "
            f"{'n/a' if auc is None else f'{auc:.3f}'} | "
            f"{_pct(pr['recall_at_100_precision'])} | "
            f"{'none' if thr is None else f'{thr:.4g}'} | {pr['parameter']} | "
            f"{_pct(pr['precision_at_accept'])} / {_pct(pr['recall_at_accept'])} |")
    lat_ = report["latency"]
    lines += ["", "## Latency (ms)", "", "| stage | p50 | p95 | p99 | mean |",
              "|---|---|---|---|---|"]
    for stage, s in lat_["stages_ms"].items():
        lines.append(f"| {stage} | {_ms(s['p50'])} | {_ms(s['p95'])} | {_ms(s['p99'])} | "
                     f"{_ms(s['mean'])} |")
    e = lat_["end_to_end_ms"]
    lines.append(f"| **end to end** | {_ms(e['p50'])} | {_ms(e['p95'])} | {_ms(e['p99'])} | "
                 f"{_ms(e['mean'])} |")
    tput = lat_["throughput_hz"]
    lines += ["", f"Throughput {'n/a' if tput is None else f'{tput:.2f}'} queries/s over "
              f"{lat_['wall_s']:.1f} s; peak memory {_ms(lat_['peak_rss_mb'])} MiB resident"
              + (f", {lat_['peak_cuda_mb']:.0f} MiB CUDA" if lat_.get("peak_cuda_mb") else "")
              + "."]
    if report.get("pose"):
        from selavpr_ros.eval.pose_errors import markdown_lines

        lines += markdown_lines(report["pose"])
    live = report.get("live")
    if live:
        lines += ["", "## Live replay through the node", "",
                  f"Sent {live['frames_sent']} frames at rate x{live['rate']:g}; the node "
                  f"answered {live['frames_answered']} ({live['frames_unanswered']} not "
                  f"answered: dropped by the node's newest-frame policy or lost)."]
        counters = live.get("node_counters")
        if counters:
            lines.append(f"Node counters over the replay: {counters}.")
        proc = live["node_processing_ms"]
        if proc["count"]:
            lines.append(f"Node processing (receipt to publish): p50 {proc['p50']:.1f} ms, "
                         f"p95 {proc['p95']:.1f} ms; end-to-end figures above are "
                         "frame publish to result receipt over DDS.")
        agreement = live.get("agreement")
        if agreement:
            lines.append(
                f"Offline vs live on the {agreement['compared']} answered frames: same "
                f"candidate order {agreement['same_ranking']}, same decision "
                f"{agreement['same_decision']}, same top match {agreement['same_top1']}.")
    if plots:
        lines += ["", "## Plots", ""] + [f"![{name}]({file})" for name, file in plots.items()]
    machine = report["machine"]
    lines += ["", f"_selavpr_ros {report['versions']['selavpr_ros']}, {machine['cpu']} "
              f"({machine['cpu_count']} CPUs), {report['created']}_", ""]
    return "\n".join(lines)


def write_outputs(report: dict[str, Any], map_positions: Any, out_dir: Path,
                  plots: bool = True) -> dict[str, Path]:
    """evaluation.json, summary.md and (unless ``plots`` is False) the PNG plots."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {"json": write_json(report, out_dir / "evaluation.json")}
    drawn: dict[str, str] = {}
    if plots:
        from selavpr_ros.eval.plots import write_plots

        drawn = write_plots(report, map_positions, out_dir)
        files.update({name: out_dir / file for name, file in drawn.items()})
    summary = out_dir / "summary.md"
    summary.write_text(markdown(report, drawn))
    files["markdown"] = summary
    return files
