"""Loading SelaVPR weights in every layout we accept, strictly, and converting to safetensors.

Signature::

    load_checkpoint(source, config=None, *, image_size=None) -> (SelaVPR, SelaVPRConfig)

``source`` is a path (``.pth``/``.pt`` torch file or ``.safetensors``) or an in-memory mapping.
Accepted, unchanged:

* official training checkpoints: ``{"model_state_dict": {"module.backbone...": ...},
  "recalls": np.ndarray, "best_r5": np.float64, ...}``;
* bare state_dicts with or without ``module.``; legacy head names ``upconv.*``/``upconv2.*``;
* the registers variant (541 keys);
* a plain DINOv2 backbone file (``cls_token``, ``blocks.0.norm1.weight`` ...): adapters and
  heads then start as the reference initialises them, and the model is marked untrained;
* safetensors files written by :func:`convert_checkpoint` (config in the metadata).

The config is inferred from the weights unless given. Keys and shapes are checked strictly:
the error lists the missing, unexpected and mis-shaped keys.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from selavpr_ros.errors import CheckpointError, ConfigError
from selavpr_ros.model.config import BACKBONES, PATCH_SIZE, SelaVPRConfig
from selavpr_ros.model.fingerprint import weights_fingerprint
from selavpr_ros.model.network import SelaVPR
from selavpr_ros.model.safe_load import torch_load_safe

LOG = logging.getLogger(__name__)

KIND_SELAVPR = "selavpr"
KIND_DINOV2 = "dinov2"
FORMAT_NAME = "selavpr_ros.model"
FORMAT_VERSION = "1"
# Head names before the reference's commit 30ce8a5 (2024-03-06).
LEGACY_RENAMES = (("upconv.", "LocalAdapt.upconv1."), ("upconv2.", "LocalAdapt.upconv2."))
_BLOCK_RE = re.compile(r"^(?:backbone\.)?blocks\.(\d+)\.")

Source = str | os.PathLike[str] | Mapping[str, Any]


def _fmt_keys(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown} (+{len(keys) - limit} more)" if len(keys) > limit else shown


def state_dict_from(obj: Any, where: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Return a loaded object's tensor mapping: ``model_state_dict`` if nested, else itself."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{where}: expected a dict of tensors, got {type(obj).__name__}")
    for nest in ("model_state_dict", "state_dict"):
        if nest in obj and isinstance(obj[nest], Mapping):
            obj = obj[nest]
            where = f"{where}[{nest!r}]"
            break
    if not obj:
        raise CheckpointError(f"{where}: holds no tensors")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"{where}: not a state_dict: key {bad[0]!r} holds a {type(obj[bad[0]]).__name__}, "
            "and there is no 'model_state_dict'"
        )
    return dict(obj)


def normalize_keys(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """Strip ``module.``, rename legacy head keys, and say which layout it is.

    Returns:
        (state_dict with our key names, ``"selavpr"`` or ``"dinov2"``).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new = key[len("module.") :] if key.startswith("module.") else key
        for old, repl in LEGACY_RENAMES:
            if new.startswith(old):
                new = repl + new[len(old) :]
        if new in out:
            raise CheckpointError(f"key {key!r} collides with another key after renaming")
        out[new] = value
    if "backbone.cls_token" in out or any(k.startswith("backbone.") for k in out):
        return out, KIND_SELAVPR
    if "cls_token" in out and any(k.startswith("blocks.") for k in out):
        return out, KIND_DINOV2
    raise CheckpointError(
        "neither a SelaVPR checkpoint (keys 'backbone.*') nor a DINOv2 backbone "
        f"('cls_token', 'blocks.*'); first keys: {_fmt_keys(sorted(out), 5)}"
    )


def infer_config(
    state_dict: Mapping[str, torch.Tensor], image_size: int | tuple[int, int] = 224
) -> SelaVPRConfig:
    """Backbone, depth and registers from normalised keys (heads are not in the weights)."""
    prefix = "backbone." if any(k.startswith("backbone.") for k in state_dict) else ""
    cls = state_dict.get(prefix + "cls_token")
    if cls is None:
        raise CheckpointError(f"cannot infer the backbone: no {prefix}cls_token")
    dim = int(cls.shape[-1])
    names = [n for n, spec in BACKBONES.items() if spec.embed_dim == dim]
    if not names:
        known = {n: s.embed_dim for n, s in BACKBONES.items()}
        raise CheckpointError(f"{prefix}cls_token has width {dim}; known backbones: {known}")
    proj = state_dict.get(prefix + "patch_embed.proj.weight")
    if proj is not None and tuple(proj.shape[-2:]) != (PATCH_SIZE, PATCH_SIZE):
        raise CheckpointError(
            f"{prefix}patch_embed.proj.weight has patch size {tuple(proj.shape[-2:])}, "
            f"only {PATCH_SIZE}x{PATCH_SIZE} is supported"
        )
    indices = {int(m.group(1)) for k in state_dict if (m := _BLOCK_RE.match(k))}
    if not indices:
        raise CheckpointError(f"cannot infer the depth: no {prefix}blocks.N.* keys")
    depth = max(indices) + 1
    spec = BACKBONES[names[0]]
    regs = state_dict.get(prefix + "register_tokens")
    try:
        return SelaVPRConfig(
            backbone=names[0],
            depth=None if depth == spec.depth else depth,
            registers=regs is not None,
            image_size=image_size,
        )
    except ConfigError as err:
        raise CheckpointError(f"checkpoint implies an invalid config: {err}") from err


