"""Scoring of query records, the JSON report and its Markdown summary and plots."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import node_testlib
from map_build_testlib import make_checkpoint
from selavpr_ros.errors import ConfigError
from selavpr_ros.eval.evaluate import EvalConfig, QueryRecord, latency_summary, score
from selavpr_ros.eval.plots import plot_trajectory
from selavpr_ros.eval.report import SCHEMA, build_report, markdown, write_outputs
from selavpr_ros.localizer import LocalizerConfig
from selavpr_ros.map import PlaceMap

NAN = math.nan
# five places 10 m apart on a line, frame numbers 0..4
MAP_POSITIONS = np.array([[10.0 * i, 0.0, 0.0] for i in range(5)])
MAP_FRAMES = [0, 1, 2, 3, 4]


def rec(index, position, ids, accepted, confidence, mnn=NAN, error="", global_ids=None):
    return QueryRecord(
        index=index, stamp_ns=1000 + index, source_ref=f"img{index}.png", frame_index=index,
        position=position, image_hw=None if error else (48, 64), ids=tuple(ids),
        global_ids=tuple(global_ids if global_ids is not None else ids), accepted=accepted,
        confidence=confidence, mnn_score=mnn, timings_ms={"extract": 10.0 + index,
                                                          "rerank": 1.0},
        latency_ms=12.0 + index, error=error)


RECORDS = [
    # at place 0; re-ranking fixed the order (global put place 3 first)
    rec(0, (0.0, 1.0, 0.0), [0, 3], True, 0.9, 50, global_ids=[3, 0]),
    # at place 1, answered place 4 (wrong), accepted
    rec(1, (10.0, 0.0, 0.0), [4, 1], True, 0.9, 40),
    # at place 2, right but rejected
    rec(2, (20.0, 0.0, 0.0), [2, 0], False, 0.0, 30),
    # far from every place: no positive; accepted -> a false positive
    rec(3, (500.0, 0.0, 0.0), [1, 2], True, 0.5, 20),
    # no pose: no ground truth
    rec(4, None, [4], True, 1.0, 60),
    # undecodable
    rec(5, (30.0, 0.0, 0.0), [], False, 0.0, error="undecodable: bad jpeg"),
]


def test_score_by_radius_by_hand():
    s = score(RECORDS, MAP_POSITIONS, MAP_FRAMES, EvalConfig(ns=(1, 2), radius_m=5.0))
    assert s.counts == {
        "queries": 6, "unanswered": 1, "without_ground_truth": 1, "evaluated": 4,
        "with_positive": 3, "without_positive": 1, "accepted": 3, "accepted_correct": 1,
        "accepted_wrong": 2, "rejected": 1, "top1_correct": 2}
    assert s.positives == {0: (0,), 1: (1,), 2: (2,), 3: ()}
    # after: q0 hit@1, q1 hit@2, q2 hit@1 -> R@1 2/3, R@2 3/3; before: q0 only at rank 2
    assert s.recall_after.recall == pytest.approx((2 / 3, 1.0))
    assert s.recall_before.recall == pytest.approx((1 / 3, 1.0))
    assert s.outcomes == {0: "correct", 1: "wrong", 2: "rejected", 3: "wrong",
                          4: "no_ground_truth"}
    # confidence: q0 (0.9, right) and q1 (0.9, wrong) tie; q3 (0.5, no positive)
    conf = s.pr["confidence"]
    assert conf.thresholds == (0.9, 0.5)
    assert conf.precision == pytest.approx((0.5, 1 / 3))
    assert conf.recall == pytest.approx((1 / 3, 1 / 3))
    assert conf.recall_at_100 == 0.0 and conf.threshold_at_100 is None
    # MNN score separates them: 50 right, 40 wrong, 20 wrong
    mnn = s.pr["mnn_score"]
    assert mnn.thresholds == (50.0, 40.0, 20.0)
    assert mnn.recall_at_100 == pytest.approx(1 / 3) and mnn.threshold_at_100 == 50.0
    assert mnn.auc == pytest.approx(1 / 3)
    assert "score_fraction" not in s.pr  # unknown for every record


def test_score_by_frame_tolerance_ignores_positions():
    s = score(RECORDS, MAP_POSITIONS, MAP_FRAMES, EvalConfig(ns=(1,), frame_tolerance=1))
    # frame numbers exist for every answered record, including the one without a pose
    assert s.counts["without_ground_truth"] == 0 and s.counts["evaluated"] == 5
    assert s.positives[1] == (0, 1, 2) and s.positives[3] == (2, 3, 4)
    assert s.positives[4] == (3, 4)
    assert s.outcomes[3] == "wrong" and s.outcomes[4] == "correct"  # [1, 2] vs 2..4; [4]


def test_eval_config_rejects_bad_values():
    for kwargs in ({"ns": (0,)}, {"radius_m": 0}, {"frame_tolerance": -1},
                   {"distance_dims": 4}, {"pr_score": "magic"}):
        with pytest.raises(ConfigError):
            EvalConfig(**kwargs)


def test_query_records_round_trip_through_json():
    for r in RECORDS:
        text = json.dumps(r.to_dict(), allow_nan=False)
        back = QueryRecord.from_dict(json.loads(text))
        assert back.ids == r.ids and back.position == r.position
        assert (math.isnan(back.mnn_score) and math.isnan(r.mnn_score)) or (
            back.mnn_score == r.mnn_score)


@pytest.fixture(scope="module")
def small_map(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    checkpoint = make_checkpoint(root / "small.safetensors")
    path = node_testlib.build_map(root / "m.selavpr", checkpoint,
                                  node_testlib.place_images(5, seed=5))
    with PlaceMap.open(path) as place_map:
        yield place_map


DEFAULT_EVAL = EvalConfig(ns=(1, 2), radius_m=5.0)


def make_report(place_map, config=DEFAULT_EVAL):
    s = score(RECORDS, MAP_POSITIONS, MAP_FRAMES, config)
    return build_report(
        mode="offline", place_map=place_map,
        extractor={"name": "test-extractor", "fingerprint": "untrained-abc", "trained": False,
                   "device": "cpu", "precision": "fp32", "kind": "selavpr"},
        localizer_config=LocalizerConfig(), eval_config=config,
        source={"kind": "images", "images": "/data/route"}, records=RECORDS, scores=s,
        latency=latency_summary(RECORDS, wall_s=2.0))


def test_report_json_is_strict_and_complete(small_map, tmp_path):
    report = make_report(small_map)
    files = write_outputs(report, MAP_POSITIONS, tmp_path, plots=False)
    data = json.loads(files["json"].read_text())  # written with allow_nan=False
    assert data["schema"] == SCHEMA and data["mode"] == "offline"
    assert data["protocol"]["queries"]["image_sizes"] == {"48x64": 5}
    assert data["protocol"]["map"]["places"] == 5
    assert data["recall"]["before_rerank"]["recall"] == {"1": pytest.approx(1 / 3), "2": 1.0}
    assert data["precision_recall"]["confidence"]["threshold_at_100_precision"] is None
    assert [q["outcome"] for q in data["queries"]] == [
        "correct", "wrong", "rejected", "wrong", "no_ground_truth", "unanswered"]
    lat = data["latency"]
    assert lat["stages_ms"]["extract"]["count"] == 5
    assert lat["stages_ms"]["extract"]["p50"] == pytest.approx(12.0)  # 10..14
    assert lat["end_to_end_ms"]["p50"] == pytest.approx(14.0)
    assert lat["throughput_hz"] == pytest.approx(5 / 2.0)
    assert data["queries"][2]["mnn_score"] == 30 and data["queries"][5]["mnn_score"] is None


def test_markdown_states_the_protocol_and_flags_untrained_weights(small_map):
    text = markdown(make_report(small_map))
    assert "within 5 m (horizontal (x, y))" in text
    assert "over the 3 queries with a positive (1 without one, 1 without ground truth" in text
    assert "| global retrieval | 33.3 % | 100.0 % |" in text
    assert "| after re-ranking | 66.7 % | 100.0 % |" in text
    assert "3 of 4 queries accepted: 1 correct, 2 wrong; 1 rejected." in text
    assert "| mnn_score | 0.333 | 33.3 % | 50 | min_score |" in text
    assert "Untrained weights" in text
    tol = markdown(make_report(small_map, EvalConfig(ns=(1,), frame_tolerance=2)))
    assert "within ±2 frames" in tol


def test_trajectory_plot_of_a_straight_route_is_a_match_plot(small_map, tmp_path):
    from matplotlib.image import imread

    report = make_report(small_map)
    path = plot_trajectory(report, MAP_POSITIONS, tmp_path / "t.png")
    image = imread(path)
    assert 800 <= image.shape[1] <= 1600 and image.shape[0] >= 600
    assert image[..., :3].std() > 0.05  # something was drawn
