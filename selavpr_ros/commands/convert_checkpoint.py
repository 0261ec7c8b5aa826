"""``selavpr convert-checkpoint IN.pth OUT.safetensors``: a safe, fast-loading weights file.

The output holds our key names, fp32 tensors and, in its metadata, the model config, whether
the weights are trained, the source file name and the weights fingerprint. Loading it needs no
unpickling and is memory-mapped.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert-checkpoint",
        help="convert a SelaVPR or DINOv2 checkpoint (.pth) to safetensors",
        description=(
            "Read a SelaVPR training checkpoint, bare state_dict or plain DINOv2 backbone file "
            "safely (no arbitrary unpickling), check it strictly and write it as safetensors "
            "with the model config in the metadata."
        ),
    )
    parser.add_argument("src", metavar="IN.pth", help="checkpoint to convert")
    parser.add_argument("dst", metavar="OUT.safetensors", help="file to write")
    parser.add_argument(
        "--force", action="store_true", help="overwrite OUT.safetensors if it exists"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from safetensors import safe_open

    from selavpr_ros.errors import CheckpointError
    from selavpr_ros.model.checkpoint import convert_checkpoint

    dst = Path(args.dst)
    if dst.exists() and not args.force:
        raise CheckpointError(f"{dst}: exists; pass --force to overwrite")
    out = convert_checkpoint(args.src, dst)

    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    print(f"wrote {out}: config {meta['config']}, trained={meta['trained']}")
    print(f"fingerprint {meta['fingerprint']}")
    return 0
