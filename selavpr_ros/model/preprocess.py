"""Image preprocessing exactly as the reference evaluation does it.

The reference (``datasets_ws.BaseDataset``, ``hard_resize``) converts to float in [0, 1],
normalises with the ImageNet mean/std, then resizes the *tensor* to 224x224 bilinearly. With
its pinned torchvision 0.15 a tensor resize is not antialiased, so neither is ours; the aspect
ratio is not kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from selavpr_ros.errors import ImageDecodeError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ImageBatch = np.ndarray | torch.Tensor | Sequence[np.ndarray | torch.Tensor]


def _as_hwc_uint8(image: np.ndarray | torch.Tensor, index: int) -> torch.Tensor:
    if isinstance(image, np.ndarray):
        array = np.ascontiguousarray(image)
        if not array.flags.writeable:  # e.g. a view of a message buffer; torch wants writable
            array = array.copy()
        tensor = torch.from_numpy(array)
    else:
        tensor = image
    if tensor.dtype != torch.uint8 or tensor.dim() != 3 or tensor.shape[-1] != 3:
        raise ImageDecodeError(
            f"image {index}: expected uint8 RGB of shape (H, W, 3), got {tensor.dtype} "
            f"{tuple(tensor.shape)}"
        )
    if tensor.shape[0] < 1 or tensor.shape[1] < 1:
        raise ImageDecodeError(f"image {index}: empty image {tuple(tensor.shape)}")
    return tensor


def _split(images: ImageBatch) -> list[np.ndarray | torch.Tensor]:
    if isinstance(images, (np.ndarray, torch.Tensor)):
        if images.ndim == 3:
            return [images]
        if images.ndim == 4:
            return list(images)
        raise ImageDecodeError(
            f"expected (H, W, 3) or (B, H, W, 3) uint8 RGB, got shape {tuple(images.shape)}"
        )
    if isinstance(images, Sequence) and not isinstance(images, (str, bytes)):
        if not images:
            raise ImageDecodeError("no images given")
        return list(images)
    raise ImageDecodeError(f"expected an array, a tensor or a list of them, got {type(images)}")


def normalize_image(image: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32, ToTensor then ImageNet Normalize."""
    x = image.permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return x.sub_(mean).div_(std)


def preprocess(
    images: ImageBatch, size: int | tuple[int, int] = 224, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """uint8 RGB images -> normalised (B, 3, H, W) float32, as the reference evaluation does.

    Args:
        images: one (H, W, 3) array/tensor, a (B, H, W, 3) batch, or a list of (H, W, 3) images
            of any sizes.
        size: output size, an int (square) or (height, width); 224 like the reference.
        device: where to do the work (resizing on the GPU saves a transfer of the big image).

    Raises:
        ImageDecodeError: not uint8 RGB with three channels.
    """
    out_hw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    batch = []
    for i, image in enumerate(_split(images)):
        x = normalize_image(_as_hwc_uint8(image, i).to(device))
        if tuple(x.shape[-2:]) != out_hw:
            x = F.interpolate(
                x.unsqueeze(0), size=out_hw, mode="bilinear", align_corners=False, antialias=False
            ).squeeze(0)
        batch.append(x)
    return torch.stack(batch)
