"""Training settings; the defaults are the published recipe (selavpr-reference.md, section 4)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from selavpr_ros.errors import ConfigError

TrainPrecision = Literal["fp32", "fp16", "bf16"]


@dataclass(frozen=True)
class TrainConfig:
    """How the adapters are trained.

    Triplets and mining:
        positive_radius_m: a positive lies within this distance of the query (10 m).
        negative_radius_m: a negative lies beyond this distance (25 m).
        positives_from_same_drive: also take positives from the query's own drive (by default
            only other drives are, as a revisit is what place recognition must match).
        negatives_per_query: hardest negatives per query (2).
        cache_refresh: queries per mining round; the global-descriptor cache is recomputed
            with the current weights before each round (1000).
        negatives_sample: random database images the hard negatives are mined from (1000).
    Optimisation:
        batch_queries: queries per step, each with one positive and its negatives (4).
        lr: Adam learning rate (1e-5, no schedule, no weight decay).
        margin: triplet margin on global descriptors (0.1).
        epochs: at most this many epochs; queries_per_epoch: queries per epoch (5000).
        patience: stop after this many validations without improvement (3).
        stop_metric / stop_n: the early-stopping recall, "reranked" or "global", at N (R@5
            after re-ranking, as published).
    Validation:
        val_radius_m: a map place is a positive of a validation query within this distance.
        rerank_k: candidates re-ranked by MNN count (100).
        recall_ns: the N of the logged Recall@N.
    Machine:
        device, precision: "fp16"/"bf16" autocast on CUDA ("bf16" also on the CPU).
        infer_batch_size: images per forward when mining and validating (0 = from free memory).
        grad_checkpointing: recompute block activations in the backward pass (less memory).
        seed: every random choice (mining samples, query order) derives from it.
        save_every: steps between resumable checkpoints (also saved at each epoch's end).
    """

    positive_radius_m: float = 10.0
    negative_radius_m: float = 25.0
    positives_from_same_drive: bool = False
    negatives_per_query: int = 2
    cache_refresh: int = 1000
    negatives_sample: int = 1000
    batch_queries: int = 4
    lr: float = 1e-5
    margin: float = 0.1
    epochs: int = 50
    queries_per_epoch: int = 5000
    patience: int = 3
    stop_metric: Literal["reranked", "global"] = "reranked"
    stop_n: int = 5
    val_radius_m: float = 25.0
    rerank_k: int = 100
    recall_ns: tuple[int, ...] = (1, 5, 10)
    device: str = "cpu"
    precision: TrainPrecision = "fp32"
    infer_batch_size: int = 0
    grad_checkpointing: bool = False
    seed: int = 0
    save_every: int = 100

    def __post_init__(self) -> None:
        object.__setattr__(self, "recall_ns", tuple(sorted({int(n) for n in self.recall_ns})))
        checks = (
            (self.positive_radius_m > 0, "positive_radius_m must be > 0"),
            (self.negative_radius_m >= self.positive_radius_m,
             "negative_radius_m must be >= positive_radius_m"),
            (self.negatives_per_query >= 1, "negatives_per_query must be >= 1"),
            (self.cache_refresh >= 1, "cache_refresh must be >= 1"),
            (self.negatives_sample >= self.negatives_per_query,
             "negatives_sample must be >= negatives_per_query"),
            (self.batch_queries >= 1, "batch_queries must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.margin >= 0, "margin must be >= 0"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.queries_per_epoch >= 1, "queries_per_epoch must be >= 1"),
            (self.patience >= 1, "patience must be >= 1"),
            (self.stop_metric in ("reranked", "global"), "stop_metric must be reranked|global"),
            (self.stop_n >= 1, "stop_n must be >= 1"),
            (self.val_radius_m > 0, "val_radius_m must be > 0"),
            (self.rerank_k >= 1, "rerank_k must be >= 1"),
            (bool(self.recall_ns) and self.recall_ns[0] >= 1, "recall_ns must be >= 1"),
            (self.precision in ("fp32", "fp16", "bf16"), "precision must be fp32|fp16|bf16"),
            (self.infer_batch_size >= 0, "infer_batch_size must be >= 0"),
            (self.save_every >= 1, "save_every must be >= 1"),
        )
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"training: {message}")
        if self.precision == "fp16" and not self.device.startswith("cuda"):
            raise ConfigError("training: precision fp16 needs a CUDA device (bf16 runs on CPU)")
        if self.stop_n not in self.recall_ns:
            object.__setattr__(self, "recall_ns", tuple(sorted({*self.recall_ns, self.stop_n})))

    @property
    def steps_per_refresh(self) -> int:
        return -(-self.cache_refresh // self.batch_queries)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["recall_ns"] = list(self.recall_ns)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"training: unknown settings {unknown}")
        values = dict(data)
        if "recall_ns" in values:
            values["recall_ns"] = tuple(values["recall_ns"])
        return cls(**values)
