"""The training loop: mining rounds, optimiser steps, validation, early stopping, resume.

An epoch is ``ceil(queries_per_epoch / cache_refresh)`` mining rounds; a round mines triplets
with the current weights, then steps through them ``batch_queries`` at a time. The run state
(epoch, round, step, the round's triplets, optimiser, RNG, loss sums, history) is saved every
``save_every`` steps and at each epoch's end, so a killed run resumes where its last save was
and ends where the uninterrupted run would have ended.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from selavpr_ros.errors import CheckpointError, ConfigError
from selavpr_ros.model.checkpoint import check_keys, normalize_keys
from selavpr_ros.model.inference import InferenceRunner, resolve_device
from selavpr_ros.model.network import SelaVPR
from selavpr_ros.train import state as ckpt
from selavpr_ros.train.config import TrainConfig
from selavpr_ros.train.data import Drive, ImageStore
from selavpr_ros.train.losses import triplet_losses
from selavpr_ros.train.mining import TripletMiner
from selavpr_ros.train.params import (
    activation_bytes,
    count_parameters,
    freeze_for_training,
    inference_batch_size,
)
from selavpr_ros.train.report import plot_history, write_log
from selavpr_ros.train.validation import ValidationResult, validate

log = logging.getLogger(__name__)

AUTOCAST = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class RunState:
    """Where a run stands; saved in ``last_model.pth`` under ``selavpr_ros_train``."""

    epoch: int = 1
    round: int = 0
    step: int = 0
    global_step: int = 0
    triplets: np.ndarray | None = None
    loss_sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    loss_count: int = 0
    images: int = 0
    seconds: float = 0.0
    best: float = -1.0
    best_epoch: int = 0
    not_improved: int = 0
    finished: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if k != "triplets"}
        out["triplets"] = None if self.triplets is None else torch.from_numpy(self.triplets)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunState:
        values = dict(data)
        trip = values.pop("triplets", None)
        run = cls(**values)
        run.triplets = None if trip is None else trip.numpy().astype(np.int64)
        return run


@dataclass(frozen=True)
class TrainSummary:
    """What a run did: epochs, best validation and where the outputs are."""

    out_dir: Path
    epochs: int
    steps: int
    best_epoch: int
    stopped_early: bool
    before: dict[str, Any] | None
    best: dict[str, Any] | None
    trainable: int
    total: int

    def lines(self) -> list[str]:
        out = [f"trained {self.trainable:,} of {self.total:,} parameters for {self.epochs} "
               f"epochs ({self.steps} steps){', stopped early' if self.stopped_early else ''}"]
        for label, val in (("before training", self.before), (f"best (epoch {self.best_epoch})",
                                                             self.best)):
            if val:
                out.append(f"{label}: " + ", ".join(
                    f"R@{n} {100 * val['global'][n]:.1f}% global / "
                    f"{100 * val['reranked'][n]:.1f}% re-ranked" for n in list(val["global"])[:2]))
        out.append(f"checkpoint: {self.out_dir / ckpt.BEST} and "
                   f"{self.out_dir / ckpt.BEST_SAFETENSORS}")
        return out


class Trainer:
    """Holds the model, optimiser, data and run state of one training run (see module doc)."""

    def __init__(self, model: SelaVPR, train_drives: list[Drive], val_drives: list[Drive],
                 config: TrainConfig, out_dir: Path, *, source: str = "",
                 progress: bool = True) -> None:
        if not train_drives:
            raise ConfigError("training needs at least one training drive")
        self.config = config
        self.out_dir = Path(out_dir)
        self.device = resolve_device(config.device)
        self.model = model.to(self.device)
        self.source = source or model.weights_source
        self.progress = progress
        self.train_drives = train_drives
        self.val_drives = val_drives
        self.store = ImageStore(train_drives, model.config.input_hw)
        positions = np.concatenate([d.positions for d in train_drives])
        drive_ids = np.concatenate([np.full(len(d), i) for i, d in enumerate(train_drives)])
        self.miner = TripletMiner(positions, drive_ids, config)
        self.trainable = freeze_for_training(model)
        self.model.backbone.grad_checkpointing = config.grad_checkpointing
        self.optimizer = torch.optim.Adam(self.trainable, lr=config.lr)
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=config.precision == "fp16")
        gh, gw = model.config.grid_hw
        lh, lw = model.config.local_hw
        self.infer_batch = inference_batch_size(
            self.device, activation_bytes(model.config.embed_dim, gh * gw + 1, lh * lw),
            config.infer_batch_size)
        self.run = RunState()

    # ------------------------------------------------------------------ checkpoints
    def _run_dict(self) -> dict[str, Any]:
        return {
            "model_config": self.model.config.to_dict(),
            "train_config": self.config.to_dict(),
            "source": self.source,
            "state": self.run.to_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": (torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []),
            "scaler": self.scaler.state_dict(),
        }

    def save_last(self) -> None:
        last = self.run.history[-1].get("val") if self.run.history else None
        recalls = [] if not last else [last["reranked"][str(n)] for n in self.config.recall_ns]
        ckpt.save_torch({
            "epoch_num": self.run.epoch,
            "model_state_dict": ckpt.official_state_dict(self.model),
            "optimizer_state_dict": self.optimizer.state_dict(),
            "recalls": recalls,
            "best_r5": self.run.best,
            "not_improved_num": self.run.not_improved,
            ckpt.RUN_KEY: self._run_dict(),
        }, self.out_dir / ckpt.LAST)

    def resume(self) -> None:
        """Continue from ``last_model.pth``; refused when it was another model or recipe."""
        path = self.out_dir / ckpt.LAST
        data = ckpt.load_run(path)
        run = data[ckpt.RUN_KEY]
        if run["model_config"] != self.model.config.to_dict():
            raise CheckpointError(
                f"{path} trained a {run['model_config']} model, not {self.model.config.to_dict()}"
                "; resume with the same backbone and input size")
        saved_cfg = TrainConfig.from_dict(run["train_config"])
        if saved_cfg != self.config:
            diff = sorted(k for k, v in saved_cfg.to_dict().items()
                          if self.config.to_dict()[k] != v)
            log.warning("resuming %s with changed settings: %s", path, ", ".join(diff))
        state_dict, _ = normalize_keys(data["model_state_dict"])
        check_keys(self.model.state_dict(), state_dict, str(path))
        with torch.no_grad():
            self.model.load_state_dict({k: v.float() if v.is_floating_point() else v
                                        for k, v in state_dict.items()})
        self.optimizer.load_state_dict(data["optimizer_state_dict"])
        self.scaler.load_state_dict(run["scaler"])
        torch.set_rng_state(run["torch_rng"])
        if run["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(run["cuda_rng"])
        self.source = run["source"]
        self.run = RunState.from_dict(run["state"])
        log.info("resuming %s at epoch %d, round %d, step %d", path, self.run.epoch,
                 self.run.round, self.run.step)

    # ------------------------------------------------------------------ pieces
    def describe(self, indices: np.ndarray) -> np.ndarray:
        """Global descriptors of training images with the current weights (no gradient)."""
        runner = InferenceRunner(self.model, self.device, self._infer_precision(),
                                 self.infer_batch, cuda_graphs=False)
        out = []
        for start in range(0, len(indices), self.infer_batch):
            batch = self.store.batch(indices[start:start + self.infer_batch], self.device)
            out.append(runner.extract(batch)[1].numpy())
        return np.concatenate(out).astype(np.float32)

    def _infer_precision(self) -> str:
        return self.config.precision

    def validate(self) -> ValidationResult | None:
        if not self.val_drives:
            return None
        result = validate(self.model, self.train_drives[0], self.val_drives, self.config,
                          self.infer_batch)
        self.model.train()
        return result

    def step(self, rows: np.ndarray) -> tuple[float, float]:
        """One optimiser step on ``rows`` (query, positive, negatives...) -> (global, local)."""
        self.model.train()
        images = self.store.batch(rows.reshape(-1), self.device)
        dtype = AUTOCAST[self.config.precision]
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            local, glob = self.model(images)
        loss_g, loss_l = triplet_losses(local, glob, self.config.negatives_per_query,
                                        self.config.margin)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss_g + loss_l).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss_g.detach()), float(loss_l.detach())

    # ------------------------------------------------------------------ the loop
    def _rounds(self) -> list[int]:
        cfg = self.config
        full, rest = divmod(cfg.queries_per_epoch, cfg.cache_refresh)
        return [cfg.cache_refresh] * full + ([rest] if rest else [])

    def _train_epoch(self) -> None:
        cfg, run = self.config, self.run
        rounds = self._rounds()
        total_steps = sum(-(-min(c, len(self.miner.queries)) // cfg.batch_queries)
                          for c in rounds)
        bar = tqdm(total=total_steps, desc=f"epoch {run.epoch}", unit="step",
                   disable=not self.progress, leave=False)
        bar.update(sum(-(-min(c, len(self.miner.queries)) // cfg.batch_queries)
                       for c in rounds[:run.round]) + run.step)
        while run.round < len(rounds):
            if run.triplets is None:
                queries, pool = self.miner.draw(run.epoch, run.round, rounds[run.round])
                run.triplets = self.miner.mine(queries, pool, self.describe)
                run.step = 0
            triplets = run.triplets
            steps = -(-len(triplets) // cfg.batch_queries)
            while run.step < steps:
                start = time.perf_counter()
                rows = triplets[run.step * cfg.batch_queries:(run.step + 1) * cfg.batch_queries]
                loss_g, loss_l = self.step(rows)
                run.loss_sums = [run.loss_sums[0] + (loss_g + loss_l) * len(rows),
                                 run.loss_sums[1] + loss_g * len(rows),
                                 run.loss_sums[2] + loss_l * len(rows)]
                run.loss_count += len(rows)
                run.images += rows.size
                run.seconds += time.perf_counter() - start
                run.step += 1
                run.global_step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss_g + loss_l:.4f}")
                if run.global_step % cfg.save_every == 0:
                    self.save_last()
            run.triplets = None
            run.round += 1
        bar.close()

    def _end_epoch(self, result: ValidationResult | None) -> bool:
        """Log the epoch, keep the best weights, decide on early stopping (True = stop)."""
        cfg, run = self.config, self.run
        n = max(run.loss_count, 1)
        record: dict[str, Any] = {
            "epoch": run.epoch, "steps": run.global_step,
            "loss": run.loss_sums[0] / n, "loss_global": run.loss_sums[1] / n,
            "loss_local": run.loss_sums[2] / n, "triplets": run.loss_count // 1,
            "images_per_s": run.images / run.seconds if run.seconds else None,
            "val": result.to_dict() if result else None,
        }
        run.history.append(record)
        value = result.value(cfg.stop_metric, cfg.stop_n) if result else float(run.epoch)
        stop = False
        if value > run.best:
            run.best, run.best_epoch, run.not_improved = value, run.epoch, 0
            self.model.trained = True
            self.model.weights_source = f"selavpr-train:{self.source}"
            ckpt.save_best(self.model, self.out_dir, run.epoch,
                           [] if not result else list(result.reranked_recall), run.best, 0,
                           self.model.weights_source)
        else:
            run.not_improved += 1
            stop = run.not_improved >= cfg.patience
        log.info("epoch %d: loss %.4f (global %.4f, local %.4f)%s", run.epoch, record["loss"],
                 record["loss_global"], record["loss_local"],
                 f", val {cfg.stop_metric} R@{cfg.stop_n} {100 * value:.1f}%" if result else "")
        run.epoch += 1
        run.round = run.step = 0
        run.loss_sums, run.loss_count, run.images, run.seconds = [0.0, 0.0, 0.0], 0, 0, 0.0
        run.finished = stop or run.epoch > cfg.epochs
        self.save_last()
        write_log(run.history, self.out_dir)
        plot_history(run.history, self.out_dir, cfg.recall_ns)
        return stop

    def fit(self) -> TrainSummary:
        """Run (or continue) the training; returns what it did."""
        cfg, run = self.config, self.run
        if not run.history:  # a fresh run: validate the starting weights (epoch 0)
            torch.manual_seed(cfg.seed)
            result = self.validate()
            run.history.append({"epoch": 0, "steps": 0, "loss": None,
                                "val": result.to_dict() if result else None})
            if result:  # the starting weights are the best until an epoch beats them
                run.best = result.value(cfg.stop_metric, cfg.stop_n)
                log.info("before training: %s", result.to_dict())
                ckpt.save_best(self.model, self.out_dir, 0, list(result.reranked_recall),
                               run.best, 0, self.model.weights_source)
            self.save_last()
            write_log(run.history, self.out_dir)
        stopped = False
        while not run.finished and run.epoch <= cfg.epochs:
            self._train_epoch()
            stopped = self._end_epoch(self.validate())
        trainable, total = count_parameters(self.model)
        vals = [r for r in run.history if r.get("val")]
        best = next((r["val"] for r in vals if r["epoch"] == run.best_epoch), None)
        return TrainSummary(self.out_dir, run.epoch - 1, run.global_step, run.best_epoch,
                            stopped or run.not_improved >= cfg.patience,
                            vals[0]["val"] if vals else None, best, trainable, total)


def train(model: SelaVPR, train_drives: list[Drive], val_drives: list[Drive],
          config: TrainConfig, out_dir: str | Path, *, resume: bool = False, source: str = "",
          progress: bool = True) -> TrainSummary:
    """Train ``model``'s adapters and heads; outputs go to ``out_dir`` (see :mod:`.state`).

    Raises:
        ConfigError: no training drive, too few positives, ``out_dir`` holds a run and
            ``resume`` is False.
        CheckpointError: the run to resume trained another model; a checkpoint cannot be saved.
    """
    out = Path(out_dir)
    if not resume and (out / ckpt.LAST).exists():
        raise ConfigError(f"{out} already holds a training run; pass --resume to continue it "
                          "or choose another output directory")
    out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(model, train_drives, val_drives, config, out, source=source,
                      progress=progress)
    if resume:
        trainer.resume()
    return trainer.fit()
