r"""``selavpr train OUT``: fine-tune SelaVPR's adapters and heads on your own drives.

    selavpr train runs/campus --init dinov2_vitl14_pretrain.pth \
        --bag drive1 --bag drive2 --bag drive3 --val 2 --device cuda --precision bf16
    selavpr train runs/campus --resume --bag drive1 --bag drive2 --bag drive3 --val 2 ...
    selavpr train runs/demo --random-init --backbone vits14 --depth 4 --image-size 112 \
        --images d0 --poses d0/poses.csv --images d1 --poses d1/poses.csv ...

Drives are numbered in the order given (0, 1, ...); ``--val N`` holds drive N out for
validation, whose frames are localised against the first training drive.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from selavpr_ros.errors import ConfigError

log = logging.getLogger(__name__)


class _DriveAction(argparse.Action):
    """Collect --bag / --images / --poses in command-line order into ``args.drives``."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        drives = list(getattr(namespace, "drives", None) or [])
        if option_string == "--poses":
            if not drives or drives[-1][0] != "images" or drives[-1][2] is not None:
                raise argparse.ArgumentError(self, "--poses must follow its --images folder")
            drives[-1] = ("images", drives[-1][1], str(values))
        else:
            drives.append(("bag" if option_string == "--bag" else "images", str(values), None))
        namespace.drives = drives


def register(subparsers: argparse._SubParsersAction) -> None:
    from selavpr_ros.model.config import BACKBONES
    from selavpr_ros.train.config import TrainConfig

    d = TrainConfig()
    parser = subparsers.add_parser(
        "train", help="fine-tune the adapters and heads on your own drives",
        description="Train SelaVPR's adapters, GeM p and LocalAdapt (everything else frozen) on "
                    "drives with poses, as the published recipe does; writes OUT/best_model.pth "
                    "(official layout) and OUT/best_model.safetensors. Ctrl-C or a crash keeps "
                    "the last checkpoint; --resume continues it.")
    parser.add_argument("out", metavar="OUT", help="output directory of the run")
    parser.add_argument("--resume", action="store_true", help="continue the run in OUT")
    src = parser.add_argument_group("drives (repeat; numbered in the order given)")
    src.add_argument("--bag", action=_DriveAction, help="rosbag2 with an image and a pose topic")
    src.add_argument("--images", action=_DriveAction, help="image folder (needs --poses)")
    src.add_argument("--poses", action=_DriveAction,
                     help="poses CSV of the preceding --images (file, timestamp, x, y, z...)")
    src.add_argument("--image-topic", help="image topic of the bags (default: the only one)")
    src.add_argument("--pose-topic", help="pose topic of the bags (default: the only one)")
    src.add_argument("--val", type=int, action="append", default=[], metavar="N",
                     help="hold drive N out for validation (repeatable)")
    init = parser.add_argument_group("starting weights (one of --init or --random-init)")
    init.add_argument("--init", help="DINOv2 backbone .pth (adapters start as identity) or a "
                                     "SelaVPR checkpoint (.pth/.safetensors) to fine-tune")
    init.add_argument("--random-init", action="store_true",
                      help="random backbone (tests and demos only: NOT a pretrained model)")
    init.add_argument("--backbone", choices=sorted(BACKBONES), help="backbone (default: from "
                      "--init, else vitl14); a checkpoint of another backbone is refused")
    init.add_argument("--depth", type=int, help="transformer blocks (small models for tests)")
    init.add_argument("--registers", action="store_true", help="DINOv2 with 4 register tokens")
    init.add_argument("--image-size", type=int, default=224, help="network input (default 224)")
    rec = parser.add_argument_group("recipe (defaults: the published one)")
    rec.add_argument("--epochs", type=int, default=d.epochs)
    rec.add_argument("--queries-per-epoch", type=int, default=d.queries_per_epoch)
    rec.add_argument("--cache-refresh", type=int, default=d.cache_refresh, metavar="N",
                     help=f"queries per mining round (default {d.cache_refresh})")
    rec.add_argument("--negatives-sample", type=int, default=d.negatives_sample)
    rec.add_argument("--negatives-per-query", type=int, default=d.negatives_per_query)
    rec.add_argument("--batch-queries", type=int, default=d.batch_queries)
    rec.add_argument("--lr", type=float, default=d.lr)
    rec.add_argument("--margin", type=float, default=d.margin)
    rec.add_argument("--positive-radius", type=float, default=d.positive_radius_m, metavar="M")
    rec.add_argument("--negative-radius", type=float, default=d.negative_radius_m, metavar="M")
    rec.add_argument("--same-drive-positives", action="store_true",
                     help="also take positives from the query's own drive")
    rec.add_argument("--patience", type=int, default=d.patience)
    rec.add_argument("--val-radius", type=float, default=d.val_radius_m, metavar="M")
    rec.add_argument("--rerank-k", type=int, default=d.rerank_k)
    rec.add_argument("--seed", type=int, default=d.seed)
    rec.add_argument("--save-every", type=int, default=d.save_every, metavar="STEPS")
    dev = parser.add_argument_group("machine")
    dev.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    dev.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"),
                     help="autocast precision (fp16 needs CUDA)")
    dev.add_argument("--infer-batch-size", type=int, default=0,
                     help="images per forward when mining/validating (0 = from free memory)")
    dev.add_argument("--grad-checkpointing", action="store_true",
                     help="recompute block activations in the backward pass (less memory)")
    dev.add_argument("--json", action="store_true", help="print the summary as JSON")
    dev.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(handler=run, drives=None)


