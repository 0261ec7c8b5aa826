"""Parity with the independent reference forward (bench/reference_model.py), fp32 on the CPU.

The same random reference-format checkpoint (nested, ``module.``, numpy objects, saved with
torch.save) is loaded by our load_checkpoint and, after stripping ``module.``, strictly into the
reference; features must agree to 1e-5 and patch tokens to float rounding.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model_testlib import official_checkpoint, random_reference_state_dict, reference_model
from selavpr_ros.model import backbone as backbone_module
from selavpr_ros.model import load_checkpoint

ATOL = 1e-5


def _load_both(tmp_path: Path, name: str, depth: int, registers: bool):
    state = random_reference_state_dict(name, depth, registers, seed=7)
    path = tmp_path / "best_model.pth"
    torch.save(official_checkpoint(state), path)
    ours, _ = load_checkpoint(path)
    return ours, reference_model(name, depth, registers, state)


@pytest.mark.parametrize(
    "name, depth, registers, hw",
    [
        ("vitl14", 2, False, (224, 224)),  # the acceptance case
        ("vits14", 2, True, (224, 224)),  # registers: tokens [cls, 4 regs, patches]
        ("vits14", 1, False, (182, 266)),  # non-square, non-224: 13x19 grid, 49x73 locals
    ],
)
def test_features_match_reference(
    tmp_path: Path, name: str, depth: int, registers: bool, hw: tuple[int, int]
) -> None:
    ours, ref = _load_both(tmp_path, name, depth, registers)
    x = torch.randn(2, 3, *hw, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        ref_local, ref_global = ref(x)
        tokens = ours.backbone(x)
        local, glob = ours(x)
    gh, gw = hw[0] // 14, hw[1] // 14
    assert local.shape == ref_local.shape == (2, 4 * gh - 3, 4 * gw - 3, 128)
    assert glob.shape == ref_global.shape
    assert torch.allclose(tokens, ref.last_patch_tokens, atol=1e-5, rtol=0)
    assert (local - ref_local).abs().max().item() < ATOL
    assert (glob - ref_global).abs().max().item() < ATOL
    gem = ours.aggregation(ours.patch_grid(tokens, hw))
    assert torch.allclose(gem, ref.last_gem, atol=ATOL, rtol=0)


def test_pos_embed_resized_once_per_grid_and_refreshed_after_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours, ref = _load_both(tmp_path, "vits14", 1, False)
    calls: list[tuple[int, int]] = []
    real = backbone_module.resize_pos_embed

    def counting(pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        calls.append(grid)
        return real(pos, grid)

    monkeypatch.setattr(backbone_module, "resize_pos_embed", counting)
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        for _ in range(3):
            ours(x)
        ours(torch.randn(1, 3, 280, 224))
    assert calls == [(16, 16), (20, 16)]

    # New weights must not reuse the stale resized embedding.
    new_state = ours.state_dict()
    new_state["backbone.pos_embed"] = torch.randn_like(new_state["backbone.pos_embed"])
    ours.load_state_dict(new_state)
    ref.load_state_dict(new_state)
    with torch.inference_mode():
        local, glob = ours(x)
        ref_local, ref_global = ref(x)
    assert calls[-1] == (16, 16) and len(calls) == 3
    assert (glob - ref_global).abs().max().item() < ATOL
    assert (local - ref_local).abs().max().item() < ATOL