def check_keys(
    expected: Mapping[str, torch.Tensor],
    given: Mapping[str, torch.Tensor],
    what: str,
    ignore_missing: tuple[str, ...] = (),
) -> None:
    """Strict key and shape comparison; the error names every kind of mismatch."""
    missing = sorted(
        k for k in expected if k not in given and not any(s in k for s in ignore_missing)
    )
    unexpected = sorted(k for k in given if k not in expected)
    shapes = sorted(
        f"{k}: checkpoint {tuple(given[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in given
        if k in expected and tuple(given[k].shape) != tuple(expected[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_fmt_keys(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_fmt_keys(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches: {_fmt_keys(shapes, 4)}")
    if problems:
        raise CheckpointError(f"{what} does not match the model: " + "; ".join(problems))


def read_weights(source: Source) -> tuple[dict[str, torch.Tensor], dict[str, str], str]:
    """Read a path or mapping -> (raw state_dict, safetensors metadata or {}, description)."""
    if isinstance(source, Mapping):
        return state_dict_from(source, "mapping"), {}, "in-memory state_dict"
    path = Path(source)
    if path.suffix == ".safetensors":
        return (*_read_safetensors(path), str(path))
    return state_dict_from(torch_load_safe(path), str(path)), {}, str(path)


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        # safe_open memory-maps the file; tensors are read as they are requested.
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            return {k: f.get_tensor(k) for k in f.keys()}, metadata  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err


def _config_from_metadata(metadata: Mapping[str, str], where: str) -> SelaVPRConfig | None:
    raw = metadata.get("config")
    if raw is None:
        return None
    try:
        return SelaVPRConfig.from_dict(json.loads(raw))
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{where}: bad 'config' in metadata ({err})") from err


def _as_float32(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        k: v.float() if v.is_floating_point() and v.dtype != torch.float32 else v
        for k, v in state_dict.items()
    }


def load_checkpoint(
    source: Source,
    config: SelaVPRConfig | None = None,
    *,
    image_size: int | tuple[int, int] | None = None,
) -> tuple[SelaVPR, SelaVPRConfig]:
    """Build a :class:`SelaVPR` from weights in any accepted layout (see module docstring).

    Args:
        source: path (.pth/.pt/.safetensors) or mapping (checkpoint dict or state_dict).
        config: expected architecture; inferred from the weights when None. A config that
            disagrees with the weights fails the strict key/shape check.
        image_size: network input size; overrides the config's (default 224).

    Returns:
        (model in eval mode on the CPU, fp32; its config). ``model.trained`` tells whether
        adapters and heads are trained; ``model.weights_source`` where the weights came from.

    Raises:
        CheckpointError: unreadable/unsafe file, unknown layout, missing/unexpected keys,
            wrong shapes.
    """
    raw, metadata, where = read_weights(source)
    state_dict, kind = normalize_keys(raw)
    state_dict = _as_float32(state_dict)
    if config is None:
        config = _config_from_metadata(metadata, where) or infer_config(state_dict)
    if image_size is not None:
        config = SelaVPRConfig(
            backbone=config.backbone,
            depth=config.depth,
            registers=config.registers,
            image_size=image_size,
        )
    if kind == KIND_DINOV2:
        model = _load_dinov2_backbone(state_dict, config, where)
    else:
        with torch.device("meta"):
            model = SelaVPR(config, init_weights=False)
        check_keys(model.state_dict(), state_dict, where)
        # assign=True adopts the (memory-mapped) tensors instead of allocating and copying.
        model.load_state_dict(state_dict, strict=True, assign=True)
        model.backbone.clear_cache()
        model.trained = metadata.get("trained", "true") == "true" and not _adapters_at_init(model)
        model.weights_source = where
        if not model.trained:
            LOG.warning("%s: adapters are at their initial state (or marked untrained)", where)
    LOG.info("loaded %s (%s, trained=%s)", where, config, model.trained)
    return model.eval(), config


def _adapters_at_init(model: SelaVPR) -> bool:
    """Tell whether every adapter output layer is zero: the weights were never trained."""
    return all(
        not adapter.D_fc2.weight.any()
        for block in model.backbone.adapter_blocks()
        for adapter in (block.adapter1, block.adapter2)
    )


def _load_dinov2_backbone(
    state_dict: dict[str, torch.Tensor], config: SelaVPRConfig, where: str
) -> SelaVPR:
    model = SelaVPR(config)  # reference init: adapters' D_fc2 zero, GeM p=3, default convs
    check_keys(model.backbone.state_dict(), state_dict, where, ignore_missing=(".adapter",))
    model.backbone.load_state_dict(state_dict, strict=False)
    model.weights_source = f"dinov2-backbone:{where}"
    model.trained = False
    LOG.warning(
        "%s is a plain DINOv2 backbone: adapters and heads are untrained (identity adapters, "
        "random LocalAdapt); features are not SelaVPR's",
        where,
    )
    return model


def save_safetensors(
    model: SelaVPR, path: str | os.PathLike[str], source: str | None = None
) -> Path:
    """Write the model's weights and config to a safetensors file (no pickle, memory-mappable)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": json.dumps(model.config.to_dict()),
        "trained": "true" if model.trained else "false",
        "source": source or model.weights_source,
        "fingerprint": weights_fingerprint(tensors),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


def convert_checkpoint(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Convert any accepted checkpoint to safetensors with the config in its metadata."""
    dst = Path(dst)
    if dst.suffix != ".safetensors":
        raise CheckpointError(f"{dst}: output must end in .safetensors")
    model, _ = load_checkpoint(src)
    return save_safetensors(model, dst, source=Path(src).name)
