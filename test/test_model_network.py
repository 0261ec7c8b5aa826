"""The network on small random configurations: shapes, norms, adapters at init, determinism."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from model_testlib import random_reference_state_dict, reference_model
from selavpr_ros.errors import ConfigError
from selavpr_ros.model import InferenceRunner, SelaVPR, SelaVPRConfig


@pytest.fixture(scope="module")
def small() -> SelaVPR:
    torch.manual_seed(0)
    return SelaVPR(SelaVPRConfig(backbone="vits14", depth=2)).eval()


def test_random_model_is_marked_untrained(small: SelaVPR) -> None:
    assert small.trained is False
    assert small.weights_source == "random-init"


def test_output_shapes_and_unit_norms(small: SelaVPR) -> None:
    x = torch.randn(3, 3, 224, 224)
    with torch.inference_mode():
        local, glob = small(x)
    assert local.shape == (3, 61, 61, 128) and glob.shape == (3, 384)
    assert local.dtype == glob.dtype == torch.float32
    assert torch.allclose(local.norm(dim=-1), torch.ones(3, 61, 61), atol=1e-5)
    assert torch.allclose(glob.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_vitl_width_global_is_1024() -> None:
    model = SelaVPR(SelaVPRConfig(backbone="vitl14", depth=1)).eval()
    with torch.inference_mode():
        local, glob = model(torch.randn(1, 3, 224, 224))
    assert local.shape == (1, 61, 61, 128) and glob.shape == (1, 1024)


def test_reference_init_zeroes_adapter_outputs(small: SelaVPR) -> None:
    for block in small.backbone.blocks:
        for adapter in (block.adapter1, block.adapter2):
            assert not adapter.D_fc2.weight.any() and not adapter.D_fc2.bias.any()
            assert adapter.D_fc1.weight.std().item() == pytest.approx(0.02, rel=0.1)
            assert not adapter.D_fc1.bias.any()
    assert small.aggregation[1].p.item() == 3.0


def test_adapters_with_zero_second_layer_leave_patch_tokens_unchanged() -> None:
    """Ours with D_fc2 = 0 equals a plain DINOv2 forward (reference with adapters removed)."""
    state = random_reference_state_dict("vits14", 2, seed=5)
    for key in list(state):
        if ".D_fc2." in key:
            state[key] = torch.zeros_like(state[key])
    ref = reference_model("vits14", 2, False, state)
    for block in ref.backbone.blocks:
        block.adapter1 = nn.Identity()  # serial adapter without its branch: identity
        block.adapter2 = _Zero()  # parallel adapter without its branch: nothing
    ours = SelaVPR(SelaVPRConfig(backbone="vits14", depth=2), init_weights=False).eval()
    ours.load_state_dict(state)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref(x)
        tokens = ours.backbone(x)
        # The first adapter layer is irrelevant when the second is zero: exactly equal tokens.
        for block in ours.backbone.blocks:
            block.adapter1.D_fc1.weight.normal_()
            block.adapter2.D_fc1.weight.normal_()
        tokens_again = ours.backbone(x)
    assert torch.allclose(tokens, ref.last_patch_tokens, atol=1e-5, rtol=0)
    assert torch.equal(tokens, tokens_again)


class _Zero(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def test_deterministic_and_batch_independent(small: SelaVPR) -> None:
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        a_local, a_glob = small(x)
        b_local, b_glob = small(x)
        one_local, one_glob = small(x[1:2])
    assert torch.equal(a_local, b_local) and torch.equal(a_glob, b_glob)
    assert torch.allclose(one_local[0], a_local[1], atol=1e-5)
    assert torch.allclose(one_glob[0], a_glob[1], atol=1e-5)


def test_gradients_flow_to_trainable_parts() -> None:
    """Training uses the same module: the pos-embed cache must not cut gradients."""
    model = SelaVPR(SelaVPRConfig(backbone="vits14", depth=1))
    local, glob = model(torch.randn(1, 3, 224, 224))
    (local.sum() + glob.sum()).backward()
    assert model.backbone.pos_embed.grad is not None
    assert model.aggregation[1].p.grad is not None
    assert model.LocalAdapt.upconv1.weight.grad is not None


def test_runner_bf16_close_to_fp32_and_batches(small: SelaVPR) -> None:
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    ref_local, ref_glob = InferenceRunner(small, "cpu", "fp32").extract(x)
    local, glob = InferenceRunner(small, "cpu", "bf16", batch_size=2).extract(x)
    assert local.dtype == glob.dtype == torch.float32
    assert local.shape == ref_local.shape and glob.shape == ref_glob.shape
    assert (glob * ref_glob).sum(-1).min().item() > 0.99
    assert (local * ref_local).sum(-1).mean().item() > 0.95


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"device": "cpu", "precision": "fp16"}, "needs a CUDA"),
        ({"device": "cpu", "precision": "int8"}, "precision 'int8'"),
        ({"device": "cpu", "batch_size": 0}, "batch_size"),
    ],
)
def test_runner_rejects_bad_settings(small: SelaVPR, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        InferenceRunner(small, **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_runner_rejects_missing_cuda(small: SelaVPR) -> None:
    with pytest.raises(ConfigError, match="CUDA is not available"):
        InferenceRunner(small, device="cuda")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"backbone": "vitx14"}, "unknown backbone 'vitx14'"),
        ({"image_size": 225}, "multiple of the patch size"),
        ({"image_size": (224, 100)}, "multiple of the patch size"),
        ({"depth": 0}, "depth"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SelaVPRConfig(**kwargs)


def test_config_grids_and_round_trip() -> None:
    cfg = SelaVPRConfig(image_size=(322, 224))
    assert cfg.grid_hw == (23, 16) and cfg.local_hw == (89, 61)
    assert SelaVPRConfig().local_hw == (61, 61) and SelaVPRConfig().global_dim == 1024
    assert SelaVPRConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown SelaVPRConfig keys"):
        SelaVPRConfig.from_dict({**cfg.to_dict(), "heads": 3})
