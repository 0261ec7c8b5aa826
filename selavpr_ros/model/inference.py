"""Running a SelaVPR model for inference: device, precision, batching, no autograd.

fp32 on the CPU is the default and the parity reference. On CUDA, fp16 or bf16 autocast runs
the backbone's matmuls in half precision; the heads' normalisations and GeM stay fp32 (see
``heads.py``) and outputs are always fp32.
"""

from __future__ import annotations


import torch

from selavpr_ros.errors import ConfigError
from selavpr_ros.model.network import SelaVPR
from selavpr_ros.model.preprocess import ImageBatch, preprocess


PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}


def resolve_device(device: str | torch.device) -> torch.device:
    """Validate a device string; asking for CUDA without one is a configuration error."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"invalid device {device!r}: {err}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {device!r}: only cpu and cuda are supported")
    return dev


class InferenceRunner:
    """Owns a model on a device and extracts (local, global) features from images or tensors.

    Args:
        model: the network; moved to ``device`` and put in eval mode.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``fp32``; ``fp16``/``bf16`` autocast (fp16 needs CUDA).
        batch_size: images per forward pass; larger inputs are split.
    """

    def __init__(
        self,
        model: SelaVPR,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        batch_size: int = 16,
    ) -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f"precision {precision!r}: expected one of {sorted(PRECISIONS)}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.device = resolve_device(device)
        if precision == "fp16" and self.device.type != "cuda":
            raise ConfigError("precision 'fp16' needs a CUDA device; use fp32 or bf16 on the CPU")
        self.precision = precision
        self.batch_size = batch_size
        self.model = model.to(self.device).eval()

    def _autocast(self) -> torch.autocast:
        dtype = PRECISIONS[self.precision]
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def extract(
        self, images: ImageBatch, to_cpu: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 RGB images (or an already preprocessed (B,3,H,W) float tensor) -> features.

        Returns:
            local (B, gh', gw', 128) and global (B, D), fp32, L2-normalised; on the CPU when
            ``to_cpu`` else on the runner's device.
        """
        if isinstance(images, torch.Tensor) and images.is_floating_point() and images.dim() == 4:
            batch = images
        else:
            batch = preprocess(images, size=self.model.config.input_hw, device=self.device)
        locals_, globals_ = [], []
        with torch.inference_mode(), self._autocast():
            for start in range(0, batch.shape[0], self.batch_size):
                chunk = batch[start : start + self.batch_size].to(self.device, torch.float32)
                local, glob = self.model(chunk)
                locals_.append(local.float())
                globals_.append(glob.float())
        local, glob = torch.cat(locals_), torch.cat(globals_)
        if to_cpu:
            local, glob = local.cpu(), glob.cpu()
        return local, glob

    __call__ = extract


def extract(
    model: SelaVPR,
    images: ImageBatch,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    batch_size: int = 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One-shot convenience around :class:`InferenceRunner` (returns CPU fp32 tensors)."""
    return InferenceRunner(model, device, precision, batch_size).extract(images)
