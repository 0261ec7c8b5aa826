"""The state_dict contract: full ViT-L keys and shapes are the reference's (built on meta)."""

from __future__ import annotations

import pytest
import torch

from selavpr_ros.model import SelaVPR, SelaVPRConfig


def reference_vitl_keys(registers: bool) -> dict[str, tuple[int, ...]]:
    """Written out from the published checkpoints' key layout (without ``module.``)."""
    keys: dict[str, tuple[int, ...]] = {
        "backbone.cls_token": (1, 1, 1024),
        "backbone.pos_embed": (1, 1370, 1024),
    }
    if registers:
        keys["backbone.register_tokens"] = (1, 4, 1024)
    keys["backbone.mask_token"] = (1, 1024)
    keys["backbone.patch_embed.proj.weight"] = (1024, 3, 14, 14)
    keys["backbone.patch_embed.proj.bias"] = (1024,)
    for i in range(24):
        b = f"backbone.blocks.{i}."
        keys.update({
            b + "norm1.weight": (1024,), b + "norm1.bias": (1024,),
            b + "attn.qkv.weight": (3072, 1024), b + "attn.qkv.bias": (3072,),
            b + "attn.proj.weight": (1024, 1024), b + "attn.proj.bias": (1024,),
            b + "ls1.gamma": (1024,),
            b + "norm2.weight": (1024,), b + "norm2.bias": (1024,),
            b + "mlp.fc1.weight": (4096, 1024), b + "mlp.fc1.bias": (4096,),
            b + "mlp.fc2.weight": (1024, 4096), b + "mlp.fc2.bias": (1024,),
            b + "ls2.gamma": (1024,),
            b + "adapter1.D_fc1.weight": (512, 1024), b + "adapter1.D_fc1.bias": (512,),
            b + "adapter1.D_fc2.weight": (1024, 512), b + "adapter1.D_fc2.bias": (1024,),
            b + "adapter2.D_fc1.weight": (512, 1024), b + "adapter2.D_fc1.bias": (512,),
            b + "adapter2.D_fc2.weight": (1024, 512), b + "adapter2.D_fc2.bias": (1024,),
        })  # fmt: skip
    keys["backbone.norm.weight"] = (1024,)
    keys["backbone.norm.bias"] = (1024,)
    keys["aggregation.1.p"] = (1,)
    keys["LocalAdapt.upconv1.weight"] = (1024, 256, 3, 3)
    keys["LocalAdapt.upconv1.bias"] = (256,)
    keys["LocalAdapt.upconv2.weight"] = (256, 128, 3, 3)
    keys["LocalAdapt.upconv2.bias"] = (128,)
    return keys


def meta_state_dict(config: SelaVPRConfig) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return SelaVPR(config).state_dict()


@pytest.mark.parametrize("registers, count", [(False, 540), (True, 541)])
def test_full_vitl_keys_shapes_and_order_match_reference(registers: bool, count: int) -> None:
    state = meta_state_dict(SelaVPRConfig(registers=registers))
    expected = reference_vitl_keys(registers)
    assert len(expected) == count
    assert list(state) == list(expected)  # same keys, same order as the reference file
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert all(v.device.type == "meta" for v in state.values())


def test_full_vitl_parameter_counts_match_reference() -> None:
    """Counts measured from the instantiated reference model."""
    state = meta_state_dict(SelaVPRConfig())
    total = sum(v.numel() for v in state.values())
    adapters = sum(v.numel() for k, v in state.items() if ".adapter" in k)
    local = sum(v.numel() for k, v in state.items() if k.startswith("LocalAdapt."))
    assert total == 357_428_609
    assert adapters == 50_405_376
    assert local == 2_654_592
    assert total - adapters - local - 1 == 304_368_640
    with_regs = meta_state_dict(SelaVPRConfig(registers=True))
    assert sum(v.numel() for v in with_regs.values()) == total + 4 * 1024


@pytest.mark.parametrize(
    "backbone, dim, mlp_key, mlp_shape",
    [
        ("vits14", 384, "mlp.fc1.weight", (1536, 384)),
        ("vitb14", 768, "mlp.fc1.weight", (3072, 768)),
        # DINOv2 ViT-g: fused SwiGLU, hidden int(6144*2/3) rounded to 8 = 4096, w12 packs two.
        ("vitg14", 1536, "mlp.w12.weight", (8192, 1536)),
    ],
)
def test_other_backbones_derive_widths_from_config(
    backbone: str, dim: int, mlp_key: str, mlp_shape: tuple[int, int]
) -> None:
    state = meta_state_dict(SelaVPRConfig(backbone=backbone, depth=1))
    assert tuple(state["backbone.cls_token"].shape) == (1, 1, dim)
    assert tuple(state[f"backbone.blocks.0.{mlp_key}"].shape) == mlp_shape
    assert tuple(state["backbone.blocks.0.adapter1.D_fc1.weight"].shape) == (dim // 2, dim)
    assert tuple(state["LocalAdapt.upconv1.weight"].shape) == (dim, 256, 3, 3)
    assert not any(k.startswith("backbone.blocks.1.") for k in state)
