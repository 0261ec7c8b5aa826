"""SelaVPR's two heads on the patch-token grid: GeM global descriptor and LocalAdapt.

Both run in fp32 for the normalisations and the GeM power, whatever the backbone precision:
they are cheap, and fp16 powers and norms would cost descriptor accuracy for nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

GEM_EPS = 1e-6
GEM_P_INIT = 3.0


class L2Norm(nn.Module):
    """L2-normalise along ``dim`` (per patch token over channels, in the aggregation)."""

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, p=2.0, dim=self.dim)


class GeM(nn.Module):
    """Generalised mean pooling over the spatial grid with a learnable exponent ``p``.

    ``clamp(min=eps)`` zeroes negative components before the power, as the reference does.
    """

    def __init__(self, p: float = GEM_P_INIT, eps: float = GEM_EPS) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p.float()
        pooled = x.float().clamp(min=self.eps).pow(p).mean(dim=(-2, -1), keepdim=True)
        return pooled.pow(1.0 / p)


def build_aggregation() -> nn.Sequential:
    """(B, D, gh, gw) -> (B, D); index 1 is GeM so its key is ``aggregation.1.p``."""
    return nn.Sequential(L2Norm(dim=1), GeM(), nn.Flatten())


class LocalAdapt(nn.Module):
    """Two stride-2 transposed convs: (B, D, g, g) -> (B, 4g-3, 4g-3, 128), unit norm per cell."""

    def __init__(self, in_dim: int, hidden_dim: int = 256, out_dim: int = 128) -> None:
        super().__init__()
        self.upconv1 = nn.ConvTranspose2d(in_dim, hidden_dim, kernel_size=3, stride=2, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.upconv2 = nn.ConvTranspose2d(hidden_dim, out_dim, kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.upconv2(self.relu(self.upconv1(x)))
        return F.normalize(x.float().permute(0, 2, 3, 1), p=2.0, dim=-1)
