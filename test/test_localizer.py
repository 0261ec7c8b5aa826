"""Localizer: final order, decision rules, confidence, timings, and a real SelaVPR round trip."""

from __future__ import annotations

import math
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest
import torch

import reference_mnn  # bench/reference_mnn.py (pytest.ini: pythonpath = bench)
from extractor_testlib import FeatureOnlyExtractor, unit
from selavpr_ros.errors import ConfigError, MapFormatError
from selavpr_ros.extractors.base import ExtractorInfo, Features
from selavpr_ros.localizer import Candidate, Localizer, LocalizerConfig, confidence, decide
from selavpr_ros.localizer.decision import distinct_candidate
from selavpr_ros.map import PlaceInfo, PlaceMap

D, L, C = 32, 16, 8
INFO = ExtractorInfo("synthetic", "w", D, L, C)


def with_similarity(query: np.ndarray, sim: float, seed: int) -> np.ndarray:
    """Make a unit vector whose cosine with the unit vector ``query`` is ``sim``."""
    r = np.random.default_rng([7, seed]).standard_normal(D)
    r -= (r @ query) * query
    r /= np.linalg.norm(r)
    return (sim * query + math.sqrt(1 - sim**2) * r).astype(np.float32)


@pytest.fixture()
def scene(tmp_path: Path) -> tuple[PlaceMap, Features, np.ndarray]:
    """Seven places with crafted ties in MNN count and in global similarity."""
    rng = np.random.default_rng(0)
    q_global = unit(rng.standard_normal(D))
    q_local = unit(rng.standard_normal((L, C)))
    half = q_local.copy()
    half[8:] = unit(rng.standard_normal((8, C)))
    locals_ = [q_local, q_local, half, half, unit(rng.standard_normal((L, C))), half,
               unit(rng.standard_normal((L, C)))]
    sims = [0.5, 0.9, 0.7, 0.7, 0.95, 0.3, 0.2]
    globals_ = [with_similarity(q_global, s, seed=i) for i, s in enumerate(sims)]
    globals_[3] = globals_[2]  # places 2 and 3: same count and same similarity
    pm = PlaceMap.create(tmp_path / "scene", FeatureOnlyExtractor(INFO), local_dtype="float32")
    places = [PlaceInfo(stamp_ns=i, position=(40.0 * i, 0.0, 0.0), orientation=(0, 0, 0, 1))
              for i in range(7)]
    pm.append(Features(np.stack(globals_), np.stack(locals_)), places)
    query = Features(q_global[None], q_local[None])
    counts = reference_mnn.reference_mnn_scores(q_local, np.stack(locals_))
    return pm, query, counts


def test_final_order_counts_then_similarity_then_id(scene) -> None:
    pm, query, counts = scene
    result = Localizer(pm, FeatureOnlyExtractor(INFO), LocalizerConfig(top_k=7)).query(query)
    sims = {c.place_id: c.global_similarity for c in result.candidates}
    expected = sorted(range(7), key=lambda i: (-counts[i], -sims[i], i))
    assert [c.place_id for c in result.candidates] == expected
    assert expected[:2] == [1, 0]  # equal counts (16): higher similarity first
    assert expected.index(2) + 1 == expected.index(3)  # equal count and similarity: id order
    assert [c.rerank_score for c in result.candidates] == [float(counts[i]) for i in expected]
    # global ranks: a permutation in decreasing similarity (faiss orders the 2/3 tie itself)
    by_rank = sorted(result.candidates, key=lambda c: c.global_rank)
    assert [c.global_rank for c in by_rank] == list(range(7))
    assert [c.global_similarity for c in by_rank] == sorted(sims.values(), reverse=True)
    # places 1 and 0 (40 m apart) both match every feature: ambiguous, so rejected
    assert not result.accepted and result.matched is None
    assert "distinct place 0 scores 16" in result.reject_reason
    lenient = Localizer(pm, FeatureOnlyExtractor(INFO), LocalizerConfig(top_k=7, min_margin=1.0))
    result = lenient.query(query)
    assert result.accepted and result.matched.place_id == 1
    assert result.matched.position == (40.0, 0.0, 0.0) and result.matched.has_pose
    assert result.map_id == pm.map_id and result.map_frame == "map"
    assert list(result.timings_ms) == ["extract", "search", "fetch", "rerank", "decide", "pose"]
    assert all(v >= 0 for v in result.timings_ms.values())
    assert result.total_ms == pytest.approx(sum(result.timings_ms.values()))


