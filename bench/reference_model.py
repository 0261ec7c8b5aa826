"""A deliberately plain re-statement of the published SelaVPR forward, for parity checks.

Written from docs/model.md (the published forward), independent of ``selavpr_ros.model``:
no timm, no import of our package, naive softmax attention ``(q*scale) @ k^T``, and the 37x37
position embedding re-interpolated at *every* forward with
``F.interpolate(scale_factor=((g+0.1)/37,)*2, mode="bicubic", antialias=False)``, as DINOv2's
``interpolate_pos_encoding`` in the reference does. Module names reproduce the reference's
state_dict keys (``backbone.blocks.N.adapter1.D_fc1`` ...), so a reference-format state_dict
(after removing ``module.``) loads with ``strict=True``.

Not part of the product: tests and ``bench_model.py`` import it from ``bench/``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# name: (embed dim, depth, heads, ffn)
VITS = {
    "vits14": (384, 12, 6, "mlp"),
    "vitb14": (768, 12, 12, "mlp"),
    "vitl14": (1024, 24, 16, "mlp"),
    "vitg14": (1536, 40, 24, "swiglufused"),
}


class RefAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads)
        qkv = qkv.permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class RefMlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class RefSwiGLUFused(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x12 = self.w12(x)
        x1, x2 = x12.chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class RefLayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class RefAdapter(nn.Module):
    def __init__(self, dim: int, skip_connect: bool) -> None:
        super().__init__()
        self.skip_connect = skip_connect
        self.D_fc1 = nn.Linear(dim, int(dim * 0.5))
        self.D_fc2 = nn.Linear(int(dim * 0.5), dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = self.D_fc2(F.relu(self.D_fc1(x)))
        if self.skip_connect:
            return x + xs
        return xs


class RefBlock(nn.Module):
    def __init__(self, dim: int, heads: int, ffn: str) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = RefAttention(dim, heads)
        self.ls1 = RefLayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = RefMlp(dim, 4 * dim) if ffn == "mlp" else RefSwiGLUFused(dim, 4 * dim)
        self.ls2 = RefLayerScale(dim)
        self.adapter1 = RefAdapter(dim, skip_connect=True)
        self.adapter2 = RefAdapter(dim, skip_connect=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.adapter1(self.attn(self.norm1(x))))
        n2 = self.norm2(x)
        x = x + self.ls2(self.mlp(n2) + 0.2 * self.adapter2(n2))
        return x


class RefPatchEmbed(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=14, stride=14)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class RefDinoViT(nn.Module):
    def __init__(self, name: str, depth: int | None, registers: bool) -> None:
        super().__init__()
        dim, full_depth, heads, ffn = VITS[name]
        self.num_register_tokens = 4 if registers else 0
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + 37 * 37, dim))
        if registers:
            self.register_tokens = nn.Parameter(torch.zeros(1, 4, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.patch_embed = RefPatchEmbed(dim)
        n = full_depth if depth is None else depth
        self.blocks = nn.ModuleList([RefBlock(dim, heads, ffn) for _ in range(n)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def interpolate_pos_encoding(self, x: torch.Tensor, w: int, h: int) -> torch.Tensor:
        # DINOv2 as vendored by SelaVPR: (w, h) are dims 2 and 3 of the input, offset 0.1.
        previous_dtype = x.dtype
        npatch = x.shape[1] - 1
        N = self.pos_embed.shape[1] - 1
        if npatch == N and w == h:
            return self.pos_embed
        pos_embed = self.pos_embed.float()
        class_pos_embed = pos_embed[:, 0]
        patch_pos_embed = pos_embed[:, 1:]
        dim = x.shape[-1]
        w0 = w // 14
        h0 = h // 14
        M = int(math.sqrt(N))
        sx = float(w0 + 0.1) / M
        sy = float(h0 + 0.1) / M
        patch_pos_embed = F.interpolate(
            patch_pos_embed.reshape(1, M, M, dim).permute(0, 3, 1, 2),
            scale_factor=(sx, sy),
            mode="bicubic",
            antialias=False,
        )
        assert (w0, h0) == patch_pos_embed.shape[-2:]
        patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).view(1, -1, dim)
        out = torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1)
        return out.to(previous_dtype)

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        B, nc, w, h = x.shape
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + self.interpolate_pos_encoding(x, w, h)
        if self.num_register_tokens:
            x = torch.cat(
                (x[:, :1], self.register_tokens.expand(x.shape[0], -1, -1), x[:, 1:]), dim=1
            )
        for blk in self.blocks:
            x = blk(x)
        x_norm = self.norm(x)
        return {
            "x_norm_clstoken": x_norm[:, 0],
            "x_norm_patchtokens": x_norm[:, self.num_register_tokens + 1 :],
        }


class RefL2Norm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, p=2, dim=1)


class RefGeM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * 3)
        self.eps = 1e-6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x.clamp(min=self.eps).pow(self.p), (x.size(-2), x.size(-1))).pow(
            1.0 / self.p
        )


class RefLocalAdapt(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.upconv1 = nn.ConvTranspose2d(dim, 256, kernel_size=3, stride=2, padding=1)
        self.upconv2 = nn.ConvTranspose2d(256, 128, kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.upconv1(x)
        x = F.relu(x)
        x = self.upconv2(x)
        x = x.permute(0, 2, 3, 1)
        return F.normalize(x, p=2, dim=-1)


class ReferenceSelaVPR(nn.Module):
    """The reference network; ``forward`` returns (local, global) like network.py.

    ``last_patch_tokens`` and ``last_gem`` keep the intermediates the parity plan compares.
    """

    def __init__(self, name: str = "vitl14", depth: int | None = None, registers: bool = False):
        super().__init__()
        self.dim = VITS[name][0]
        self.backbone = RefDinoViT(name, depth, registers)
        self.aggregation = nn.Sequential(RefL2Norm(), RefGeM(), nn.Flatten())
        self.LocalAdapt = RefLocalAdapt(self.dim)
        self.last_patch_tokens: torch.Tensor | None = None
        self.last_gem: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, _, H, W = x.shape
        tokens = self.backbone.forward_features(x)["x_norm_patchtokens"]
        self.last_patch_tokens = tokens
        x_p = tokens.view(-1, H // 14, W // 14, self.dim).permute(0, 3, 1, 2)
        x_g = self.aggregation(x_p)
        self.last_gem = x_g
        local_feature = self.LocalAdapt(x_p)
        global_feature = F.normalize(x_g, p=2, dim=-1)
        return local_feature, global_feature
