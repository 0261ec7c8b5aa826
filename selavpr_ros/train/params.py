"""Which parameters learn (adapters, GeM ``p``, LocalAdapt) and how much fits on the device."""

from __future__ import annotations

import torch
from torch import nn

GEM_P = "aggregation.1.p"


def is_trainable(name: str) -> bool:
    """Tell the published split: backbone ``adapter`` parameters, GeM p and LocalAdapt."""
    if name.startswith("backbone."):
        return "adapter" in name
    return name == GEM_P or name.startswith("LocalAdapt.")


def freeze_for_training(model: nn.Module) -> list[nn.Parameter]:
    """Set ``requires_grad`` per the published split; return the trainable parameters in order."""
    trainable = []
    for name, param in model.named_parameters():
        param.requires_grad_(is_trainable(name))
        if param.requires_grad:
            trainable.append(param)
    return trainable


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total


def inference_batch_size(device: torch.device, image_bytes: int, requested: int = 0) -> int:
    """Images per no-grad forward: ``requested``, or on CUDA what a quarter of free memory holds.

    ``image_bytes`` is the activation memory one image needs (measured or estimated by the
    caller); on the CPU 16, the reference's ``infer_batch_size``.
    """
    if requested:
        return requested
    if device.type != "cuda":
        return 16
    free, _ = torch.cuda.mem_get_info(device)
    return int(max(1, min(256, free // 4 // max(1, image_bytes))))


def activation_bytes(embed_dim: int, tokens: int, local_cells: int) -> int:
    """Rough peak activation memory of one image in a no-grad forward (fp32)."""
    return 4 * (tokens * embed_dim * 12 + tokens * tokens * 4 + local_cells * 384)