def test_bf16_reranking_through_the_localizer(scene) -> None:
    """Precision bf16 reaches the re-ranker (named in the log line) and finds the exact copies.

    Places 0 and 1 hold the query's own features (cosine 1, far above any other pair even
    after bf16 rounding), places 2, 3 and 5 half of them: those counts survive any rounding;
    the random places' counts may move, so they are not asserted.
    """
    pm, query, counts = scene
    localizer = Localizer(pm, FeatureOnlyExtractor(INFO), LocalizerConfig(top_k=7,
                                                                          precision="bf16"))
    assert "bf16 products" in localizer.describe_rerank()
    result = localizer.query(query)
    by_id = {c.place_id: c.rerank_score for c in result.candidates}
    assert [c.place_id for c in result.candidates[:2]] == [1, 0]  # count 16, then similarity
    assert by_id[0] == by_id[1] == 16.0 == counts[0]
    assert all(by_id[i] >= 8 for i in (2, 3, 5))


def test_partial_rerank_keeps_global_order_for_the_rest(scene) -> None:
    pm, query, counts = scene
    result = Localizer(pm, FeatureOnlyExtractor(INFO), LocalizerConfig(top_k=6, rerank_k=3)).query(
        query)
    ranks = [c.global_rank for c in result.candidates]
    head, tail = result.candidates[:3], result.candidates[3:]
    assert sorted(ranks[:3]) == [0, 1, 2] and ranks[3:] == [3, 4, 5]
    assert all(math.isnan(c.rerank_score) for c in tail)
    assert [c.rerank_score for c in head] == sorted(
        (float(counts[c.place_id]) for c in head), reverse=True)
    no_rerank = Localizer(pm, FeatureOnlyExtractor(INFO), LocalizerConfig(top_k=7, rerank_k=0))
    result = no_rerank.query(query)
    assert [c.place_id for c in result.candidates][:2] == [4, 1]  # similarity 0.95, 0.9
    assert result.timings_ms["rerank"] == 0.0
    # without re-ranking the margin compares similarities: 0.95 / 0.9 (place 1 is 120 m away)
    assert result.margin == pytest.approx(
        result.candidates[0].global_similarity / result.candidates[1].global_similarity)
    assert not result.accepted and "global similarity margin" in result.reject_reason


def test_queries_from_another_thread(scene) -> None:
    """ROS executors call from worker threads: the map's SQLite connection must allow it."""
    from concurrent.futures import ThreadPoolExecutor

    pm, query, _ = scene
    localizer = Localizer(pm, FeatureOnlyExtractor(INFO), LocalizerConfig(top_k=7))
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: localizer.query(query), range(4)))
    assert len({tuple(c.place_id for c in r.candidates) for r in results}) == 1


def test_extractor_mismatch_is_refused(scene) -> None:
    pm, _, _ = scene
    with pytest.raises(MapFormatError, match="fingerprint"):
        Localizer(pm, FeatureOnlyExtractor(replace(INFO, fingerprint="other")))


def test_empty_map_is_rejected(tmp_path: Path) -> None:
    pm = PlaceMap.create(tmp_path / "empty", FeatureOnlyExtractor(INFO))
    q = Features(unit(np.ones((1, D))), unit(np.ones((1, L, C))))
    result = Localizer(pm, FeatureOnlyExtractor(INFO)).query(q)
    assert not result.accepted and result.candidates == () and "empty" in result.reject_reason
    assert result.confidence == 0.0 and result.matched is None


# ------------------------------------------------------------------ decision rules, by hand
IDS = [10, 11, 40]
SCORES = [100.0, 95.0, 50.0]
SIMS = [0.8, 0.7, 0.6]


