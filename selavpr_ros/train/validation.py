"""Validation Recall@N before and after re-ranking, with the code the localizer node runs.

The validation database (a mapping drive) is written to a temporary place map with the model
being trained, and every validation query goes through :class:`~selavpr_ros.localizer.Localizer`
exactly as in ``localizer_node``: faiss global search, MNN re-ranking of the top ``rerank_k``
(local features stored as float16, as in a built map), deterministic tie order. Recall@N of the
global stage is read from the same answers (candidates by their global rank).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from selavpr_ros.eval.metrics import positives_by_radius, recall_at_n
from selavpr_ros.model.network import SelaVPR
from selavpr_ros.train.config import TrainConfig
from selavpr_ros.train.data import Drive


@dataclass(frozen=True)
class ValidationResult:
    """Recall@N (fractions) of the global ranking and of the re-ranked one."""

    ns: tuple[int, ...]
    global_recall: tuple[float, ...]
    reranked_recall: tuple[float, ...]
    queries: int

    def value(self, metric: str, n: int) -> float:
        recalls = self.reranked_recall if metric == "reranked" else self.global_recall
        return recalls[self.ns.index(n)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "queries": self.queries,
            "global": {str(n): r for n, r in zip(self.ns, self.global_recall, strict=True)},
            "reranked": {str(n): r for n, r in zip(self.ns, self.reranked_recall, strict=True)},
        }


def _images(drive: Drive) -> list[np.ndarray]:
    return [frame.load() for frame in drive.frames]


def validate(model: SelaVPR, database: Drive, queries: list[Drive], config: TrainConfig,
             batch_size: int) -> ValidationResult:
    """Localise every frame of ``queries`` against ``database``; the model is left in eval mode."""
    from selavpr_ros.extractors.base import Features
    from selavpr_ros.extractors.selavpr import SelaVPRExtractor
    from selavpr_ros.localizer import Localizer, LocalizerConfig
    from selavpr_ros.map import PlaceInfo, PlaceMap

    extractor = SelaVPRExtractor(model, device=config.device, batch_size=batch_size,
                                 precision="fp32" if config.precision == "fp32" else
                                 config.precision, fingerprint="validation")
    top_k = min(config.rerank_k, len(database))
    ranked_global: list[list[int]] = []
    ranked_final: list[list[int]] = []
    with tempfile.TemporaryDirectory(prefix="selavpr-val-") as tmp:
        place_map = PlaceMap.create(Path(tmp) / "val.selavpr", extractor)
        with place_map:
            for start in range(0, len(database), batch_size):
                frames = database.frames[start:start + batch_size]
                features = extractor.extract([f.load() for f in frames])
                place_map.append(features, [
                    PlaceInfo(stamp_ns=f.stamp_ns, position=f.pose.position if f.pose else None,
                              source=f.source, source_ref=f.source_ref) for f in frames])
            localizer = Localizer(place_map, extractor,
                                  LocalizerConfig(top_k=top_k, rerank_k=top_k,
                                                  device=config.device, min_margin=1.0),
                                  feature_cache=False)
            for drive in queries:
                for start in range(0, len(drive), batch_size):
                    batch = extractor.extract(
                        [f.load() for f in drive.frames[start:start + batch_size]])
                    for i in range(len(batch)):
                        one = Features(batch.global_desc[i:i + 1], batch.local[i:i + 1])
                        result = localizer.query_features(one)
                        ranked_final.append([c.place_id for c in result.candidates])
                        by_global = sorted(result.candidates, key=lambda c: c.global_rank)
                        ranked_global.append([c.place_id for c in by_global])
    query_xyz = np.concatenate([d.positions for d in queries])
    positives = positives_by_radius(query_xyz, database.positions, config.val_radius_m)
    ns = config.recall_ns
    glob = recall_at_n(ranked_global, positives, ns)
    final = recall_at_n(ranked_final, positives, ns)
    return ValidationResult(ns, glob.recall, final.recall, glob.evaluated)
