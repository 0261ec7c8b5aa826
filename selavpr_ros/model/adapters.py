"""SelaVPR's global adaptation: bottleneck adapters inside every ViT block.

In each block a *serial* adapter (with its own residual) follows attention, before LayerScale
ls1, and a *parallel* adapter, scaled by 0.2, runs beside the MLP on the same ``norm2(x)``,
inside LayerScale ls2 (docs/model.md, "Backbone").
"""

from __future__ import annotations

import torch
from torch import nn

from selavpr_ros.model.layers import FFN_LAYERS, Attention, LayerScale

PARALLEL_ADAPTER_SCALE = 0.2
LAYER_NORM_EPS = 1e-6


class Adapter(nn.Module):
    """Linear D->h, ReLU, Linear h->D; ``skip_connect`` adds the input back (serial use)."""

    def __init__(self, dim: int, hidden_dim: int, skip_connect: bool) -> None:
        super().__init__()
        self.skip_connect = skip_connect
        self.D_fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.ReLU()
        self.D_fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.D_fc2(self.act(self.D_fc1(x)))
        return x + out if self.skip_connect else out


class AdapterBlock(nn.Module):
    """A DINOv2 block (pre-norm, LayerScale) with SelaVPR's serial and parallel adapters.

    Attribute names give the reference keys: ``norm1 attn ls1 norm2 mlp ls2 adapter1 adapter2``.
    Drop-path is omitted: the reference uses rate 0, so train and eval maths are the same.
    """

    def __init__(
        self, dim: int, num_heads: int, adapter_dim: int, ffn: str = "mlp", mlp_ratio: float = 4.0
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = FFN_LAYERS[ffn](dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim)
        self.adapter1 = Adapter(dim, adapter_dim, skip_connect=True)
        self.adapter2 = Adapter(dim, adapter_dim, skip_connect=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.adapter1(self.attn(self.norm1(x))))
        h = self.norm2(x)
        return x + self.ls2(self.mlp(h) + PARALLEL_ADAPTER_SCALE * self.adapter2(h))
