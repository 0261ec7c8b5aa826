"""Running a SelaVPR model for inference: device, precision, batching, no autograd.

fp32 on the CPU is the default and the parity reference. On CUDA, fp16 or bf16 autocast runs
the backbone's matmuls in half precision; the heads' normalisations and GeM stay fp32 (see
``heads.py``) and outputs are always fp32.

CUDA graphs: a ViT-L forward of one image launches hundreds of small kernels, so at batch 1 the
GPU waits on the CPU (14 ms for ~1 ms of work on an H100). On CUDA the runner therefore captures
the forward once per input shape into a CUDA graph with static input/output buffers and replays
it for inputs of that shape (the same kernels, so the same outputs as eager); other shapes, or a
capture that fails, run eagerly. Images are uploaded as uint8 and normalised/resized on the
device (see ``preprocess``), so no float32 image crosses the bus.

TF32: ``tf32=True`` lets fp32 matmuls on CUDA use TF32 tensor cores (``allow_tf32``; a global
torch setting). The reference's published numbers came from GPU runs that may have used TF32
(PyTorch < 1.12 enabled it by default); fp32 here stays exact IEEE fp32 unless asked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from selavpr_ros.errors import ConfigError
from selavpr_ros.model.network import SelaVPR
from selavpr_ros.model.preprocess import ImageBatch, preprocess

log = logging.getLogger(__name__)

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


Forward = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
GraphKey = tuple[tuple[int, ...], torch.dtype]


class GraphCache:
    """Replayable forwards by input shape: captured on first use, eager beyond ``max_graphs``.

    ``capture(x)`` builds a forward specialised to ``x``'s shape and dtype (a CUDA graph on the
    GPU); a capture that raises is logged once and that shape runs ``eager`` from then on. Each
    graph holds its own activations, hence the cap (a batch-1 ViT-L graph needs ~0.2 GB).
    """

    def __init__(self, capture: Callable[[torch.Tensor], Forward], eager: Forward,
                 max_graphs: int = 4) -> None:
        self._capture = capture
        self._eager = eager
        self.max_graphs = max_graphs
        self.graphs: dict[GraphKey, Forward] = {}
        self.failed: set[GraphKey] = set()

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (tuple(x.shape), x.dtype)
        forward = self.graphs.get(key)
        if forward is None:
            if key in self.failed or len(self.graphs) >= self.max_graphs:
                return self._eager(x)
            try:
                forward = self._capture(x)
            except RuntimeError as err:
                log.warning("CUDA graph capture for input %s failed (%s); running eagerly",
                            key, err)
                self.failed.add(key)
                return self._eager(x)
            self.graphs[key] = forward
        return forward(x)


class CudaGraphForward:
    """``model(x)`` captured into a CUDA graph for ``example``'s shape, with static buffers.

    As the PyTorch docs require, the model is warmed up on a side stream first (lazy state such
    as the resized position embedding and cuBLAS workspaces is created outside the capture), and
    autocast runs with its weight cache off (a cache would be freed when the autocast context
    exits, under the graph's feet). Call it inside ``torch.inference_mode()``. Outputs are
    copies (fp32), so a later replay does not overwrite what an earlier call returned.
    """

    def __init__(self, model: torch.nn.Module, example: torch.Tensor,
                 autocast_dtype: torch.dtype | None, warmup: int = 3) -> None:
        device = example.device
        self._autocast = lambda: torch.autocast(  # noqa: E731
            "cuda", dtype=autocast_dtype, enabled=autocast_dtype is not None, cache_enabled=False
        )
        self.static_input = example.detach().clone()
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                with self._autocast():
                    model(self.static_input)
        torch.cuda.current_stream(device).wait_stream(side)
        torch.cuda.synchronize(device)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), self._autocast():
            local, glob = model(self.static_input)
            self.static_output = (local.float(), glob.float())

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.static_input.copy_(x)
        self.graph.replay()
        return self.static_output[0].clone(), self.static_output[1].clone()


class InferenceRunner:
    """Owns a model on a device and extracts (local, global) features from images or tensors.

    Args:
        model: the network; moved to ``device`` and put in eval mode.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``fp32``; ``fp16``/``bf16`` autocast (fp16 needs CUDA).
        batch_size: images per forward pass; larger inputs are split.
        cuda_graphs: replay CUDA graphs per input shape (see the module docstring); None = on
            for CUDA devices. Ignored on the CPU.
        tf32: allow TF32 for fp32 matmuls/convolutions on CUDA (global torch setting).
    """

    def __init__(
        self,
        model: SelaVPR,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        batch_size: int = 16,
        cuda_graphs: bool | None = None,
        tf32: bool = False,
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
        on_cuda = self.device.type == "cuda"
        self.cuda_graphs = on_cuda and (cuda_graphs is None or cuda_graphs)
        self._graphs: GraphCache | None = None
        if self.cuda_graphs:
            self._graphs = GraphCache(self._capture, self._eager)
        if tf32 and on_cuda:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    def _capture(self, x: torch.Tensor) -> Forward:
        return CudaGraphForward(self.model, x, PRECISIONS[self.precision])

    def _eager(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self._autocast():
            local, glob = self.model(x)
        return local.float(), glob.float()

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
        forward = self._graphs if self._graphs is not None else self._eager
        with torch.inference_mode():
            for start in range(0, batch.shape[0], self.batch_size):
                chunk = batch[start : start + self.batch_size].to(self.device, torch.float32)
                local, glob = forward(chunk)
                locals_.append(local)
                globals_.append(glob)
        if len(locals_) == 1:
            local, glob = locals_[0], globals_[0]
        else:
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
    """One-shot convenience around :class:`InferenceRunner` (returns CPU fp32 tensors).

    Eager: a graph captured for one call would cost more than it saves.
    """
    return InferenceRunner(model, device, precision, batch_size, cuda_graphs=False).extract(images)
