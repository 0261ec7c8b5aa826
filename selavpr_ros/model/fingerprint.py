"""A stable identity for a set of weights, so maps and results can name the model they used."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch
from torch import nn


def weights_fingerprint(weights: nn.Module | Mapping[str, torch.Tensor]) -> str:
    """sha256 hex over the sorted key names, dtypes, shapes and raw bytes of every tensor.

    Independent of key order, device and storage layout (tensors are hashed contiguous, on
    the CPU); a different dtype gives a different fingerprint on purpose.
    """
    state = weights.state_dict() if isinstance(weights, nn.Module) else weights
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key]
        if tensor.device.type == "meta":
            raise ValueError(f"{key}: cannot fingerprint a meta tensor (no data)")
        header = f"{key}\0{str(tensor.dtype)}\0{tuple(tensor.shape)}\0"
        digest.update(header.encode())
        data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
        # ndarray has the buffer protocol; numpy's stubs declare __buffer__ for Python >= 3.12 only
        digest.update(memoryview(data.numpy()))  # type: ignore[arg-type]
    return digest.hexdigest()
