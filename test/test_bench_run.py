"""bench/run.py: one command, one JSON and one Markdown report; missing modules skip cleanly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import run as bench_run  # bench/run.py (pytest.ini: pythonpath = bench)


def test_run_writes_json_and_markdown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a module that is not installed anywhere: the section must be skipped, not crash
    monkeypatch.setitem(bench_run.NEEDS, "search", "no_such_module_for_selavpr_bench")
    monkeypatch.setitem(bench_run.NEEDS, "node", "no_such_module_for_selavpr_bench")
    code = bench_run.main([
        "--sections", "extraction,mnn,ransac,search,node", "--backbone", "vits14",
        "--depth", "1", "--batches", "1", "--iters", "1", "--k", "3", "--repeats", "1",
        "--grid", "9", "--out", str(tmp_path)])
    assert code == 0
    (json_file,) = tmp_path.glob("*.json")
    report = json.loads(json_file.read_text())
    sections = report["sections"]
    assert "no_such_module" in sections["search"]["skipped"]
    assert "skipped" in sections["node"]
    assert all("error" not in run for run in sections["extraction"])
    assert sections["mnn"]["rows"][0]["counts_equal"] is True
    assert sections["ransac"]["rows"][0]["k"] == 3
    assert report["machine"]["torch"] and report["machine"]["cpu_count"]
    md = json_file.with_suffix(".md").read_text()
    assert "## MNN re-ranking (9x9x128" in md and "| 3 |" in md
    assert "random" in md and "no_such_module" in md
    assert report["command"].startswith("python bench/run.py --sections")


def test_unknown_section_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        bench_run.main(["--sections", "mnn,warp_drive", "--out", str(tmp_path)])


def test_merge_section_reports_merge_and_build_times(tmp_path: Path) -> None:
    assert bench_run.main(["--sections", "merge", "--merge-places", "300",
                           "--out", str(tmp_path)]) == 0
    (json_file,) = tmp_path.glob("*.json")
    merge = json.loads(json_file.read_text())["sections"]["merge"]
    assert merge["places_per_input"] == 300 and merge["merge_s"] > 0
    assert len(merge["build_s"]) == 2 and merge["merged_bytes"] > 600 * 4096
    assert "## Merging two maps of 300 places" in json_file.with_suffix(".md").read_text()


def test_decide_section(tmp_path: Path) -> None:
    assert bench_run.main(["--sections", "decide", "--queries", "20",
                           "--out", str(tmp_path)]) == 0
    (json_file,) = tmp_path.glob("*.json")
    decide = json.loads(json_file.read_text())["sections"]["decide"]
    assert decide["top_k"] == 100 and decide["queries"] == 20
    assert 0 < decide["decide_ms"]["p50"] <= decide["decide_ms"]["p95"]
    assert "## Decide stage (300 places" in json_file.with_suffix(".md").read_text()


def test_mnn_gemm_and_classical_sections(tmp_path: Path) -> None:
    """The GEMM comparison reports both GEMMs and the ratio; missing data is a note."""
    assert bench_run.main(["--sections", "mnn_gemm,classical_rerank", "--k", "2",
                           "--repeats", "1", "--grid", "9", "--gardens-point",
                           str(tmp_path / "no_data"), "--out", str(tmp_path)]) == 0
    (json_file,) = tmp_path.glob("*.json")
    sections = json.loads(json_file.read_text())["sections"]
    plain, ratio = sections["mnn_gemm"]
    assert plain["filter"] == "none" and ratio["filter"] == "ratio"
    for run in (plain, ratio):
        assert set(run["gflops"]) >= {"gemm_full", "gemm_blocked", "ours"}
        best = max(run["gflops"]["gemm_full"], run["gflops"]["gemm_blocked"])
        assert run["ratio"] == pytest.approx(run["gflops"]["ours"] / best)
    for run in (plain, ratio):
        assert 0.0 <= run["bf16"]["agreement"] <= 1.0
        assert run["bf16"]["speedup_over_fp32_ours"] > 0
    assert all("not found" in run["error"] for run in sections["classical_rerank"])
    md = json_file.with_suffix(".md").read_text()
    assert "vs this CPU's fp32 GEMM" in md and "not measured" in md
    assert "bf16 re-ranking" in md


def test_mnn_fused_section_runs_or_says_why_not(tmp_path: Path) -> None:
    """GPU only: without CUDA (or Triton) the section is a 'not measured' note."""
    assert bench_run.main(["--sections", "mnn_fused", "--k", "3", "--grid", "9",
                           "--repeats", "1", "--out", str(tmp_path)]) == 0
    (json_file,) = tmp_path.glob("*.json")
    data = json.loads(json_file.read_text())["sections"]["mnn_fused"]
    md = json_file.with_suffix(".md").read_text()
    if "skipped" in data:
        assert "Not measured: needs a CUDA GPU" in md or "triton" in data["skipped"]
    else:
        assert "error" not in data and len(data["rows"]) == 3
        assert "## Fused GPU MNN re-ranking (Triton) vs unfused, K=3" in md


def test_mnn_fused_markdown_judges_the_target() -> None:
    row = {"case": "fp16", "pairs": False, "fused_ms": 1.5, "unfused_ms": 8.0, "speedup": 5.3,
           "counts_identical": True, "candidates_differing": 0, "first_call_ms": 900.0}
    data = {"k": 100, "grid": 61, "dim": 128, "device": "GPU", "target_ms": 2.0,
            "repeats": 20, "rows": [row]}
    assert "**met** (1.500 ms)" in "\n".join(bench_run._mnn_fused_md({}, data))
    data["rows"] = [dict(row, fused_ms=2.5)]
    assert "**not met** (2.500 ms)" in "\n".join(bench_run._mnn_fused_md({}, data))
    data["rows"] = [dict(row, counts_identical=False, candidates_differing=1)]
    assert "**not met**" in "\n".join(bench_run._mnn_fused_md({}, data))


def _report(sections: dict) -> dict:
    return {"started": "2026-11-30 06:00 UTC", "load_avg_end": [1.5, 1.0, 1.0],
            "machine": {"cpu": "Some CPU", "cpu_count": 2, "load_avg_start": [1.2, 1.0, 1.0],
                        "gpu": None}, "sections": sections}


def test_headline_table_into_the_readme(tmp_path: Path) -> None:
    """Hand-made reports: each row's figure, '–' where a report lacks it, the README block."""
    cpu = _report({
        "mnn": {"rows": [{"k": 20, "ours_s": 1.0, "ref_s": 3.0, "ours_mib": 5, "ref_mib": 50,
                          "counts_equal": True},
                         {"k": 100, "ours_s": 2.0, "ref_s": 4.0, "ours_mib": 10, "ref_mib": 100,
                          "counts_equal": True}]},
        "decide": {"decide_ms": {"p50": 0.16, "p95": 0.25}, "top_k": 100},
        "search": {"skipped": "faiss is not installed here"},
    })
    gpu = _report({"decide": {"decide_ms": {"p50": 0.05, "p95": 0.08}, "top_k": 100}})
    gpu["machine"]["gpu"] = "NVIDIA H200"
    cpu_json, gpu_json = tmp_path / "cpu.json", tmp_path / "gpu.json"
    cpu_json.write_text(json.dumps(cpu))
    gpu_json.write_text(json.dumps(gpu))
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{bench_run.headline.START}\nold table\n"
                      f"{bench_run.headline.END}\nafter\n")
    assert bench_run.main(["--headline", str(cpu_json), str(gpu_json),
                           "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "old table" not in text and text.startswith("# x\n\nbefore\n")
    assert text.endswith(f"{bench_run.headline.END}\nafter\n")
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| |"))
    assert "Some CPU, 2 CPU cores (2026-11-30, load 1.2-1.5)" in header
    assert "NVIDIA H200" in header
    mnn = next(line for line in lines if line.startswith("| MNN re-ranking"))
    assert mnn.endswith("| K=100: 2.00x faster (2.00 vs 4.00 s), 10 vs 100 MiB peak, "
                        "identical counts | – |")
    decide = next(line for line in lines if line.startswith("| decide stage"))
    assert decide.endswith("| p50 0.16 / p95 0.25 ms (top_k 100) | p50 0.05 / p95 0.08 ms "
                           "(top_k 100) |")
    assert not any(line.startswith("| global search") for line in lines)  # skipped everywhere
