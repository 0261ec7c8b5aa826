"""The README's headline performance table, written from ``bench/run.py`` reports.

    python bench/run.py --headline bench_results/A.json [B.json ...] [--readme README.md]

One row per headline figure, one column per report (its machine, date and load), so a CPU run
and a GPU run sit side by side; a figure a report did not measure is "–". With ``--readme``
the table replaces what stands between the two ``HEADLINE_*`` marker lines of the README.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

START = "<!-- headline table: written by `python bench/run.py --headline`; do not edit -->"
END = "<!-- end of the headline table -->"

Figure = Callable[[dict[str, Any], Any], str | None]


def _extraction(report: dict[str, Any], runs: list[dict[str, Any]]) -> str | None:
    parts = []
    for run in runs:
        if "error" in run:
            continue
        per_batch = []
        for r in sorted((r for r in run["results"] if r["impl"] == "ours"),
                        key=lambda r: r["batch"]):
            ratio = run["ours_over_reference"].get(str(r["batch"]))
            vs = f", {ratio:.2f}x the reference" if ratio else ""
            per_image = r["ms_per_batch"] / r["batch"]
            per_batch.append(f"batch {r['batch']} {per_image:.{0 if per_image >= 100 else 2}f} "
                             f"ms/img{vs}")
        parts.append(f"{run['precision']}: " + "; ".join(per_batch))
    return " / ".join(parts) or None


def _mnn(report: dict[str, Any], d: dict[str, Any]) -> str | None:
    row = max(d["rows"], key=lambda r: r["k"])
    if not row.get("ref_s"):
        return f"K={row['k']}: {row['ours_s'] * 1e3:.0f} ms"
    same = "identical counts" if row.get("counts_equal") else "counts differ"
    return (f"K={row['k']}: {row['ref_s'] / row['ours_s']:.2f}x faster ({row['ours_s']:.2f} vs "
            f"{row['ref_s']:.2f} s), {row['ours_mib']:.0f} vs {row['ref_mib']:.0f} MiB peak, "
            f"{same}")


def _mnn_gemm(report: dict[str, Any], runs: list[dict[str, Any]]) -> str | None:
    parts = []
    for d in runs:
        if "error" in d:
            continue
        name = {"none": "plain count", "ratio": "ratio test"}.get(d["filter"], d["filter"])
        text = (f"{name}: {100 * d['ratio']:.0f} % ({d['gflops']['ours']:.0f} of "
                f"{max(d['gflops']['gemm_full'], d['gflops']['gemm_blocked']):.0f} GFLOP/s)")
        if d.get("bf16") and d["filter"] == "none":  # the plain count: thousands of matches
            b = d["bf16"]
            text += (f", bf16 {b['speedup_over_fp32_ours']:.2f}x with "
                     f"{100 * b['agreement']:.2f} % count agreement")
        parts.append(text)
    return f"K={runs[0]['k']}: " + "; ".join(parts) if parts else None


def _ransac(report: dict[str, Any], d: dict[str, Any]) -> str | None:
    row = max(d["rows"], key=lambda r: r["k"])
    return (f"K={row['k']}: MNN {row['mnn_count_s'] * 1e3:.0f} ms, RANSAC "
            f"{row['ransac_s'] * 1e3:.0f} ms: MNN is "
            f"{100 * row['mnn_share_of_two_stage']:.0f} % of the two-stage time")


def _search(report: dict[str, Any], d: dict[str, Any]) -> str | None:
    places = max(r["places"] for r in d["rows"])
    rows = [r for r in d["rows"] if r["places"] == places]
    parts = [f"{r['kind']} {r['query_ms']:.2f} ms"
             + (f" at recall@{d['k']} {r['recall_at_k']:.2f}"
                if r.get("recall_at_k") is not None and r["kind"] != "flat" else "")
             for r in rows]
    return f"{places} places: " + ", ".join(parts)


def _localizer(report: dict[str, Any], d: dict[str, Any]) -> str | None:
    stages = d["stages_ms"]
    total = stages.get("total")
    if total is None:
        return None
    inner = ", ".join(f"{name} {r['p50']:.1f}" for name, r in stages.items()
                      if name != "total" and r["p50"] >= 0.05)
    return (f"{total['p50']:.1f} / {total['p95']:.1f} ms ({inner}; {d['backbone']} "
            f"{d['precision']}, {d['places']} places, top_k {d['top_k']})")


def _decide(report: dict[str, Any], d: dict[str, Any]) -> str | None:
    r = d["decide_ms"]
    return f"p50 {r['p50']:.2f} / p95 {r['p95']:.2f} ms (top_k {d['top_k']})"


def _map(report: dict[str, Any], d: dict[str, Any]) -> str | None:
    return (f"{d['disk_bytes_per_place'] / 2**20:.2f} MiB per place, opens in "
            f"{d['open_ms']:.0f} ms at {d['places']} places")


def _node(report: dict[str, Any], d: dict[str, Any]) -> str | None:
    parts = []
    for r in d["rows"]:
        if r.get("p50_ms") is None:
            parts.append(f"{r['rate_hz']:.0f} Hz: {r['answered']} of {r['sent']} answered")
            continue
        cpu = r.get("node_cpu_percent")
        parts.append(f"{r['rate_hz']:.0f} Hz: p50/p95/p99 {r['p50_ms']:.0f}/{r['p95_ms']:.0f}/"
                     f"{r['p99_ms']:.0f} ms, {r['answered']} of {r['sent']} answered"
                     + (f", node {cpu:.0f} % of a core" if cpu is not None else ""))
    return f"{d['model']}: " + "; ".join(parts)


def _mnn_fused(report: dict[str, Any], d: dict[str, Any]) -> str | None:
    row = next((r for r in d["rows"] if r["case"] == "fp16" and not r["pairs"]), None)
    if row is None:
        return None
    same = "identical counts" if row["counts_identical"] else "counts differ"
    return (f"K={d['k']}: {row['fused_ms']:.2f} ms fused vs {row['unfused_ms']:.2f} ms "
            f"unfused, {same}")


# (row label, section, figure): the README's rows, in its order
ROWS: list[tuple[str, str, Figure]] = [
    ("MNN re-ranking vs the reference algorithm (exact, fp32 on CPU)", "mnn", _mnn),
    ("exact fp32 MNN vs this machine's own fp32 GEMM, same shapes", "mnn_gemm", _mnn_gemm),
    ("fused GPU MNN (Triton) vs the chunked fp16 product", "mnn_fused", _mnn_fused),
    ("ViT-L/14 extraction (random weights), ms per image", "extraction", _extraction),
    ("query pipeline in process, p50 / p95", "localizer", _localizer),
    ("decide stage (after re-ranking)", "decide", _decide),
    ("MNN vs adding RANSAC on the same candidates", "ransac", _ransac),
    ("global search, one query", "search", _search),
    ("map on disk", "map", _map),
    ("localizer_node over DDS, image published to result received", "node", _node),
]


def _column(report: dict[str, Any]) -> str:
    m = report["machine"]
    where = m.get("gpu") or m["cpu"]
    loads = [m["load_avg_start"][0], report.get("load_avg_end", m["load_avg_start"])[0]]
    return (f"{where}, {m['cpu_count']} CPU cores ({report['started'][:10]}, load "
            f"{min(loads):.1f}-{max(loads):.1f})")


def _figure(report: dict[str, Any], section: str, figure: Figure) -> str:
    data = report["sections"].get(section)
    if data is None or (isinstance(data, dict) and ("skipped" in data or "error" in data)):
        return "–"
    try:
        return figure(report, data) or "–"
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return "– (report lacks this figure)"


def table(reports: list[dict[str, Any]]) -> str:
    """Markdown: one row per headline figure that some report has, one column per report."""
    lines = ["| | " + " | ".join(_column(r) for r in reports) + " |",
             "|---|" + "---|" * len(reports)]
    for label, section, figure in ROWS:
        cells = [_figure(r, section, figure) for r in reports]
        if any(c != "–" for c in cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def replace_in(readme: Path, text: str) -> None:
    """Put ``text`` between the README's START and END lines (both must be there, once)."""
    content = readme.read_text()
    if content.count(START) != 1 or content.count(END) != 1:
        raise SystemExit(f"{readme}: needs exactly one '{START}' line and one '{END}' line")
    head, rest = content.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{text}{END}{tail}")
