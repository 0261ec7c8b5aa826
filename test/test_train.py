"""``selavpr train`` on a tiny random model and a small synthetic world: the recipe's promises.

Frozen parameters stay bit-identical, the loss falls on a fixed batch, a run killed with SIGKILL
and resumed ends where an uninterrupted run ends, the output loads in build-map / evaluate and
is refused by a map of other weights, and bad input gives one line and keeps the last checkpoint.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from selavpr_ros.cli import main as cli_main
from selavpr_ros.model import SelaVPR, SelaVPRConfig, load_checkpoint, save_safetensors
from selavpr_ros.model.safe_load import torch_load_safe
from selavpr_ros.synthetic import Camera, RouteConfig, Traversal, write_route
from selavpr_ros.train import TrainConfig, load_folder_drive
from selavpr_ros.train.params import is_trainable
from selavpr_ros.train.trainer import Trainer

TINY = SelaVPRConfig(backbone="vits14", depth=1, image_size=28)
MODEL_ARGS = ["--random-init", "--backbone", "vits14", "--depth", "1", "--image-size", "28"]
RECIPE_ARGS = ["--queries-per-epoch", "16", "--cache-refresh", "8", "--negatives-sample", "20",
               "--lr", "1e-3", "--val-radius", "5", "--rerank-k", "10", "--no-progress"]
ATOL = 1e-5  # resumed vs uninterrupted: same ops in the same order, so far below this


@pytest.fixture(scope="module")
def route(tmp_path_factory):
    out = tmp_path_factory.mktemp("train_route")
    config = RouteConfig(seed=3, frames=24, spacing_m=3.0, camera=Camera(width=64, height=48),
                         traversals=(Traversal(-2.0, "day", 0.0),
                                     Traversal(1.0, "afternoon", 0.7),
                                     Traversal(2.0, "dusk", 1.3)))
    write_route(config, out)
    return [out / f"traversal_{i}" for i in range(3)]


def drive_args(route) -> list[str]:
    args = []
    for folder in route:
        args += ["--images", str(folder), "--poses", str(folder / "poses.csv")]
    return [*args, "--val", "2"]


@pytest.fixture(scope="module")
def trained(route, tmp_path_factory):
    out = tmp_path_factory.mktemp("train_run") / "run"
    argv = ["train", str(out), *MODEL_ARGS, *drive_args(route), *RECIPE_ARGS, "--epochs", "2"]
    assert cli_main(argv) == 0
    return out


def tiny_trainer(route, out: Path, **overrides) -> Trainer:
    torch.manual_seed(0)
    model = SelaVPR(TINY)
    drives = [load_folder_drive(f, f / "poses.csv") for f in route[:2]]
    config = TrainConfig(cache_refresh=8, negatives_sample=20, **overrides)
    return Trainer(model, drives, [], config, out, progress=False)


def test_only_adapters_gem_and_local_head_learn(route, tmp_path):
    trainer = tiny_trainer(route, tmp_path, lr=1e-3)
    model = trainer.model
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    queries, pool = trainer.miner.draw(1, 0, 8)
    rows = trainer.miner.mine(queries, pool, trainer.describe)
    for start in range(0, 8, 4):
        trainer.step(rows[start:start + 4])
    after = model.state_dict()
    frozen = [k for k in before if not is_trainable(k)]
    assert len(frozen) == 3 + 2 + 14 + 2  # cls/pos/mask tokens, patch embed, 1 block, norm
    for key in frozen:
        assert torch.equal(before[key], after[key]), f"frozen {key} changed"
        assert not dict(model.named_parameters())[key].requires_grad
    for key in ("backbone.blocks.0.adapter1.D_fc2.weight", "backbone.blocks.0.adapter2.D_fc1.bias",
                "aggregation.1.p", "LocalAdapt.upconv1.weight", "LocalAdapt.upconv2.bias"):
        assert not torch.equal(before[key], after[key]), f"trainable {key} did not change"


def test_trainable_counts_match_the_published_vitl14_model():
    with torch.device("meta"):
        model = SelaVPR(SelaVPRConfig(), init_weights=False)
    counts = {"adapter": 0, "local": 0, "gem": 0, "total": 0}
    for name, param in model.named_parameters():
        counts["total"] += param.numel()
        if is_trainable(name):
            key = "adapter" if "adapter" in name else "gem" if "aggregation" in name else "local"
            counts[key] += param.numel()
    # selavpr-reference.md section 1.3, measured on the reference's own model
    assert counts == {"adapter": 50_405_376, "local": 2_654_592, "gem": 1,
                      "total": 357_428_609}


def test_loss_decreases_on_a_fixed_batch(route, tmp_path):
    trainer = tiny_trainer(route, tmp_path, lr=1e-3)
    queries, pool = trainer.miner.draw(1, 0, 8)
    rows = trainer.miner.mine(queries, pool, trainer.describe)[:4]
    losses = [sum(trainer.step(rows)) for _ in range(12)]
    assert losses[0] > 0.02, f"the first loss {losses[0]} leaves nothing to learn"
    assert losses[-1] < 0.5 * losses[0], losses


def test_gradient_checkpointing_gives_the_same_step_and_bf16_autocast_runs(route, tmp_path):
    plain = tiny_trainer(route, tmp_path / "a", lr=1e-3)
    ckpt = tiny_trainer(route, tmp_path / "b", lr=1e-3, grad_checkpointing=True)
    queries, pool = plain.miner.draw(1, 0, 8)
    rows = plain.miner.mine(queries, pool, plain.describe)[:4]
    loss_plain, loss_ckpt = plain.step(rows), ckpt.step(rows)
    np.testing.assert_allclose(loss_ckpt, loss_plain, atol=1e-6)
    for (name, a), b in zip(plain.model.named_parameters(), ckpt.model.parameters(),
                            strict=True):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=0, msg=name)
    half = tiny_trainer(route, tmp_path / "c", lr=1e-3, precision="bf16")
    assert all(np.isfinite(half.step(rows)))


def test_fresh_run_outputs_log_and_plot(trained):
    log_lines = (trained / "train_log.jsonl").read_text().splitlines()
    assert len(log_lines) == 3  # epoch 0 (before training), 1, 2
    assert (trained / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    official = torch_load_safe(trained / "best_model.pth")
    keys = list(official["model_state_dict"])
    assert keys and all(k.startswith("module.") for k in keys)
    assert "optimizer_state_dict" not in official
    model, config = load_checkpoint(trained / "best_model.safetensors")
    assert config == TINY and model.trained
    # the .pth in the official layout holds the same weights
    via_pth, _ = load_checkpoint(trained / "best_model.pth", config=TINY)
    for key, value in model.state_dict().items():
        assert torch.equal(value, via_pth.state_dict()[key])


def run_cli(args: list[str], **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "selavpr_ros.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_resume_after_sigkill_equals_uninterrupted(route, tmp_path):
    args = [*MODEL_ARGS, *drive_args(route), *RECIPE_ARGS, "--epochs", "3", "--save-every", "1",
            "--patience", "10"]
    straight = run_cli(["train", str(tmp_path / "straight"), *args])
    killed_dir = tmp_path / "killed"
    killed = run_cli(["train", str(killed_dir), *args])
    last = killed_dir / "last_model.pth"
    step, seen = 0, 0.0
    deadline = time.monotonic() + 300
    while step < 6 and killed.poll() is None and time.monotonic() < deadline:
        if last.exists() and last.stat().st_mtime != seen:
            seen = last.stat().st_mtime
            step = torch_load_safe(last)["selavpr_ros_train"]["state"]["global_step"]
        time.sleep(0.02)
    assert killed.poll() is None, "the run ended before it could be killed; make it longer"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    state = torch_load_safe(last)["selavpr_ros_train"]["state"]
    assert 0 < state["global_step"] < 12, state["global_step"]  # 12 = 3 epochs x 4 steps
    resumed = run_cli(["train", str(killed_dir), "--resume", *drive_args(route), *RECIPE_ARGS,
                       "--epochs", "3", "--save-every", "1", "--patience", "10"])
    for proc in (straight, resumed):
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
    a = torch_load_safe(tmp_path / "straight" / "last_model.pth")
    b = torch_load_safe(killed_dir / "last_model.pth")
    assert a["selavpr_ros_train"]["state"]["global_step"] == 12
    assert b["selavpr_ros_train"]["state"]["global_step"] == 12
    for key, value in a["model_state_dict"].items():
        torch.testing.assert_close(b["model_state_dict"][key], value, atol=ATOL, rtol=0)
    for pid, moments in a["optimizer_state_dict"]["state"].items():
        other = b["optimizer_state_dict"]["state"][pid]
        torch.testing.assert_close(other["exp_avg"], moments["exp_avg"], atol=ATOL, rtol=0)
    losses_a = [r["loss"] for r in a["selavpr_ros_train"]["state"]["history"][1:]]
    losses_b = [r["loss"] for r in b["selavpr_ros_train"]["state"]["history"][1:]]
    np.testing.assert_allclose(losses_b, losses_a, atol=ATOL)


def test_output_loads_in_build_map_and_evaluate_and_other_maps_refuse_it(route, trained,
                                                                          tmp_path, capsys):
    weights = trained / "best_model.safetensors"
    common = ["--no-progress"]
    assert cli_main(["build-map", str(tmp_path / "map"), "--images", str(route[0]), "--poses",
                     str(route[0] / "poses.csv"), "--checkpoint", str(weights),
                     "--min-distance", "0", *common]) == 0
    assert cli_main(["evaluate", str(tmp_path / "map"), "--images", str(route[2]), "--poses",
                     str(route[2] / "poses.csv"), "--checkpoint", str(weights), "--out",
                     str(tmp_path / "eval"), "--no-plots", *common]) == 0
    assert (tmp_path / "eval" / "evaluation.json").is_file()
    # a map built with other weights (the untrained start) refuses the trained checkpoint
    start = SelaVPR(TINY)
    save_safetensors(start, tmp_path / "start.safetensors")
    assert cli_main(["build-map", str(tmp_path / "other"), "--images", str(route[0]), "--poses",
                     str(route[0] / "poses.csv"), "--checkpoint",
                     str(tmp_path / "start.safetensors"), "--min-distance", "0", *common]) == 0
    capsys.readouterr()
    assert cli_main(["evaluate", str(tmp_path / "other"), "--images", str(route[2]), "--poses",
                     str(route[2] / "poses.csv"), "--checkpoint", str(weights), "--out",
                     str(tmp_path / "eval2"), "--no-plots", *common]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fingerprint" in err, err


def one_line_error(argv: list[str], capsys, *words: str) -> str:
    capsys.readouterr()
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("selavpr: error:"), err
    for word in words:
        assert word in err, err
    return err


def test_bad_inputs_are_one_line_errors(route, trained, tmp_path, capsys):
    out = str(tmp_path / "bad")
    one_line_error(["train", out, *MODEL_ARGS, "--images", str(route[0]), "--images",
                    str(route[1])], capsys, "poses")
    # drives that never come within the positive radius of each other
    one_line_error(["train", out, *MODEL_ARGS, *drive_args(route), *RECIPE_ARGS,
                    "--positive-radius", "0.1"], capsys, "too few positives")
    # a checkpoint of another backbone
    one_line_error(["train", out, "--init", str(trained / "best_model.safetensors"),
                    "--backbone", "vitb14", "--depth", "1", "--image-size", "28",
                    *drive_args(route), *RECIPE_ARGS], capsys, "does not match")
    one_line_error(["train", str(trained), "--resume", "--backbone", "vitb14",
                    *drive_args(route), *RECIPE_ARGS], capsys, "vits14")
    # an existing run is not overwritten without --resume
    one_line_error(["train", str(trained), *MODEL_ARGS, *drive_args(route), *RECIPE_ARGS],
                   capsys, "--resume")
    assert not Path(out).exists() or not any(Path(out).iterdir())


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-large write fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000_000, 20_000_000))


def test_a_failed_save_keeps_the_last_good_checkpoint(route, tmp_path):
    """The first save (no optimizer state, ~16 MB) fits; the next (~28 MB) hits the limit."""
    out = tmp_path / "full"
    proc = run_cli(["train", str(out), *MODEL_ARGS, *drive_args(route), *RECIPE_ARGS,
                    "--epochs", "1", "--save-every", "1"], preexec_fn=_limit_file_size)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 2, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("selavpr: error:")]
    assert len(lines) == 1 and "cannot save" in lines[0] and "kept" in lines[0], err[-2000:]
    state = torch_load_safe(out / "last_model.pth")["selavpr_ros_train"]["state"]
    assert state["global_step"] == 0  # the last good checkpoint, intact and loadable
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
