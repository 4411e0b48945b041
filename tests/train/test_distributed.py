"""torchrun with two processes (gloo on the CPU): each takes half of every global batch, DDP averages the gradients,
rank 0 writes the run."""

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.model.test_encoders import needs_lite0
from unetseg import load_model


@pytest.mark.parametrize("extra", [[], pytest.param(["--encoder", "efficientnet-lite0", "--decoder-channels", "16", "8",
                                                     "8", "8", "8"], marks=needs_lite0)], ids=["plain", "imagenet-lite0"])
def test_torchrun_two_processes_trains_one_run(synthetic_dir, tmp_path, extra):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "unetseg",
           "train", "--data", str(synthetic_dir), "--out", str(run), "--base-channels", "4", "--depth", "3",
           "--image-size", "64x48", "--epochs", "2", "--batch-size", "8", "--val-fraction", "0.25", "--no-progress",
           *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 processes (torch.distributed)" in proc.stderr
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]  # one writer: rank 0
    assert all(0 <= r["val_dice"] <= 1 for r in rows)
    model, cfg = load_model(run)
    assert cfg.model.base_channels == 4 and cfg.model.encoder == (extra[1] if extra else "")  # not given: unset, the plain U-Net


def test_one_step_of_two_processes_equals_one_process_on_the_same_global_batch(synthetic_dir, tmp_path):
    """Two processes of 4 images each vs one process accumulating two micro-batches of 4 (the same images per batch
    norm): the same loss, the same gradient, and Adam's first step (lr x the gradient's sign) moves the weights the
    same way."""
    common = ["--data", str(synthetic_dir), "--base-channels", "4", "--depth", "3", "--image-size", "64x48",
              "--batch-size", "8", "--max-steps", "1", "--val-fraction", "0", "--rotate-limit", "0", "--hflip-p", "0",
              "--vflip-p", "0", "--lr", "1e-3", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
                          "unetseg", "train", "--out", str(tmp_path / "two"), *common], capture_output=True, text=True,
                         env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "unetseg", "train", "--out", str(tmp_path / "one"), "--micro-batch", "4",
                          *common], capture_output=True, text=True, env=env, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    loss = [json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[0])["train_loss"]
            for name in ("two", "one")]
    assert abs(loss[0] - loss[1]) < 1e-5, loss
    a = torch.load(tmp_path / "two" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "one" / "last.pt", weights_only=True)["model"]
    weights = [k for k in a if a[k].is_floating_point() and "running" not in k]
    diff = torch.cat([(a[k] - b[k]).abs().flatten() for k in weights])
    assert diff.max() <= 2.1e-3  # at most opposite signs of a gradient that is ~0 either way
    assert (diff < 1e-6).float().mean() > 0.999, (diff > 1e-6).sum()
    # Adam's step is blind to the gradient's scale; its first moment (0.1 x the gradient after one step) is not:
    # a wrong average over the processes (a sum, or shards weighed unevenly) shows here
    ga = torch.cat([s["exp_avg"].flatten() for s in torch.load(tmp_path / "two" / "last.pt",
                                                                 weights_only=True)["optimizer"]["state"].values()])
    gb = torch.cat([s["exp_avg"].flatten() for s in torch.load(tmp_path / "one" / "last.pt",
                                                                 weights_only=True)["optimizer"]["state"].values()])
    assert ga.abs().max() > 0 and (ga - gb).abs().max() <= 1e-4 * ga.abs().max(), (ga - gb).abs().max()


def test_every_process_looks_for_the_plans_encoder_and_all_agree(monkeypatch, caplog):
    """34.9: a node without the weights makes no process take the encoder (rank 0 alone used to decide, and the
    node that lacked them failed while the others waited in a collective)."""
    import unetseg.train.plan as plan
    from unetseg.train.distributed import World

    class TwoNodes(World):  # this process has the weights; the sum over processes says whether the others do
        def __init__(self, others_missing: int) -> None:
            super().__init__(rank=0, size=2)
            self.others_missing = others_missing

        def sum(self, t: torch.Tensor) -> torch.Tensor:
            return t + self.others_missing

    monkeypatch.setattr(plan, "encoder_available", lambda name: True)
    assert plan.encoder_everywhere(TwoNodes(0), torch.device("cpu"))
    with caplog.at_level("WARNING"):
        assert not plan.encoder_everywhere(TwoNodes(1), torch.device("cpu"))
    assert "missing on 1 of 2 processes' machines: the plan keeps the plain U-Net" in caplog.text
