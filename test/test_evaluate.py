"""``selavpr evaluate`` end to end on a small real bag and map: metrics, outputs, protocols."""

from __future__ import annotations

import json
import struct
import zlib

import pytest

import eval_testlib
from selavpr_ros.cli import main as cli_main

PLACES, NOVEL = eval_testlib.PLACES, eval_testlib.NOVEL


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return eval_testlib.make_world(tmp_path_factory.mktemp("evaluate"))


def png_size(path) -> tuple[int, int]:
    """(width, height) of a PNG, after checking its signature and every chunk's CRC."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"{path}: bad CRC in {kind!r}"
        chunks.append(kind)
        pos += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND" and b"IDAT" in chunks
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def evaluate(world, out, *extra):
    argv = ["evaluate", str(world["map"]), "--bag", str(world["bag"]), "--checkpoint",
            str(world["checkpoint"]), "--out", str(out), "--no-progress", *extra]
    assert cli_main(argv) == 0
    return json.loads((out / "evaluation.json").read_text())


def test_full_run_writes_every_output_with_hand_checkable_figures(world, tmp_path, capsys):
    report = evaluate(world, tmp_path / "out")
    printed = capsys.readouterr().out
    assert "R@1 100.0%" in printed

    c = report["counts"]
    assert c["queries"] == PLACES + NOVEL and c["evaluated"] == PLACES + NOVEL
    assert c["with_positive"] == PLACES and c["without_positive"] == NOVEL
    # queries 2 m beside their place, places 30 m apart: exactly one positive each
    queries = report["queries"]
    assert [q["positives"] for q in queries[:PLACES]] == [[i] for i in range(PLACES)]
    assert all(q["positives"] == [] for q in queries[PLACES:])
    # random weights still recognise identical images, first in both orders
    for stage in ("before_rerank", "after_rerank"):
        r = report["recall"][stage]
        assert r["recall"] == {"1": 1.0, "5": 1.0, "10": 1.0, "20": 1.0}
        assert r["queries_evaluated"] == PLACES and r["queries_without_positive"] == NOVEL
    assert [q["ids"][0] for q in queries[:PLACES]] == list(range(PLACES))
    assert all(len(q["ids"]) == PLACES for q in queries)  # top_k 100 > map size

    # every answer is scored exactly once, and the counts add up
    outcomes = [q["outcome"] for q in queries]
    assert outcomes.count("correct") == c["accepted_correct"]
    assert outcomes.count("wrong") == c["accepted_wrong"]
    assert outcomes.count("rejected") == c["rejected"]
    assert c["accepted_correct"] == PLACES  # each copy accepted and right
    pr = report["precision_recall"]["confidence"]
    wrong = c["accepted_wrong"]  # novel queries accepted anyway are false positives
    assert pr["precision_at_accept"] == pytest.approx(PLACES / (PLACES + wrong))
    assert pr["recall_at_accept"] == 1.0
    curve = pr["curve"]
    assert curve["threshold"] == sorted(curve["threshold"], reverse=True)
    assert pr["threshold_at_100_precision"] in curve["threshold"]
    assert set(report["precision_recall"]) >= {"confidence", "mnn_score", "global_similarity"}
    assert report["precision_recall"]["mnn_score"]["parameter"] == "min_score"

    p = report["protocol"]
    assert p["positives"] == {"by": "radius", "radius_m": 25.0, "distance": "horizontal (x, y)"}
    assert p["recall_ns"] == [1, 5, 10, 20]
    assert p["map"]["places"] == PLACES and p["map"]["map_id"]
    assert p["queries"]["image_topic"] == eval_testlib.IMAGE_TOPIC
    assert p["queries"]["image_sizes"] == {"96x128": PLACES + NOVEL}
    assert p["extractor"]["input_size"] == "112x112"
    assert p["extractor"]["trained"] is False
    assert p["extractor"]["fingerprint"].startswith("untrained-")
    assert p["localizer"]["top_k"] == 100
    assert report["versions"]["selavpr_ros"] and report["machine"]["cpu_count"] >= 1

    lat = report["latency"]
    assert set(lat["stages_ms"]) >= {"decode", "extract", "search", "rerank", "decide"}
    e2e = lat["end_to_end_ms"]
    assert e2e["count"] == PLACES + NOVEL
    assert 0 < e2e["p50"] <= e2e["p95"] <= e2e["p99"] <= e2e["max"]
    assert lat["throughput_hz"] > 0 and lat["peak_rss_mb"] > 50

    out = tmp_path / "out"
    for name in ("precision_recall", "recall_at_n", "latency", "trajectory"):
        width, height = png_size(out / f"{name}.png")
        assert 800 <= width <= 1600 and 400 <= height <= 1200, (name, width, height)
    summary = (out / "summary.md").read_text()
    assert "Untrained weights" in summary
    assert "| after re-ranking | 100.0 % | 100.0 % | 100.0 % | 100.0 % |" in summary
    assert "![trajectory](trajectory.png)" in summary


def test_frame_tolerance_protocol_uses_frame_numbers(world, tmp_path):
    # map places are "image0".."image7", query frames are bag message indices 0..9
    report = evaluate(world, tmp_path / "tol0", "--frame-tolerance", "0", "--recall-n", "1,3",
                      "--no-plots")
    queries = report["queries"]
    assert [q["positives"] for q in queries] == [[i] for i in range(PLACES)] + [[], []]
    assert report["protocol"]["positives"]["by"] == "frame_tolerance"
    assert report["recall"]["after_rerank"]["ns"] == [1, 3]
    assert not (tmp_path / "tol0" / "trajectory.png").exists()

    report = evaluate(world, tmp_path / "tol2", "--frame-tolerance", "2", "--no-plots")
    positives = [q["positives"] for q in report["queries"]]
    assert positives[0] == [0, 1, 2] and positives[5] == [3, 4, 5, 6, 7]
    assert positives[8] == [6, 7] and positives[9] == [7]  # novel frames 8, 9 now have some
    assert report["counts"]["without_positive"] == 0


def test_global_only_ranking_and_limits(world, tmp_path):
    report = evaluate(world, tmp_path / "global", "--rerank-k", "0", "--limit", "4",
                      "--no-plots")
    assert report["counts"]["queries"] == 4
    assert "mnn_score" not in report["precision_recall"]  # no re-ranking, no MNN score
    q = report["queries"][0]
    assert q["ids"] == q["global_ids"] and q["mnn_score"] is None
    assert report["recall"]["before_rerank"] == report["recall"]["after_rerank"]


def test_user_errors_are_one_line(world, tmp_path, capsys):
    argv = ["evaluate", str(world["map"]), "--checkpoint", str(world["checkpoint"]),
            "--out", str(tmp_path / "x")]
    assert cli_main(argv) == 2
    assert "exactly one source: --bag BAG or --images FOLDER" in capsys.readouterr().err
    assert cli_main([*argv, "--bag", str(world["bag"]), "--image-topic", "/nope"]) == 2
    assert "/nope" in capsys.readouterr().err
    assert cli_main([*argv, "--images", str(tmp_path), "--live"]) == 2
    assert "--live replays a rosbag" in capsys.readouterr().err
