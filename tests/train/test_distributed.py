"""torchrun with two processes (gloo on the CPU): each takes half of every global batch, DDP averages the gradients,
rank 0 writes the run."""

import json
import os
import subprocess
import sys

from unetseg import load_model


def test_torchrun_two_processes_trains_one_run(synthetic_dir, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "unetseg",
           "train", "--data", str(synthetic_dir), "--out", str(run), "--base-channels", "4", "--depth", "3",
           "--image-size", "64x48", "--epochs", "2", "--batch-size", "8", "--val-fraction", "0.25", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 processes (torch.distributed)" in proc.stderr
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]  # one writer: rank 0
    assert all(0 <= r["val_dice"] <= 1 for r in rows)
    model, cfg = load_model(run)
    assert cfg.model.base_channels == 4