def test_margin_uses_the_best_distinct_place() -> None:
    cfg = LocalizerConfig()  # ratio 1.1 at 25 m
    near = [(0.0, 0.0, 0.0), (5.0, 0.0, 0.0), (100.0, 0.0, 0.0)]
    d = decide(IDS, SCORES, SIMS, near, 400, cfg, reranked=True)
    # place 11 is 5 m away (the same place); place 40 is the distinct one: 100 / 50 = 2
    assert d.accepted and d.distinct_index == 2 and d.margin == 2.0
    assert d.score_fraction == 0.25
    assert d.confidence == pytest.approx(1.0 * (1 - 50 / 100))
    far = [(0.0, 0.0, 0.0), (30.0, 0.0, 0.0), (100.0, 0.0, 0.0)]
    d = decide(IDS, SCORES, SIMS, far, 400, cfg, reranked=True)
    assert not d.accepted and d.distinct_index == 1 and d.confidence == 0.0
    assert "margin (ratio) 1.053 < 1.100" in d.reject_reason and "place 11" in d.reject_reason
    # without positions, ids 10 apart are distinct: 11 is not, 40 is
    d = decide(IDS, SCORES, SIMS, [None] * 3, 400, cfg, reranked=True)
    assert d.accepted and d.distinct_index == 2
    # no distinct candidate at all: unlimited margin
    d = decide(IDS[:2], SCORES[:2], SIMS[:2], near[:2], 400, cfg, reranked=True)
    assert d.accepted and d.margin == math.inf and d.confidence == 1.0


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"min_score": 101}, "MNN score 100 < 101"),
        ({"min_score_fraction": 0.3}, "MNN score fraction 0.250 < 0.300"),
        ({"min_global_similarity": 0.85}, "global similarity 0.800 < 0.850"),
        ({"margin_mode": "difference", "min_margin": 51.0}, "margin (difference) 50.000"),
    ],
)
def test_each_rule_rejects(changes: dict, reason: str) -> None:
    positions = [(0.0, 0.0, 0.0), (5.0, 0.0, 0.0), (100.0, 0.0, 0.0)]
    d = decide(IDS, SCORES, SIMS, positions, 400, LocalizerConfig(**changes), reranked=True)
    assert not d.accepted and reason in d.reject_reason
    relaxed = {k: v for k, v in changes.items() if k == "margin_mode"}
    assert decide(IDS, SCORES, SIMS, positions, 400, LocalizerConfig(**relaxed),
                  reranked=True).accepted


def plain_distinct(ids: list[int], positions: list, cfg: LocalizerConfig) -> int | None:
    """Find the distinct candidate with a plain loop (the oracle of the numpy version)."""
    for i in range(1, len(ids)):
        if positions[0] is not None and positions[i] is not None:
            far = math.dist(positions[0], positions[i]) >= cfg.margin_distance_m
        else:
            far = abs(ids[i] - ids[0]) >= cfg.margin_id_distance
        if far:
            return i
    return None


def as_array(positions: list) -> np.ndarray:
    return np.array([[math.nan] * 3 if p is None else p for p in positions]).reshape(-1, 3)


def test_distinct_candidate_equals_the_plain_loop() -> None:
    cfg = LocalizerConfig()  # 25 m, 10 ids
    # crafted: exactly 25 m (3-4-5 triangles), 10 ids apart, missing positions either side
    crafted = [
        ([5, 6, 7], [(0.0, 0.0, 0.0), (15.0, 20.0, 0.0), None]),  # exactly 25 m: distinct
        ([5, 6, 7], [(0.0, 0.0, 0.0), (15.0, 19.0, 0.0), (0.0, 24.0, 7.0)]),  # 24.2, then 25
        ([5, 14, 15], [None, (99.0, 0.0, 0.0), (99.0, 0.0, 0.0)]),  # 9 ids, then 10 ids
        ([20, 11, 10], [(0.0, 0.0, 0.0), None, (1.0, 0.0, 0.0)]),  # 9 ids down; 1 m away
        ([3], [None]),
    ]
    assert [plain_distinct(i, p, cfg) for i, p in crafted] == [1, 2, 2, None, None]
    rng = np.random.default_rng(5)
    cases = list(crafted)
    for _ in range(300):  # random candidates, many of them on the 25 m limit
        n = int(rng.integers(1, 30))
        ids = rng.integers(0, 60, n).tolist()
        best = rng.uniform(-1e3, 1e3, 3)
        ways = rng.standard_normal((n, 3))
        ways /= np.linalg.norm(ways, axis=1, keepdims=True)
        dists = np.where(rng.random(n) < 0.5, 25.0, rng.uniform(0, 50, n))
        points = best + ways * dists[:, None]
        points[0] = best
        positions = [None if rng.random() < 0.2 else tuple(p) for p in points.tolist()]
        cases.append((ids, positions))
    for ids, positions in cases:
        want = plain_distinct(ids, positions, cfg)
        assert distinct_candidate(ids, positions, cfg) == want
        assert distinct_candidate(np.asarray(ids), as_array(positions), cfg) == want


