"""Never lose a run: kill -9 and resume gives the uninterrupted run's weights bit for bit; SIGTERM saves first;
a non-finite loss stops with the step named and the last good state kept."""

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.model.test_encoders import needs_lite0
from tests.train.test_fit import tiny_config
from unetseg import fit
from unetseg.checkpoint import load_training_state
from unetseg.train import NonFiniteLossError
from unetseg.train.losses import SegmentationLoss

FLAGS = ["--base-channels", "4", "--depth", "3", "--image-size", "64x48", "--epochs", "3", "--batch-size", "4",
         "--val-fraction", "0.25", "--checkpoint-steps", "1", "--lr", "3e-3", "--no-progress"]


def _unetseg(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "unetseg", "-v", *args], stderr=subprocess.PIPE, text=True, env=env)


def _run_until(proc: subprocess.Popen, line_part: str) -> None:
    """Read the child's log until a line contains ``line_part`` (no sleeping: the log is the clock)."""
    for line in proc.stderr:
        if line_part in line:
            return
    raise AssertionError(f"the run ended (code {proc.wait()}) before logging {line_part!r}")


def _metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in rows]


def _assert_same_final_state(a: Path, b: Path) -> None:
    sa, sb = load_training_state(a / "last.pt"), load_training_state(b / "last.pt")
    assert (sa["epoch"], sa["step"]) == (sb["epoch"], sb["step"]) == (3, 0)
    diffs = {k: (sa["model"][k].double() - sb["model"][k].double()).abs().max().item() for k in sa["model"]}
    assert max(diffs.values()) == 0.0, {k: d for k, d in diffs.items() if d}
    assert sa.keys() == sb.keys()
    for name in ("model.safetensors", "best.safetensors"):  # final (averaged, recalibrated) and best weights
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    if "average" in sa:
        assert all(torch.equal(sa["average"][k], sb["average"][k]) for k in sa["average"])
    assert _metrics(a) == _metrics(b)


#: The budget plan's kind of run: colour and lighting augmentation, zoom, weight averaging, BN recalibration,
#: warm-up + cosine schedule.
STRONG = ["--brightness", "0.3", "--contrast", "0.3", "--saturation", "0.5", "--gamma", "0.25", "--channel-shuffle-p",
          "0.5", "--grayscale-p", "0.2", "--noise-std", "0.02", "--scale-limit", "0.1", "--ema-decay", "0.9",
          "--bn-recalibrate", "--schedule", "cosine", "--warmup-steps", "3"]


@pytest.mark.parametrize("extra, kill_at", [
    ([], "epoch 2 step 2"), (STRONG, "epoch 2 step 2"), (["--patch", "32x32"], "epoch 2 step 2"),
    # decisions every 3 steps, as on a GPU (every 16): 5 steps an epoch, so epoch 2 decides after its steps 1 and 4
    (["--sync-every", "3", "--patch", "32x32", *STRONG], "epoch 2 step 1"),
    # an ImageNet encoder whose batch norms train, its own learning rate; the weights come from the package
    pytest.param(["--encoder", "efficientnet-lite0", "--encoder-bn", "train", "--encoder-lr-scale", "0.1",
                  "--decoder-channels", "16", "16", "8", "8", "8", *STRONG], "epoch 2 step 2", marks=needs_lite0)],
    ids=["seed-recipe", "strong-augmentation-ema-bn", "patches", "decisions-every-3-steps", "pretrained-encoder"])
def test_sigkill_mid_epoch_then_resume_equals_the_uninterrupted_run(synthetic_dir, tmp_path, extra, kill_at):
    reference = _unetseg("train", "--data", str(synthetic_dir), "--out", str(tmp_path / "ref"), *FLAGS, *extra)
    reference.communicate()
    assert reference.returncode == 0

    killed = _unetseg("train", "--data", str(synthetic_dir), "--out", str(tmp_path / "run"), *FLAGS, *extra)
    _run_until(killed, f"checkpoint saved at {kill_at}")
    killed.kill()  # SIGKILL: no handler runs
    killed.communicate()
    state = load_training_state(tmp_path / "run" / "last.pt")
    assert state["epoch"] < 3  # it really was stopped before the end

    resumed = _unetseg("train", "--resume", str(tmp_path / "run"))
    _, err = resumed.communicate()
    assert resumed.returncode == 0, err
    assert "resuming" in err
    _assert_same_final_state(tmp_path / "ref", tmp_path / "run")


