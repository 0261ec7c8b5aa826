"""Re-ranking depth: each extractor's default is recorded in the map and used unless overridden.

Maps written before the default was recorded (no ``rerank_k`` in the manifest) re-rank all
``top_k`` candidates, as they always did.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest

from extractor_testlib import FeatureOnlyExtractor, unit
from selavpr_ros.commands import map_info
from selavpr_ros.extractors.base import ExtractorInfo, Features, RerankSettings
from selavpr_ros.extractors.classical import RERANK_K, ClassicalConfig
from selavpr_ros.localizer import Localizer, LocalizerConfig
from selavpr_ros.localizer.config import config_from_values, config_values
from selavpr_ros.map import PlaceInfo, PlaceMap

D, L, C, PLACES = 16, 12, 8, 9


def fixed(rerank: RerankSettings) -> FeatureOnlyExtractor:
    """Return an extractor identity with given re-rank settings (queries pass features)."""
    return FeatureOnlyExtractor(ExtractorInfo("fixed", "w", D, L, C, rerank=rerank))


def make_map(path: Path, rerank: RerankSettings) -> Features:
    """Write a map of PLACES random places; return a query (a noisy copy of place 0)."""
    rng = np.random.default_rng(0)
    feats = Features(unit(rng.standard_normal((PLACES, D))),
                     unit(rng.standard_normal((PLACES, L, C))))
    with PlaceMap.create(path, fixed(rerank)) as pm:
        pm.append(feats, [PlaceInfo(stamp_ns=i) for i in range(PLACES)])
    return Features(unit(feats.global_desc[:1] + 0.1), unit(feats.local[:1] + 0.1))


def reranked(localizer: Localizer, query: Features) -> int:
    """How many candidates of one answer carry an MNN score."""
    result = localizer.query_features(query)
    return sum(not math.isnan(c.rerank_score) for c in result.candidates)


def test_the_maps_default_depth_is_used_unless_overridden(tmp_path: Path) -> None:
    query = make_map(tmp_path / "m", RerankSettings("ratio", ratio=0.9, rerank_k=3))
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["extractor"]["rerank"]["rerank_k"] == 3  # recorded in the map
    with PlaceMap.open(tmp_path / "m") as pm:
        extractor = fixed(pm.extractor_info.rerank)
        default = Localizer(pm, extractor, LocalizerConfig(top_k=PLACES))
        assert default.rerank_k == 3 and reranked(default, query) == 3
        assert default.effective_config.rerank_k == 3  # what evaluation.json records
        assert "top 3 of 9" in default.describe_rerank()
        assert "the map's default" in default.describe_rerank()
        assert "ratio test at 0.9" in default.describe_rerank()
        override = Localizer(pm, extractor, LocalizerConfig(top_k=PLACES, rerank_k=5))
        assert reranked(override, query) == 5 and "(rerank_k)" in override.describe_rerank()
        assert reranked(Localizer(pm, extractor, LocalizerConfig(top_k=2)), query) == 2
        none = Localizer(pm, extractor, LocalizerConfig(top_k=PLACES, rerank_k=0))
        assert reranked(none, query) == 0
        # the node swaps its config in per frame: the depth follows the new one
        default.config = LocalizerConfig(top_k=PLACES, rerank_k=7)
        assert reranked(default, query) == 7


def test_a_map_without_a_recorded_default_reranks_all(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    query = make_map(tmp_path / "old", RerankSettings("none"))
    path = tmp_path / "old" / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["extractor"]["rerank"]["rerank_k"]  # as written before the field existed
    path.write_text(json.dumps(manifest))
    with PlaceMap.open(tmp_path / "old") as pm:
        assert pm.extractor_info.rerank.rerank_k is None
        localizer = Localizer(pm, fixed(RerankSettings("none")), LocalizerConfig(top_k=PLACES))
        assert localizer.rerank_k == PLACES and reranked(localizer, query) == PLACES
        assert "the map records no default" in localizer.describe_rerank()
    map_info.run(argparse.Namespace(map=str(tmp_path / "old"), json=False, verify=False))
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "re-ranking" in ln)
    assert "plain MNN count" in line and "all candidates" in line


def test_map_info_shows_the_default(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_map(tmp_path / "m", RerankSettings("min_similarity", min_similarity=0.7, rerank_k=4))
    map_info.run(argparse.Namespace(map=str(tmp_path / "m"), json=False, verify=False))
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "re-ranking" in ln)
    assert "similarity >= 0.7" in line and "the top 4 by default" in line


def test_extractor_defaults_and_their_serialisation() -> None:
    classical = ClassicalConfig().rerank
    assert classical.match_filter == "ratio" and classical.rerank_k == RERANK_K
    assert 0 < RERANK_K < 100
    assert ClassicalConfig.from_dict(ClassicalConfig().to_dict()).rerank == classical
    old = ClassicalConfig().to_dict()
    del old["rerank"]["rerank_k"]  # a classical map written before the field
    assert ClassicalConfig.from_dict(old).rerank.rerank_k is None
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="rerank_k"):
            RerankSettings(rerank_k=bad)  # type: ignore[arg-type]


def test_minus_one_is_the_maps_default_in_parameters_and_flags() -> None:
    assert config_from_values({"rerank_k": -1}).rerank_k is None
    assert config_values(LocalizerConfig())["rerank_k"] == -1
    assert config_from_values({"rerank_k": 20}).rerank_k == 20


def test_a_map_default_of_zero_conflicts_with_score_rules(tmp_path: Path) -> None:
    make_map(tmp_path / "m", RerankSettings("none", rerank_k=0))
    with PlaceMap.open(tmp_path / "m") as pm, pytest.raises(ValueError, match="need re-ranking"):
        Localizer(pm, fixed(pm.extractor_info.rerank), LocalizerConfig(min_score=5))
