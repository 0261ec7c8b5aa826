"""``selavpr evaluate --live``: the bag through DDS to a localizer_node, against offline."""

from __future__ import annotations

import json
import subprocess

import pytest

import eval_testlib
import node_testlib
import ros_harness
from map_build_testlib import make_checkpoint

pytestmark = [pytest.mark.ros, pytest.mark.slow]

FRAMES = eval_testlib.PLACES + eval_testlib.NOVEL


def test_live_run_agrees_with_offline_on_the_frames_the_node_answered(tmp_path):
    checkpoint = make_checkpoint(tmp_path / "small.safetensors")
    images = node_testlib.place_images(eval_testlib.PLACES, seed=3)
    map_path = node_testlib.build_map(tmp_path / "route.selavpr", checkpoint, images)
    # JPEG frames on a topic whose name does not say so: the node must be told the type
    bag = eval_testlib.write_query_bag(tmp_path / "bag", images, compressed=True)
    out = tmp_path / "live"
    done = subprocess.run(
        [ros_harness.executable("selavpr"), "evaluate", str(map_path), "--bag", str(bag),
         "--checkpoint", str(checkpoint), "--live", "--rate", "1", "--top-k", "20",
         "--out", str(out), "--no-progress", "--no-plots"],
        capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((out / "evaluation.json").read_text())
    live = report["live"]

    assert report["mode"] == "live" and live["node_started"]
    assert live["frames_sent"] == FRAMES
    answered = live["frames_answered"]
    assert 1 <= answered <= FRAMES
    assert answered + live["frames_unanswered"] == FRAMES
    # the node's own counters account for every frame: answered, or dropped for a newer one
    counters = live["node_counters"]
    assert counters["frames_received"] == FRAMES
    assert counters["frames_processed"] == answered
    assert counters["frames_dropped"] == FRAMES - answered
    assert counters["bad_frames"] == counters["errors"] == 0

    agreement = live["agreement"]
    assert agreement["compared"] == answered
    assert agreement["same_ranking"] == answered, agreement["mismatches"]
    assert agreement["same_decision"] == answered
    assert agreement["max_confidence_diff"] < 1e-6  # float32 in the message
    assert agreement["max_global_similarity_diff"] < 1e-6

    queries = report["queries"]
    assert sum(q["outcome"] != "unanswered" for q in queries) == answered
    for q in queries:
        if q["outcome"] == "unanswered":
            assert q["error"] == "no answer (dropped)"
        else:  # the node listed all top_k candidates, so both orders are complete
            assert len(q["ids"]) == eval_testlib.PLACES and sorted(q["global_ids"]) == list(
                range(eval_testlib.PLACES))
            assert q["latency_ms"] > 0
            assert {"decode", "extract", "rerank"} <= set(q["timings_ms"])
    assert report["latency"]["end_to_end_ms"]["count"] == answered
    node_p50 = live["node_processing_ms"]["p50"]
    assert report["latency"]["end_to_end_ms"]["p50"] >= 0.8 * node_p50
    assert report["counts"]["unanswered"] == FRAMES - answered
    assert "Offline vs live on the" in (out / "summary.md").read_text()
    assert "localizer_node started" in (out / "localizer_node.log").read_text()