def test_sigterm_saves_the_state_and_exits_130(synthetic_dir, tmp_path):
    proc = _unetseg("train", "--data", str(synthetic_dir), "--out", str(tmp_path / "run"), *FLAGS,
                    "--checkpoint-steps", "1000")
    _run_until(proc, "epoch 1/3:")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate()
    assert proc.returncode == 130, err
    assert "unetseg train --resume" in err
    state = load_training_state(tmp_path / "run" / "last.pt")
    assert (state["epoch"], state["step"]) > (1, 0)  # saved mid-epoch 2 (or later), not only at the epoch end
    assert not list((tmp_path / "run").glob(".*.tmp"))


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_state(synthetic_dir, tmp_path, monkeypatch):
    calls = {"n": 0}
    real_forward = SegmentationLoss.forward

    def flaky(self, logits, target):
        calls["n"] += 1
        loss = real_forward(self, logits, target)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(SegmentationLoss, "forward", flaky)
    cfg = tiny_config(synthetic_dir, batch_size=4, checkpoint_steps=1)
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at epoch 1, step 3"):
        fit(cfg, tmp_path / "run")
    state = load_training_state(tmp_path / "run" / "last.pt")
    assert (state["epoch"], state["step"]) == (0, 2)
    assert all(torch.isfinite(v.float()).all() for v in state["model"].values())
    assert math.isfinite(state["loss_sum"])


def test_kill_during_a_checkpoint_write_leaves_the_old_or_the_new_file(tmp_path):
    """A child rewrites last.pt with alternating 40 MB states and says so after each; SIGKILL comes right after
    the third, while the fourth is being written."""
    script = (
        "import sys, torch\n"
        "from unetseg.checkpoint import save_training_state\n"
        "states = [{'w': torch.full((10_000_000,), float(i)), 'epoch': i} for i in range(2)]\n"
        "for i in range(1000):\n"
        "    save_training_state(states[i % 2], sys.argv[1])\n"
        "    print(i, flush=True)\n"
    )
    target = tmp_path / "last.pt"
    proc = subprocess.Popen([sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.strip() == "2":
            proc.kill()
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    state = load_training_state(target)  # never torn: it loads, and it is one whole state
    assert state["epoch"] in (0, 1) and bool((state["w"] == float(state["epoch"])).all())
    assert state["w"].numel() == 10_000_000


def test_a_finished_run_resumed_for_more_epochs_follows_its_new_step_count(synthetic_dir, tmp_path):
    """The saved schedule says how far a run is; the config says where it ends: a cosine run of 2 epochs resumed with
    --epochs 4 decays over 4 epochs (its third epoch does not train at the end's learning rate)."""
    flags = ["--base-channels", "4", "--depth", "3", "--image-size", "64x48", "--batch-size", "8", "--val-fraction",
             "0.25", "--schedule", "cosine", "--lr", "1e-3", "--no-progress"]
    first = _unetseg("train", "--data", str(synthetic_dir), "--out", str(tmp_path / "run"), "--epochs", "2", *flags)
    first.communicate()
    assert first.returncode == 0
    more = _unetseg("train", "--resume", str(tmp_path / "run"), "--epochs", "4")
    _, err = more.communicate()
    assert more.returncode == 0, err
    lrs = [m["lr"] for m in _metrics(tmp_path / "run")]  # the learning rate of the next step, after each epoch
    # 3 steps an epoch: the first run ended at 0 (its last step), the resumed one decays over steps 6-11 to 0
    assert len(lrs) == 4 and lrs[1] == 0.0 and lrs[3] == 0.0, lrs
    assert abs(lrs[2] - 1e-3 * 0.5 * (1 + math.cos(math.pi * 9 / 11))) < 1e-9, lrs
