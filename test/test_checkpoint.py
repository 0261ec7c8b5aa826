"""Loading every accepted checkpoint layout, and refusing bad ones with clear errors."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from model_testlib import official_checkpoint, random_reference_state_dict, to_numpy1_spelling
from selavpr_ros import cli
from selavpr_ros.errors import CheckpointError
from selavpr_ros.model import (
    SelaVPR,
    SelaVPRConfig,
    load_checkpoint,
    save_safetensors,
    weights_fingerprint,
)

NAME, DEPTH = "vits14", 2


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return random_reference_state_dict(NAME, DEPTH, seed=11)


def assert_same_weights(model: SelaVPR, state: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    assert sorted(got) == sorted(state)
    for key, value in state.items():
        assert torch.equal(got[key], value), key


def test_official_training_checkpoint(tmp_path: Path, state: dict) -> None:
    path = tmp_path / "SelaVPR_msls.pth"
    torch.save(official_checkpoint(state), path)
    model, cfg = load_checkpoint(path)
    assert cfg == SelaVPRConfig(backbone=NAME, depth=DEPTH)
    assert_same_weights(model, state)
    assert model.trained is True and model.weights_source == str(path)
    assert not model.training


def test_official_checkpoint_pickled_under_numpy1(tmp_path: Path, state: dict) -> None:
    """The released files name numpy globals ``numpy.core.multiarray.*``."""
    torch.save(official_checkpoint(state), tmp_path / "new.pth")
    legacy = to_numpy1_spelling(tmp_path / "new.pth", tmp_path / "legacy.pth")
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(legacy))
    assert "numpy.core.multiarray._reconstruct" in unsafe
    model, _ = load_checkpoint(legacy)
    assert_same_weights(model, state)


@pytest.mark.parametrize("prefix", ["", "module."])
def test_bare_state_dicts_file_and_mapping(tmp_path: Path, state: dict, prefix: str) -> None:
    raw = {prefix + k: v for k, v in state.items()}
    torch.save(raw, tmp_path / "bare.pth")
    assert_same_weights(load_checkpoint(tmp_path / "bare.pth")[0], state)
    assert_same_weights(load_checkpoint(raw)[0], state)


def test_legacy_upconv_head_names(state: dict) -> None:
    raw = {}
    for key, value in state.items():
        key = key.replace("LocalAdapt.upconv1.", "upconv.").replace("LocalAdapt.", "")
        raw["module." + key] = value
    assert "module.upconv.weight" in raw and "module.upconv2.bias" in raw
    assert_same_weights(load_checkpoint({"model_state_dict": raw})[0], state)


def test_registers_variant_is_inferred(tmp_path: Path) -> None:
    regs = random_reference_state_dict(NAME, 1, registers=True, seed=2)
    torch.save(official_checkpoint(regs), tmp_path / "reg4.pth")
    model, cfg = load_checkpoint(tmp_path / "reg4.pth")
    assert cfg.registers is True and cfg.depth == 1
    assert_same_weights(model, regs)


def test_plain_dinov2_backbone_file(tmp_path: Path, state: dict, caplog) -> None:
    backbone = {
        k[len("backbone.") :]: v
        for k, v in state.items()
        if k.startswith("backbone.") and ".adapter" not in k
    }
    torch.save(backbone, tmp_path / "dinov2_vits14_pretrain.pth")
    with caplog.at_level(logging.WARNING):
        model, cfg = load_checkpoint(tmp_path / "dinov2_vits14_pretrain.pth")
    assert cfg == SelaVPRConfig(backbone=NAME, depth=DEPTH)
    assert model.trained is False and model.weights_source.startswith("dinov2-backbone:")
    assert "untrained" in caplog.text
    got = model.state_dict()
    for key, value in backbone.items():
        assert torch.equal(got["backbone." + key], value), key
    for key, value in got.items():
        if ".D_fc2." in key:
            assert not value.any(), key  # reference init: second adapter layer zero
    assert got["aggregation.1.p"].item() == 3.0


def test_config_can_be_given_and_image_size_overridden(state: dict) -> None:
    cfg = SelaVPRConfig(backbone=NAME, depth=DEPTH, image_size=322)
    model, got = load_checkpoint(state, cfg)
    assert got == cfg and model.config.grid_hw == (23, 23)
    _, got = load_checkpoint(state, image_size=(224, 280))
    assert got.input_hw == (224, 280) and got.backbone == NAME


def test_safetensors_round_trip_and_cli(tmp_path: Path, state: dict, capsys) -> None:
    src = tmp_path / "best_model.pth"
    torch.save(official_checkpoint(state), src)
    dst = tmp_path / "out" / "best.safetensors"
    assert cli.main(["convert-checkpoint", str(src), str(dst)]) == 0
    assert "fingerprint" in capsys.readouterr().out
    from safetensors import safe_open

    with safe_open(str(dst), framework="pt") as f:
        meta = f.metadata()
    assert '"backbone": "vits14"' in meta["config"] and meta["trained"] == "true"
    model, cfg = load_checkpoint(dst)
    assert cfg == SelaVPRConfig(backbone=NAME, depth=DEPTH)
    assert_same_weights(model, state)
    assert meta["fingerprint"] == weights_fingerprint(state)
    # Refuses to overwrite without --force; errors come out in one line with status 2.
    assert cli.main(["convert-checkpoint", str(src), str(dst)]) == 2
    assert "exists" in capsys.readouterr().err


def test_untrained_weights_stay_untrained_through_conversion(tmp_path: Path) -> None:
    model = SelaVPR(SelaVPRConfig(backbone=NAME, depth=1))
    save_safetensors(model, tmp_path / "random.safetensors")
    loaded, _ = load_checkpoint(tmp_path / "random.safetensors")
    assert loaded.trained is False


def test_wrong_shape_is_named(state: dict) -> None:
    bad = dict(state)
    bad["backbone.blocks.1.attn.proj.weight"] = torch.zeros(384, 383)
    with pytest.raises(CheckpointError, match=r"backbone\.blocks\.1\.attn\.proj\.weight"):
        load_checkpoint(bad)


def test_missing_and_unexpected_keys_are_named(state: dict) -> None:
    bad = {k: v for k, v in state.items() if k != "backbone.mask_token"}
    bad["backbone.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(bad)
    message = str(info.value)
    assert "1 missing keys: backbone.mask_token" in message
    assert "1 unexpected keys: backbone.extra.weight" in message


def test_config_disagreeing_with_weights(state: dict) -> None:
    with pytest.raises(CheckpointError, match="missing keys: backbone.blocks.2"):
        load_checkpoint(state, SelaVPRConfig(backbone=NAME, depth=3))


class _Payload:
    """Unpickling this would call _mark (a stand-in for os.system)."""

    def __reduce__(self):
        return (_mark, ("executed",))


def _mark(text: str) -> str:
    _MARKS.append(text)
    return text


_MARKS: list[str] = []


def test_foreign_pickle_is_refused_without_running_it(tmp_path: Path, state: dict) -> None:
    ck = official_checkpoint(state)
    ck["args"] = _Payload()
    path = tmp_path / "evil.pth"
    torch.save(ck, path)
    with pytest.raises(CheckpointError, match=r"refusing to load: .*_mark"):
        load_checkpoint(path)
    assert _MARKS == []


class _System:
    """Unpickling this would run os.system (pickled as ``posix.system``)."""

    def __reduce__(self):
        import os

        return (os.system, ("touch SHOULD_NOT_EXIST",))


@pytest.mark.parametrize("container", ["torch_zip", "plain_pickle"])
def test_refusal_names_the_global_and_never_suggests_unsafe_loading(
        tmp_path: Path, state: dict, container: str, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    ck = official_checkpoint(state)
    ck["args"] = _System()
    path = tmp_path / "evil.pth"
    if container == "torch_zip":
        torch.save(ck, path)
    else:
        path.write_bytes(pickle.dumps(ck, protocol=2))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "posix.system" in message and "refusing to load" in message
    assert "weights_only" not in message and "\n" not in message
    out = tmp_path / "out.safetensors"
    assert cli.main(["convert-checkpoint", str(path), str(out)]) == 2
    err = capsys.readouterr().err
    assert "posix.system" in err and "weights_only" not in err and err.count("\n") == 1
    assert not (tmp_path / "SHOULD_NOT_EXIST").exists() and not out.exists()


def test_object_dtype_array_is_refused(tmp_path: Path, state: dict) -> None:
    ck = official_checkpoint(state)
    ck["recalls"] = np.array([1, "a"], dtype=object)
    torch.save(ck, tmp_path / "obj.pth")
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(tmp_path / "obj.pth")


@pytest.mark.parametrize(
    "content, match",
    [
        (b"not a checkpoint at all", "not a readable torch checkpoint"),
        (pickle.dumps([1, 2, 3], protocol=4), "not a readable torch checkpoint"),
    ],
)
def test_garbage_files(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "junk.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_torch_file_without_tensors(tmp_path: Path) -> None:
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="expected a dict of tensors, got list"):
        load_checkpoint(tmp_path / "list.pth")


def test_other_rejections(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "absent.pth")
    with pytest.raises(CheckpointError, match="key 'epoch' holds a int"):
        load_checkpoint({"epoch": 3, "w": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="neither a SelaVPR checkpoint"):
        load_checkpoint({"fc.weight": torch.zeros(1)})
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(tmp_path / "bad.safetensors")


def test_fingerprint_properties(state: dict) -> None:
    reordered = dict(reversed(list(state.items())))
    assert weights_fingerprint(reordered) == weights_fingerprint(state)
    changed = dict(state)
    changed["aggregation.1.p"] = state["aggregation.1.p"] + 1e-3
    assert weights_fingerprint(changed) != weights_fingerprint(state)
    halved = {k: v.half() for k, v in state.items()}
    assert weights_fingerprint(halved) != weights_fingerprint(state)
    assert len(weights_fingerprint(state)) == 64