def test_decide_gives_the_same_decision_for_lists_and_arrays() -> None:
    rng = np.random.default_rng(6)
    for margin_mode in ("ratio", "difference"):
        cfg = LocalizerConfig(margin_mode=margin_mode, min_margin=1.05 if margin_mode ==
                              "ratio" else 3.0)
        for _ in range(100):
            n = int(rng.integers(1, 20))
            ids = rng.permutation(80)[:n].tolist()
            scores = sorted(rng.integers(0, 60, n).astype(float).tolist(), reverse=True)
            sims = rng.uniform(0.2, 0.9, n).tolist()
            positions = [None if rng.random() < 0.3 else (float(rng.integers(0, 60)), 0.0, 0.0)
                         for _ in range(n)]
            from_lists = decide(ids, scores, sims, positions, 200, cfg, reranked=True)
            from_arrays = decide(np.asarray(ids), np.asarray(scores),
                                 np.asarray(sims, np.float32).astype(np.float64),
                                 as_array(positions), 200, cfg, reranked=True)
            assert from_lists == from_arrays
            assert from_lists.distinct_index == plain_distinct(ids, positions, cfg)


def test_localizer_candidates_and_decision_against_the_map_rows(tmp_path: Path) -> None:
    """Candidates' metadata equals the SQLite rows; the decision equals one done by hand."""
    rng = np.random.default_rng(8)
    n = 60
    glob = unit(rng.standard_normal((n, D)))
    local = unit(rng.standard_normal((n, L, C)))
    infos = [PlaceInfo(stamp_ns=10**9 * i + 3,
                       position=None if i % 4 == 0 else (2.0 * i, 0.0, 0.0),
                       orientation=None if i % 4 == 0 or i % 7 == 0 else (0.0, 0.0, 0.0, 1.0))
             for i in range(n)]
    pm = PlaceMap.create(tmp_path / "m", FeatureOnlyExtractor(INFO), local_dtype="float32")
    pm.append(Features(glob[:30], local[:30]), infos[:30])
    pm.append(Features(glob[30:], local[30:]), infos[30:])
    decided = 0
    for config in (LocalizerConfig(top_k=40, rerank_k=20, min_margin=1.02),
                   LocalizerConfig(top_k=40, rerank_k=0, min_margin=1.1)):
        localizer = Localizer(pm, FeatureOnlyExtractor(INFO), config)
        for _ in range(12):
            target = int(rng.integers(0, n))
            query = Features(unit(glob[target] + 0.5 * rng.standard_normal(D))[None],
                             unit(local[target] + 0.5 * rng.standard_normal((L, C)))[None])
            result = localizer.query(query)
            cands = result.candidates
            places = pm.places([c.place_id for c in cands])  # SQLite
            # built without __init__ (see localizer._candidates): the same as built with it
            names = [f.name for f in fields(Candidate)]
            assert all(list(vars(c)) == names for c in cands)
            assert cands == tuple(Candidate(**vars(c)) for c in cands)
            assert hash(cands[0]) == hash(Candidate(**vars(cands[0])))
            assert [(c.place_stamp_ns, c.position, c.orientation) for c in cands] == [
                (p.stamp_ns, p.position, p.orientation) for p in places]
            # the decision by hand from the rows
            k = config.rerank_k or len(cands)
            scores = [c.rerank_score if config.rerank_k else c.global_similarity
                      for c in cands[:k]]
            d = plain_distinct([p.id for p in places[:k]], [p.position for p in places[:k]],
                               config)
            margin = math.inf if d is None else scores[0] / scores[d]
            assert result.margin == margin
            assert result.accepted == (margin >= config.min_margin)
            fraction = scores[0] / L if config.rerank_k else scores[0]
            full = config.confidence_full_fraction if config.rerank_k else 1.0
            evidence = min(1.0, fraction / full)
            want = evidence * (1.0 if d is None else 1 - scores[d] / scores[0])
            assert result.confidence == pytest.approx(want if result.accepted else 0.0)
            decided += d is not None
    assert decided > 0  # the margin rule was exercised