def _config(args: argparse.Namespace) -> Any:
    from selavpr_ros.train.config import TrainConfig

    return TrainConfig(
        positive_radius_m=args.positive_radius, negative_radius_m=args.negative_radius,
        positives_from_same_drive=args.same_drive_positives,
        negatives_per_query=args.negatives_per_query, cache_refresh=args.cache_refresh,
        negatives_sample=args.negatives_sample, batch_queries=args.batch_queries, lr=args.lr,
        margin=args.margin, epochs=args.epochs, queries_per_epoch=args.queries_per_epoch,
        patience=args.patience, val_radius_m=args.val_radius, rerank_k=args.rerank_k,
        device=args.device, precision=args.precision, infer_batch_size=args.infer_batch_size,
        grad_checkpointing=args.grad_checkpointing, seed=args.seed, save_every=args.save_every)


def _model(args: argparse.Namespace) -> Any:
    """Build the starting model: --init weights (checked against --backbone) or random."""
    from selavpr_ros.model import SelaVPR, SelaVPRConfig, load_checkpoint

    if args.resume and not (args.init or args.random_init):
        return _resumed_model(args)
    if bool(args.init) == bool(args.random_init):
        raise ConfigError("give exactly one of --init WEIGHTS or --random-init")
    config: SelaVPRConfig | None  # None: inferred from the --init weights
    if args.random_init:
        config = SelaVPRConfig(backbone=args.backbone or "vitl14", depth=args.depth,
                               registers=args.registers, image_size=args.image_size)
        log.warning("--random-init: the backbone is NOT pretrained; only adapters and heads "
                    "will learn, so this is for tests and demos")
        import torch

        torch.manual_seed(args.seed)  # the same --seed gives the same random backbone
        return SelaVPR(config)
    config = None
    if args.backbone:
        config = SelaVPRConfig(backbone=args.backbone, depth=args.depth,
                               registers=args.registers, image_size=args.image_size)
    model, _ = load_checkpoint(args.init, config=config, image_size=args.image_size)
    return model


def _resumed_model(args: argparse.Namespace) -> Any:
    """Build the architecture of the run in OUT (the resume loads its weights)."""
    from selavpr_ros.errors import CheckpointError
    from selavpr_ros.model import SelaVPR, SelaVPRConfig
    from selavpr_ros.train.state import LAST, RUN_KEY, load_run

    path = Path(args.out) / LAST
    config = SelaVPRConfig.from_dict(load_run(path)[RUN_KEY]["model_config"])
    if args.backbone and args.backbone != config.backbone:
        raise CheckpointError(f"{path} trains a {config.backbone} model, not {args.backbone}")
    return SelaVPR(config, init_weights=False)


def _drives(args: argparse.Namespace) -> tuple[list[Any], list[Any]]:
    from selavpr_ros.train.data import load_bag_drive, load_folder_drive

    specs = args.drives or []
    if not specs:
        raise ConfigError("no drives: give --bag BAG or --images FOLDER --poses CSV (repeat)")
    bad = [n for n in args.val if not 0 <= n < len(specs)]
    if bad:
        raise ConfigError(f"--val {bad[0]}: there are drives 0..{len(specs) - 1}")
    drives = []
    for kind, path, poses in specs:
        if kind == "bag":
            drives.append(load_bag_drive(path, args.image_topic, args.pose_topic))
        else:
            drives.append(load_folder_drive(path, poses))
    train = [d for i, d in enumerate(drives) if i not in args.val]
    if not train:
        raise ConfigError("every drive is held out by --val; keep at least one for training")
    return train, [drives[i] for i in sorted(set(args.val))]


def run(args: argparse.Namespace) -> int:
    from selavpr_ros.train import train

    config = _config(args)
    train_drives, val_drives = _drives(args)
    model = _model(args)
    summary = train(model, train_drives, val_drives, config, Path(args.out),
                    resume=args.resume, source=args.init or "random-init",
                    progress=not args.no_progress)
    if args.json:
        print(json.dumps({"out": str(summary.out_dir), "epochs": summary.epochs,
                          "steps": summary.steps, "best_epoch": summary.best_epoch,
                          "stopped_early": summary.stopped_early, "before": summary.before,
                          "best": summary.best, "trainable": summary.trainable,
                          "total": summary.total}, indent=2))
    else:
        for line in summary.lines():
            print(line)
    return 0
