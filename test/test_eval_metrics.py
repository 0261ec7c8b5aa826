"""Evaluation metrics against hand-computed tiny cases: positives, Recall@N, precision-recall."""

from __future__ import annotations

import math

import numpy as np
import pytest

from selavpr_ros.errors import ConfigError
from selavpr_ros.eval.metrics import (
    frame_index_of,
    positives_by_frames,
    positives_by_radius,
    precision_recall,
    recall_at_n,
)

NAN = math.nan


def test_positives_by_radius_is_inclusive_horizontal_and_skips_unknown_positions():
    places = np.array([[0, 0, 0], [10, 0, 0], [25, 0, 0], [0, 0, 100], [NAN, NAN, NAN],
                       [30, 0, 0]], dtype=float)
    queries = np.array([[0, 0, 0], [26, 0, 0], [NAN, NAN, NAN], [500, 0, 0]], dtype=float)
    found = positives_by_radius(queries, places, radius_m=25.0)
    # horizontal: place 3 is 100 m above the query but at distance 0; 25 m is inclusive
    assert [list(p) for p in found] == [[0, 1, 2, 3], [1, 2, 5], [], []]
    found3d = positives_by_radius(queries, places, radius_m=25.0, dims=3)
    assert list(found3d[0]) == [0, 1, 2]


def test_positives_by_radius_keeps_precision_at_utm_scale():
    east, north = 500_000.0, 5_000_000.0
    places = np.array([[east, north, 0], [east + 25.0, north, 0], [east + 25.01, north, 0]])
    (found,) = positives_by_radius(np.array([[east, north, 0.0]]), places, 25.0)
    assert list(found) == [0, 1]


def test_positives_by_frame_tolerance():
    map_frames = [0, 1, 2, 3, 4, 5, None, 10]
    found = positives_by_frames([0, 3, 8, None, 12], map_frames, tolerance=2)
    assert [list(p) for p in found] == [[0, 1, 2], [1, 2, 3, 4, 5], [7], [], [7]]
    assert [list(p) for p in positives_by_frames([3], map_frames, 0)] == [[3]]
    with pytest.raises(ConfigError):
        positives_by_frames([1], map_frames, -1)


def test_frame_index_is_the_last_integer_of_the_reference():
    assert frame_index_of("Image012.jpg") == 12
    assert frame_index_of("37") == 37
    assert frame_index_of("run2_frame0099.png") == 99
    assert frame_index_of("image") is None


def test_recall_at_n_counts_the_first_positive_and_leaves_out_queries_without_one():
    positives = [np.array([3]), np.array([7, 8]), np.array([], dtype=np.int64), np.array([9])]
    ranked = [[3, 1, 2], [1, 2, 8, 7], [5, 6], [1, 2, 3]]
    r = recall_at_n(ranked, positives, ns=(1, 2, 3, 5))
    # q0 hit at rank 1, q1 at rank 3 (8 comes first), q2 left out, q3 never
    assert r.evaluated == 3 and r.without_positive == 1
    assert r.hits == (1, 1, 2, 2)
    assert r.recall == pytest.approx((1 / 3, 1 / 3, 2 / 3, 2 / 3))
    d = r.as_dict()
    assert d["recall"]["3"] == pytest.approx(2 / 3) and d["queries_without_positive"] == 1


def test_recall_at_n_without_any_positive_is_undefined_not_zero():
    r = recall_at_n([[1], [2]], [np.array([], np.int64)] * 2, ns=(1,))
    assert r.evaluated == 0 and math.isnan(r.recall[0])
    assert r.as_dict()["recall"]["1"] is None


def test_recall_at_n_rejects_bad_n():
    with pytest.raises(ConfigError):
        recall_at_n([[1]], [np.array([1])], ns=(0,))


def test_precision_recall_by_hand():
    # five queries with positives, one without (q5); scores of accepted queries
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.85]
    accepted = [True, True, True, True, False, True]
    correct = [True, True, False, True, False, False]
    has = [True, True, True, True, True, False]
    pr = precision_recall(scores, accepted, correct, has, "s")
    # thresholds descending over accepted scores: 0.9, 0.85, 0.8, 0.7, 0.6
    assert pr.thresholds == (0.9, 0.85, 0.8, 0.7, 0.6)
    assert pr.precision == pytest.approx((1.0, 1 / 2, 2 / 3, 2 / 4, 3 / 5))
    assert pr.recall == pytest.approx((1 / 5, 1 / 5, 2 / 5, 2 / 5, 3 / 5))
    # AUC = 0.2*1 + 0*0.5 + 0.2*(2/3) + 0*0.5 + 0.2*0.6
    assert pr.auc == pytest.approx(0.2 + 0.2 * 2 / 3 + 0.2 * 0.6)
    # the query without a positive (0.85) is a false positive right after the best one
    assert pr.recall_at_100 == pytest.approx(0.2)
    assert pr.threshold_at_100 == 0.9
    assert pr.positives == 5 and pr.predicted_at_accept == 5
    assert pr.precision_at_accept == pytest.approx(3 / 5)
    assert pr.recall_at_accept == pytest.approx(3 / 5)


def test_tied_scores_are_admitted_together():
    # a correct and a wrong query share 0.8: no threshold separates them
    pr = precision_recall([0.9, 0.8, 0.8, 0.5], [True] * 4, [True, True, False, True],
                          [True] * 4)
    assert pr.thresholds == (0.9, 0.8, 0.5)
    assert pr.precision == pytest.approx((1.0, 2 / 3, 3 / 4))
    assert pr.recall == pytest.approx((0.25, 0.5, 0.75))
    assert pr.recall_at_100 == pytest.approx(0.25) and pr.threshold_at_100 == 0.9
    # ties of correct queries only still reach 100 %: both enter at 0.8
    pr = precision_recall([0.8, 0.8, 0.3], [True] * 3, [True, True, False], [True] * 3)
    assert pr.thresholds == (0.8, 0.3)
    assert pr.recall_at_100 == pytest.approx(2 / 3) and pr.threshold_at_100 == 0.8


def test_rejected_queries_are_never_predicted_and_missing_scores_are_counted():
    pr = precision_recall([0.9, 0.95, NAN], [True, False, True], [True, True, True],
                          [True] * 3)
    assert pr.thresholds == (0.9,)  # 0.95 was rejected, NaN cannot be thresholded
    assert pr.precision == (1.0,) and pr.recall == pytest.approx((1 / 3,))
    assert pr.unscored == 1
    assert pr.recall_at_accept == pytest.approx(2 / 3)  # the decision itself accepted two


def test_best_scored_prediction_wrong_means_no_safe_threshold():
    pr = precision_recall([0.9, 0.5], [True, True], [False, True], [True, True])
    assert pr.recall_at_100 == 0.0 and pr.threshold_at_100 is None
    assert pr.auc == pytest.approx(0.5 * 0.5)


def test_nothing_accepted_gives_an_empty_curve():
    pr = precision_recall([0.0, 0.0], [False, False], [False, False], [True, False])
    assert pr.thresholds == () and pr.auc == 0.0 and pr.recall_at_100 == 0.0
    assert math.isnan(pr.precision_at_accept) and pr.recall_at_accept == 0.0
    assert pr.as_dict()["precision_at_accept"] is None


def test_correct_without_positive_is_a_caller_error():
    with pytest.raises(ValueError):
        precision_recall([1.0], [True], [True], [False])