def test_confidence_is_bounded_and_monotone() -> None:
    values = [confidence(f, b, s, 0.25) for f, b, s in
              [(0.05, 100, 90), (0.1, 200, 90), (0.2, 400, 90), (0.3, 600, 90), (0.3, 600, 10)]]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert values == sorted(values) and values[0] < values[-1]
    assert confidence(0.5, 100, None, 0.25) == 1.0
    assert confidence(0.0, 0, None, 0.25) == 0.0


def test_config_validation() -> None:
    for bad in ({"top_k": 0}, {"rerank_k": 200}, {"precision": "fp16"}, {"min_margin": -1.0},
                {"margin_mode": "sometimes"}, {"min_score_fraction": 2.0},
                {"rerank_k": 0, "min_score": 5}, {"confidence_full_fraction": 0.0}):
        with pytest.raises(ConfigError):
            LocalizerConfig(**bad)
    config = LocalizerConfig()
    assert config.rerank_k is None  # the map's default
    assert config.rerank_depth(None) == 100  # no default recorded: all of top_k
    assert config.rerank_depth(20) == 20
    assert LocalizerConfig(top_k=10).rerank_depth(20) == 10  # never more than top_k
    assert LocalizerConfig(rerank_k=5).rerank_depth(20) == 5  # the user's value wins
    with pytest.raises(ConfigError, match="need re-ranking"):
        LocalizerConfig(min_score=3).check_rerank_depth(0)  # a map default of 0


# ------------------------------------------------------------------ with a real SelaVPR model
def synthetic_image(seed: int) -> np.ndarray:
    """Make a blocky colour pattern with noise, 120x160 RGB."""
    rng = np.random.default_rng(seed)
    blocks = np.kron(rng.integers(0, 256, (6, 8, 3)).astype(np.float32), np.ones((20, 20, 1)))
    return np.clip(blocks + rng.normal(0, 20, blocks.shape), 0, 255).astype(np.uint8)


def test_image_in_the_map_is_found_first_and_accepted(tmp_path: Path) -> None:
    from selavpr_ros.extractors.selavpr import SelaVPRExtractor
    from selavpr_ros.model import SelaVPR, SelaVPRConfig

    torch.manual_seed(0)
    extractor = SelaVPRExtractor(SelaVPR(SelaVPRConfig(backbone="vits14", depth=2)).eval())
    images = [synthetic_image(i) for i in range(5)]
    pm = PlaceMap.create(tmp_path / "selavpr", extractor)
    poses = [((30.0 * i, 1.0, 0.0), (0.0, 0.0, 0.1 * i, math.sqrt(1 - 0.01 * i * i)))
             for i in range(5)]
    pm.append(extractor.extract(images),
              [PlaceInfo(stamp_ns=i, position=p, orientation=o) for i, (p, o) in
               enumerate(poses)])
    localizer = Localizer(pm, extractor, LocalizerConfig(top_k=5))
    result = localizer.query(images[3])
    assert result.candidates[0].place_id == 3 and result.accepted
    assert result.matched.position == poses[3][0]
    assert result.matched.orientation == pytest.approx(poses[3][1])
    assert result.candidates[0].rerank_score == 61 * 61  # the image matches itself everywhere
    assert 0.0 < result.confidence <= 1.0 and result.reject_reason == ""
    assert result.timings_ms["extract"] > 0
