"""Building extractors from specs (the path the CLI and the nodes take)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from selavpr_ros.commands.extractor_options import add_extractor_arguments, spec_from_args
from selavpr_ros.errors import CheckpointError, ConfigError
from selavpr_ros.extractors.factory import ExtractorSpec, create_extractor, resolve
from selavpr_ros.model import SelaVPR, SelaVPRConfig, save_safetensors


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = SelaVPR(SelaVPRConfig(backbone="vits14", depth=1)).eval()
    return save_safetensors(model, tmp_path_factory.mktemp("ckpt") / "small.safetensors"), model


def test_selavpr_from_a_checkpoint_file_matches_the_model(small_checkpoint):
    path, model = small_checkpoint
    extractor = create_extractor(ExtractorSpec(checkpoint=str(path), batch_size=2))
    assert extractor.info.name == "selavpr-vits14-d1-224x224"
    # Random weights are never presented as a trained model.
    assert extractor.info.fingerprint.startswith("untrained-")
    image = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    features = extractor.extract([image])
    from selavpr_ros.model import preprocess

    with torch.inference_mode():
        local, glob = model(preprocess([image]))
    assert np.allclose(features.global_desc, glob.numpy(), atol=1e-5)
    assert np.allclose(features.local.reshape(local.shape), local.numpy(), atol=1e-5)


def test_spec_validation_messages():
    with pytest.raises(ConfigError, match="needs a checkpoint"):
        ExtractorSpec(kind="selavpr")
    with pytest.raises(ConfigError, match="unknown extractor 'sift'"):
        ExtractorSpec(kind="sift")
    with pytest.raises(ConfigError, match="precision"):
        ExtractorSpec(checkpoint="x", precision="int8")


def test_missing_checkpoint_file_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError):
        create_extractor(ExtractorSpec(checkpoint=str(tmp_path / "missing.pth")))


def test_command_line_options_make_the_spec():
    parser = argparse.ArgumentParser()
    add_extractor_arguments(parser)
    args = parser.parse_args(["--checkpoint", "w.safetensors", "--device", "cuda:1",
                              "--precision", "fp16", "--batch-size", "4"])
    assert spec_from_args(args) == ExtractorSpec(
        kind="", checkpoint="w.safetensors", device="cuda:1", precision="fp16",
        batch_size=4)


def test_the_map_records_the_kind_and_a_contradicting_one_is_refused():
    from selavpr_ros.extractors.base import ExtractorInfo

    classical = ExtractorInfo("classical-rootsift-vlad64-320x240", "v", global_dim=4,
                              local_count=2, local_dim=2)
    selavpr = ExtractorInfo("selavpr-vits14-d1-112x112", "w", global_dim=4, local_count=2,
                            local_dim=2)
    assert resolve(ExtractorSpec(), classical).kind == "classical"
    assert resolve(ExtractorSpec(checkpoint="w.pth"), None).kind == "selavpr"  # a new map
    assert resolve(ExtractorSpec(checkpoint="w.pth"), selavpr).kind == "selavpr"
    with pytest.raises(ConfigError, match="built by the classical extractor .* not by 'selavpr'"):
        resolve(ExtractorSpec(kind="selavpr", checkpoint="w.pth"), classical, "gp.selavpr")
    with pytest.raises(ConfigError, match="give its checkpoint"):
        resolve(ExtractorSpec(), selavpr, "m.selavpr")
