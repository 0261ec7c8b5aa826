"""DINOv2 ViT backbone with SelaVPR adapters, and the reference's position-embedding resize.

Why not timm's ``VisionTransformer`` with ``block_fn=AdapterBlock`` (the issue's first choice):

* ``import timm`` imports torchvision at import time (``timm.layers.create_norm`` needs
  ``torchvision.ops.misc``, ``timm.data`` needs ``torchvision.datasets``). torchvision is a
  compiled extension that must match the torch build exactly; in our pinned environment the only
  installable torchvision is the CUDA build, which cannot load against ``torch+cpu`` (``import
  timm`` raises ``RuntimeError: operator torchvision::nms does not exist``). On robots (Jetson)
  matching torchvision builds are a well-known pain point. Plain torch has no such dependency.
* Nearly every part of timm's ViT would have to be overridden anyway: its position-embedding
  resampling is not the reference's ``scale_factor=(g+0.1)/37`` formula, its register tokens are
  named ``reg_token`` and placed before the position embedding is added, it has no
  ``mask_token``, and its ViT-g FFN keys are ``fc1/fc2`` instead of DINOv2's ``w12/w3``.

So the backbone keeps timm's composition idea (a block class passed in, small layer modules)
with DINOv2's exact parameter names, and the state_dict is the reference's, key for key.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from selavpr_ros.model.adapters import LAYER_NORM_EPS, AdapterBlock
from selavpr_ros.model.config import POS_EMBED_GRID, SelaVPRConfig
from selavpr_ros.model.layers import PatchEmbed

# DINOv2's interpolate_offset: the reference resizes with scale factor (g + 0.1) / 37.
POS_EMBED_OFFSET = 0.1


def resize_pos_embed(pos_embed: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """Resize a (1, 1+M*M, D) position embedding to ``grid_hw`` exactly as the reference does.

    Bicubic with ``scale_factor=((gh+0.1)/M, (gw+0.1)/M)`` and no antialias, in fp32; the class
    position is kept. At the native grid (gh = gw = M) the embedding is returned unchanged, as
    DINOv2's ``interpolate_pos_encoding`` does.
    """
    n = pos_embed.shape[1] - 1
    m = math.isqrt(n)
    if m * m != n:
        raise ValueError(f"pos_embed has {n} patch positions, not a square grid")
    gh, gw = grid_hw
    if (gh, gw) == (m, m):
        return pos_embed
    pos = pos_embed.float()
    dim = pos.shape[-1]
    patch = pos[:, 1:].reshape(1, m, m, dim).permute(0, 3, 1, 2)
    patch = F.interpolate(
        patch,
        scale_factor=((gh + POS_EMBED_OFFSET) / m, (gw + POS_EMBED_OFFSET) / m),
        mode="bicubic",
        antialias=False,
    )
    if tuple(patch.shape[-2:]) != (gh, gw):
        raise ValueError(f"pos_embed resize gave {tuple(patch.shape[-2:])}, wanted {grid_hw}")
    patch = patch.permute(0, 2, 3, 1).reshape(1, gh * gw, dim)
    return torch.cat((pos[:, :1], patch), dim=1).to(pos_embed.dtype)


class DinoV2Backbone(nn.Module):
    """DINOv2 ViT/14 with adapter blocks; returns the final-normed patch tokens (B, N, D).

    The resized position embedding is cached per patch grid. The cache is keyed on the
    parameter's storage and version counter, so loading weights, ``.to()`` or any in-place edit
    invalidates it; it is bypassed when ``pos_embed`` is being trained (it needs a gradient).
    """

    def __init__(self, config: SelaVPRConfig) -> None:
        super().__init__()
        d = config.embed_dim
        self.num_register_tokens = config.num_register_tokens
        self.patch_size = config.patch_size
        # Registration order gives the reference's key order.
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + POS_EMBED_GRID**2, d))
        if self.num_register_tokens:
            self.register_tokens: nn.Parameter | None = nn.Parameter(
                torch.zeros(1, self.num_register_tokens, d))
        else:
            self.register_tokens = None
        # Used only by DINOv2 masked training; kept so checkpoints load strictly.
        self.mask_token = nn.Parameter(torch.zeros(1, d))
        self.patch_embed = PatchEmbed(config.patch_size, d)
        self.blocks = nn.ModuleList(
            AdapterBlock(d, config.num_heads, config.adapter_dim, ffn=config.ffn)
            for _ in range(config.num_layers)
        )
        self.norm = nn.LayerNorm(d, eps=LAYER_NORM_EPS)
        # Training option: recompute each block's activations in the backward pass.
        self.grad_checkpointing = False
        self._pos_cache: dict[tuple[int, int], tuple[tuple[int, int, str], torch.Tensor]] = {}
        self.register_load_state_dict_post_hook(lambda module, _keys: module.clear_cache())

    def adapter_blocks(self) -> list[AdapterBlock]:
        """Return the blocks typed as what they are (``nn.ModuleList`` yields plain modules)."""
        return cast("list[AdapterBlock]", list(self.blocks))  # __init__ adds only AdapterBlocks

    def clear_cache(self) -> None:
        """Forget resized position embeddings (done automatically when weights change)."""
        self._pos_cache.clear()

    def pos_embed_for(self, grid_hw: tuple[int, int]) -> torch.Tensor:
        """Return the reference-resized position embedding for a grid (computed once per grid)."""
        param = self.pos_embed
        if param.requires_grad and torch.is_grad_enabled():
            return resize_pos_embed(param, grid_hw)
        tag = (param.data_ptr(), param._version, str(param.device))
        hit = self._pos_cache.get(grid_hw)
        if hit is not None and hit[0] == tag:
            return hit[1]
        # A normal (non-inference) tensor, so the cache is usable both inside and outside
        # torch.inference_mode; fp32 and outside autocast like the reference's .float().
        with torch.inference_mode(False), torch.no_grad():
            with torch.autocast(param.device.type, enabled=False):
                resized = resize_pos_embed(param.detach(), grid_hw)
        self._pos_cache[grid_hw] = (tag, resized)
        return resized

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"input {h}x{w} is not a multiple of the patch size {self.patch_size}"
            )
        grid = (h // self.patch_size, w // self.patch_size)
        x = self.patch_embed(x)
        # The token stream stays in the parameters' dtype (fp32 under autocast), as in DINOv2
        # where torch.cat promotes the half-precision patch tokens to the cls token's dtype.
        x = torch.cat((self.cls_token.expand(b, -1, -1), x.to(self.cls_token.dtype)), dim=1)
        x = x + self.pos_embed_for(grid).to(x.dtype)
        if self.register_tokens is not None:
            # DINOv2 inserts registers after the position embedding: they get none.
            regs = self.register_tokens.expand(b, -1, -1).to(x.dtype)
            x = torch.cat((x[:, :1], regs, x[:, 1:]), dim=1)
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.norm(x)[:, 1 + self.num_register_tokens :]
