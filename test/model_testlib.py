"""Shared helpers for the model tests: the independent reference forward and fake checkpoints.

``bench/reference_model.py`` is a plain re-statement of the published forward; it lives in
bench/ (not in the product); pytest.ini puts bench/ on the import path.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from reference_model import ReferenceSelaVPR  # bench/ (pytest.ini: pythonpath = bench)


def random_reference_state_dict(
    name: str, depth: int, registers: bool = False, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Random weights in the reference's layout (no ``module.``), adapters fully non-zero.

    Scales keep activations in a sane range so that every part (adapters included) matters.
    """
    ref = ReferenceSelaVPR(name, depth, registers)
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in ref.state_dict().items():
        if key.endswith(".p"):
            out[key] = torch.tensor([3.0]) + 0.5 * torch.rand(1, generator=gen)
        elif key.endswith("gamma") or (key.endswith("weight") and value.dim() == 1):
            out[key] = 1.0 + 0.2 * torch.randn(value.shape, generator=gen)
        else:
            out[key] = 0.05 * torch.randn(value.shape, generator=gen)
    return out


def reference_model(
    name: str, depth: int, registers: bool, state_dict: dict[str, torch.Tensor]
) -> ReferenceSelaVPR:
    ref = ReferenceSelaVPR(name, depth, registers)
    ref.load_state_dict(state_dict, strict=True)
    return ref.eval()


def official_checkpoint(state_dict: dict[str, torch.Tensor]) -> dict:
    """Wrap like train.py saves: DataParallel keys, numpy objects, optimizer state."""
    return {
        "epoch_num": 4,
        "model_state_dict": {"module." + k: v for k, v in state_dict.items()},
        "optimizer_state_dict": {
            "state": {0: {"step": torch.tensor(10.0), "exp_avg": torch.zeros(3)}},
            "param_groups": [{"lr": 1e-5, "betas": (0.9, 0.999), "params": [0]}],
        },
        "recalls": np.array([90.8, 96.4, 97.2, 98.0]),
        "best_r5": np.float64(96.4),
        "not_improved_num": 0,
    }


def to_numpy1_spelling(src: Path, dst: Path) -> Path:
    """Rewrite a torch zip file's pickle so numpy globals read ``numpy.core.multiarray``.

    That is how the released files (pickled under numpy 1.20) name them.
    """
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("data.pkl"):
                assert b"numpy._core.multiarray" in data
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            zout.writestr(info.filename, data)
    return dst
