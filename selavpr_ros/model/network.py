"""The SelaVPR network: adapted DINOv2 backbone, GeM global head and LocalAdapt local head.

``SelaVPR(config)(x)`` returns ``(local, global)`` like the reference: local features
(B, 4g-3, 4g-3, 128) and the global descriptor (B, D), both L2-normalised, fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selavpr_ros.model.backbone import DinoV2Backbone
from selavpr_ros.model.config import LOCAL_DIM, LOCAL_HIDDEN_DIM, SelaVPRConfig
from selavpr_ros.model.heads import GeM, LocalAdapt, build_aggregation

RANDOM_INIT = "random-init"


class SelaVPR(nn.Module):
    """SelaVPR feature extractor; its state_dict keys are the reference's without ``module.``.

    Attributes:
        config: the :class:`SelaVPRConfig` it was built from.
        weights_source: where the weights came from (``random-init``, a checkpoint path, ...).
        trained: True only when adapters and heads come from a trained SelaVPR checkpoint;
            random or backbone-only weights must never be presented as a trained model.
    """

    def __init__(self, config: SelaVPRConfig | None = None, init_weights: bool = True) -> None:
        super().__init__()
        self.config = config if config is not None else SelaVPRConfig()
        self.backbone = DinoV2Backbone(self.config)
        self.aggregation = build_aggregation()
        self.LocalAdapt = LocalAdapt(self.config.embed_dim, LOCAL_HIDDEN_DIM, LOCAL_DIM)
        self.weights_source = RANDOM_INIT
        self.trained = False
        if init_weights:
            self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise as the reference does before loading pretrained DINOv2 weights.

        trunc_normal(0.02) for every Linear with zero bias, pos_embed trunc_normal(0.02),
        cls/register tokens normal(1e-6), mask token 0, LayerScale 1, GeM p=3, PyTorch's
        default init for the convolutions, and finally every adapter's ``D_fc2`` set to 0 so
        the serial adapters start as identity and the parallel ones contribute nothing.
        """
        bb = self.backbone
        nn.init.trunc_normal_(bb.pos_embed, std=0.02)
        nn.init.normal_(bb.cls_token, std=1e-6)
        if bb.register_tokens is not None:
            nn.init.normal_(bb.register_tokens, std=1e-6)
        nn.init.zeros_(bb.mask_token)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.LayerNorm)):
                module.reset_parameters()
        for block in bb.adapter_blocks():
            block.ls1.gamma.fill_(1.0)
            block.ls2.gamma.fill_(1.0)
        self.zero_adapter_outputs()
        gem = self.aggregation[1]
        assert isinstance(gem, GeM)  # build_aggregation puts GeM at index 1
        gem.p.fill_(3.0)
        bb.clear_cache()
        self.weights_source = RANDOM_INIT
        self.trained = False

    @torch.no_grad()
    def zero_adapter_outputs(self) -> None:
        """Zero every adapter's second layer (weight and bias), as the reference's train.py."""
        for block in self.backbone.adapter_blocks():
            for adapter in (block.adapter1, block.adapter2):
                adapter.D_fc2.weight.zero_()
                adapter.D_fc2.bias.zero_()

    def patch_grid(self, tokens: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """(B, N, D) patch tokens -> (B, D, gh, gw) feature map."""
        p = self.config.patch_size
        gh, gw = hw[0] // p, hw[1] // p
        return tokens.reshape(tokens.shape[0], gh, gw, tokens.shape[-1]).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: normalised images (B, 3, H, W), H and W multiples of 14 -> (local, global)."""
        fmap = self.patch_grid(self.backbone(x), (x.shape[-2], x.shape[-1]))
        local = self.LocalAdapt(fmap)
        glob = F.normalize(self.aggregation(fmap), p=2.0, dim=-1)
        return local, glob

    def extra_repr(self) -> str:
        return f"config={self.config}, weights_source={self.weights_source!r}"
