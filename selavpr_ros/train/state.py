"""Checkpoints of a training run, written atomically (temp file, fsync, rename).

* ``last_model.pth``: everything a resume needs, in the official layout (``epoch_num``,
  ``model_state_dict`` with ``module.`` keys, ``optimizer_state_dict``, ``recalls``,
  ``best_r5``, ``not_improved_num``) plus our run state under ``selavpr_ros_train``.
* ``best_model.pth``: the best weights by validation, official layout without optimizer, and
  ``best_model.safetensors``: the same weights with their configuration (our loader's format).

Only plain types and tensors are stored, so the files load with ``weights_only=True``. A save
that fails (disk full, quota) removes its temp file and leaves the previous file untouched.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from selavpr_ros.errors import CheckpointError
from selavpr_ros.map.fsutil import fsync_dir, fsync_file
from selavpr_ros.model.checkpoint import save_safetensors
from selavpr_ros.model.network import SelaVPR
from selavpr_ros.model.safe_load import torch_load_safe

LAST = "last_model.pth"
BEST = "best_model.pth"
BEST_SAFETENSORS = "best_model.safetensors"
RUN_KEY = "selavpr_ros_train"


def official_state_dict(model: SelaVPR) -> dict[str, torch.Tensor]:
    """Return the weights as the published code saves them: ``module.`` keys, CPU."""
    return {f"module.{k}": v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _atomic(path: Path, write: Callable[[Path], object]) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except (OSError, RuntimeError) as err:
        tmp.unlink(missing_ok=True)
        reason = os.strerror(err.errno) if isinstance(err, OSError) and err.errno else (
            str(err).splitlines()[0] if str(err) else type(err).__name__)
        kept = "the previous file is kept" if path.exists() else "nothing was written"
        raise CheckpointError(f"cannot save {path}: {reason}; {kept}") from err
    return path


def save_torch(obj: dict[str, Any], path: Path) -> Path:
    """``torch.save`` to ``path`` atomically."""
    return _atomic(path, lambda tmp: torch.save(obj, tmp))


def save_best(model: SelaVPR, out_dir: Path, epoch: int, recalls: list[float], best: float,
              not_improved: int, source: str) -> tuple[Path, Path]:
    """Write ``best_model.pth`` (official layout) and ``best_model.safetensors``."""
    pth = save_torch({"epoch_num": epoch, "model_state_dict": official_state_dict(model),
                      "recalls": recalls, "best_r5": best, "not_improved_num": not_improved},
                     out_dir / BEST)
    st = _atomic(out_dir / BEST_SAFETENSORS,
                 lambda tmp: save_safetensors(model, tmp, source=source))
    return pth, st


def load_run(path: Path) -> dict[str, Any]:
    """Read a ``last_model.pth`` with a run state (written by ``selavpr train``)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no training checkpoint to resume")
    data = torch_load_safe(path)
    if not isinstance(data, dict) or RUN_KEY not in data or "model_state_dict" not in data:
        raise CheckpointError(f"{path}: not a checkpoint written by 'selavpr train' "
                              "(no training state to resume)")
    return data
