"""Combinations users meet that a careful reading found faulty (issue 25): each test failed on the code before it."""

import dataclasses
import json
import logging
import math
import os
import subprocess
import sys

import pytest
import torch

from unetseg import RunConfig, _device
from unetseg.checkpoint import load_training_state
from unetseg.train import _state, distributed


def _fake_cuda(monkeypatch, count: int, current: int = 0) -> list:
    """CUDA with ``count`` GPUs, as far as the RNG and device calls go; returns the (device, state) of each RNG set."""
    set_calls: list = []

    def set_rng_state(state, device="cuda"):
        index = torch.device(device).index if not isinstance(device, int) else device
        index = current if index is None else index
        if index >= count:
            raise RuntimeError(f"CUDA error: invalid device ordinal {index}")
        set_calls.append((index, state))

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": torch.full((8,), current, dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "set_rng_state", set_rng_state)
    monkeypatch.setattr(torch.cuda.random, "set_rng_state", set_rng_state)  # what set_rng_state_all calls
    return set_calls


def test_a_state_saved_where_8_gpus_were_visible_resumes_where_1_is(monkeypatch):
    saved = {**_state.rng_state(), "cuda": [torch.full((8,), i, dtype=torch.uint8) for i in range(8)]}
    calls = _fake_cuda(monkeypatch, count=1)
    _state.restore_rng(saved)  # raised "invalid device ordinal 1" before
    assert len(calls) == 1 and calls[0][0] == 0 and torch.equal(calls[0][1], saved["cuda"][0])


def test_the_saved_cuda_state_is_this_process_gpus_only(monkeypatch):
    _fake_cuda(monkeypatch, count=4, current=2)
    state = _state.rng_state()
    assert torch.is_tensor(state["cuda"]) and state["cuda"].tolist() == [2] * 8
    calls = _fake_cuda(monkeypatch, count=1, current=0)  # resumed on a machine with one GPU
    _state.restore_rng(state)
    assert [c[0] for c in calls] == [0]


def test_a_cpu_state_resumes_on_a_gpu_and_back(monkeypatch):
    state = _state.rng_state()  # no CUDA here
    assert "cuda" not in state
    calls = _fake_cuda(monkeypatch, count=2)
    _state.restore_rng(state)
    assert calls == []


@pytest.mark.parametrize("device, local_size, expected", [
    ("auto", 2, "cuda:1"), ("cuda", 2, "cuda:1"), ("cpu", 2, "cpu"), ("cuda:1", 1, "cuda:1"), ("cuda:0", 1, "cuda:0")])
def test_torchrun_processes_take_the_device_named(monkeypatch, device, local_size, expected):
    _fake_cuda(monkeypatch, count=2)
    assert distributed.process_device(device, local_rank=1 if local_size == 2 else 0,
                                      local_size=local_size) == torch.device(expected)


@pytest.mark.parametrize("device, count, words", [
    ("cuda:1", 2, "would share one GPU"),  # trained on the CPU, silently, before
    ("cuda", 0, "0 CUDA device(s) are visible"),  # the same
    ("cuda", 1, "needs cuda:1"),
    ("mps", 2, "takes a GPU (cuda) or the CPU"),
    ("gpu", 2, "not a device name")])
def test_a_device_torchrun_cannot_give_is_refused_in_one_line(monkeypatch, device, count, words):
    if count:
        _fake_cuda(monkeypatch, count=count)
    else:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="--device") as err:
        distributed.process_device(device, local_rank=1, local_size=2)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_init_world_refuses_a_shared_gpu_before_joining(monkeypatch):
    _fake_cuda(monkeypatch, count=2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="would share one GPU"):
        distributed.init_world("cuda:1")


@pytest.mark.parametrize("files, expected", [
    ({"memory.max": "2147483648\n", "memory.current": "1073741824\n"}, 1 << 30),  # v2: 2 GiB limit, 1 in use
    ({"memory.max": "max\n", "memory.current": "4294967296\n"}, None),  # v2 without a limit
    ({"memory/memory.limit_in_bytes": "1610612736\n", "memory/memory.usage_in_bytes": "536870912\n"}, 1 << 30),
    ({"memory/memory.limit_in_bytes": "9223372036854771712\n"}, None),  # v1 without a limit
    ({}, None)])
def test_the_container_memory_limit_bounds_free_memory(monkeypatch, tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(_device, "CGROUP_ROOT", tmp_path)
    assert _device.cgroup_free() == expected
    free = _device.free_memory(torch.device("cpu"))  # the host's MemAvailable (more than 1 GiB), or the container's
    assert free == expected if expected is not None else free > 1 << 30


def _tiny_run(synthetic_dir, run, *flags: str) -> list[dict]:
    """Train (or resume) the tiny run with the CLI; returns its metrics rows."""
    from unetseg.cli.main import main

    assert main(["train", *flags, "--no-progress"]) == 0
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


TINY = ["--base-channels", "4", "--depth", "3", "--image-size", "64x48", "--batch-size", "8", "--val-fraction", "0.25",
        "--schedule", "cosine", "--warmup-steps", "1", "--lr", "3e-3"]


@pytest.mark.parametrize("more, total", [(["--epochs", "4"], 12), (["--max-steps", "9"], 9)])
def test_a_run_with_a_step_total_can_be_lengthened_at_resume(synthetic_dir, tmp_path, more, total):
    """A budget run's config.json holds its planned total as max_steps (here 5 of 2 epochs of 3 steps): --epochs or
    --max-steps at resume trains to that, the schedule with it (it trained the same 5 steps, silently, before)."""
    run = tmp_path / "run"
    rows = _tiny_run(synthetic_dir, run, "--data", str(synthetic_dir), "--out", str(run), "--epochs", "2",
                     "--max-steps", "5", *TINY)
    assert rows[-1]["step"] == 5
    rows = _tiny_run(synthetic_dir, run, "--resume", str(run), *more)
    assert rows[-1]["step"] == total and rows[-1]["epoch"] == math.ceil(total / 3)
    assert rows[-1]["lr"] < 0.01 * 3e-3  # the cosine schedule reached its end at the new total
    assert load_training_state(run / "last.pt")["schedule"]["total"] == total


def test_a_weight_decay_given_at_resume_applies(synthetic_dir, tmp_path, caplog):
    run = tmp_path / "run"
    _tiny_run(synthetic_dir, run, "--data", str(synthetic_dir), "--out", str(run), "--epochs", "1", *TINY)
    assert {g["weight_decay"] for g in load_training_state(run / "last.pt")["optimizer"]["param_groups"]} == {0.0}
    with caplog.at_level(logging.INFO):
        _tiny_run(synthetic_dir, run, "--resume", str(run), "--epochs", "2", "--weight-decay", "0.01")
    groups = load_training_state(run / "last.pt")["optimizer"]["param_groups"]
    assert {g["weight_decay"] for g in groups} == {0.01} == {RunConfig.load(run / "config.json").train.weight_decay}
    assert "resume: weight decay 0.01 (was 0)" in caplog.text


def test_the_settings_are_written_once_and_then_only_read(synthetic_dir, tmp_path, monkeypatch):
    """config.json is written once per session, before step 1, and the run reads a frozen copy: a budget run's
    correction of its step total goes to last.pt (the budget test), a resume writes it once more."""
    saved = []
    original = RunConfig.save
    monkeypatch.setattr(RunConfig, "save", lambda self, path: (saved.append(path), original(self, path)))
    run = tmp_path / "run"
    _tiny_run(synthetic_dir, run, "--data", str(synthetic_dir), "--out", str(run), "--epochs", "1", *TINY)
    _tiny_run(synthetic_dir, run, "--resume", str(run), "--epochs", "2")
    assert saved == [run / "config.json"] * 2
    frozen = RunConfig.load(run / "config.json").frozen()
    with pytest.raises(dataclasses.FrozenInstanceError, match="decided before its first step"):
        frozen.train.max_steps = 10


@pytest.mark.parametrize("n, batch, processes, sync_bn, words", [
    (1, 8, 2, False, "1 training image(s) for 2 processes"),  # a rank's share was empty: tensor_split raised
    (9, 16, 2, True, "give --batch-size 8 or fewer"),  # SyncBN: 2 and 1 forward passes, a hang
    (9, 16, 2, False, "give --batch-size 9 or fewer"),
    (16, 3, 4, False, "at least one image for each of the 4 processes"),
    (16, 6, 4, True, "does not split evenly over 4 processes")])
def test_the_smallest_job_that_trains_is_one_rule_of_one_line(n, batch, processes, sync_bn, words):
    with pytest.raises(ValueError) as err:
        distributed.check_batches(n, batch, processes, sync_bn)
    assert words in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("n, processes", [(8, 4), (9, 2), (40, 3), (100, 8), (5, 1), (16, 16), (7, 2)])
def test_the_plan_chooses_a_batch_the_rule_accepts(n, processes):
    """The plan capped its batch at n_train / 4 (2 for 8 images), below the 4 processes the loop requires."""
    batch = distributed.batch_for(max(2, min(8, n // 4 or 2)), n, processes)
    distributed.check_batches(n, batch, processes, sync_bn=True)
    assert batch >= processes and (processes == 1 or batch % processes == 0)


def test_torchrun_with_fewer_training_images_than_processes_stops_before_step_1(tmp_path):
    from unetseg.data.synthetic import make_synthetic_dataset

    data = make_synthetic_dataset(tmp_path / "data", count=2, size=(64, 48), seed=1)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "unetseg",
           "train", "--data", str(data), "--out", str(tmp_path / "run"), "--base-channels", "4", "--depth", "3",
           "--epochs", "1", "--batch-size", "2", "--val-fraction", "0.5", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors and "1 training image(s) for 2 processes" in errors[0], proc.stderr[-2000:]



def test_a_patch_run_predicts_at_the_scale_it_trained_on_both_axes(tmp_path):
    """DRIVE's 565x584 (here a quarter: 141x146) with --image-size 64x64: trained at 64x64, predicted at 64x66 before
    (one scale, from the width)."""
    from unetseg import Predictor, fit
    from unetseg.config import DataConfig, TrainConfig, UNetConfig
    from unetseg.data.synthetic import make_synthetic_dataset

    data = make_synthetic_dataset(tmp_path / "data", count=6, size=(141, 146), seed=2)
    cfg = RunConfig(UNetConfig(base_channels=4, depth=3),
                    DataConfig(data=str(data), image_size=(64, 64), patch=(32, 32), val_fraction=0.0),
                    TrainConfig(epochs=1, batch_size=2, progress=False))
    run = fit(cfg, tmp_path / "run")
    saved = RunConfig.load(run / "config.json")
    assert saved.data.patch_scale == (64 / 141, 64 / 146)
    predictor = Predictor.from_run(run, device="cpu")
    image, size = predictor._load(next((data / "images").iterdir()))
    assert image.shape[:2] == (64, 64) and size == (141, 146)
    old = json.loads((run / "config.json").read_text())
    old["data"]["patch_scale"] = 0.5  # a run before wrote one number: both axes
    assert RunConfig.from_dict(old).data.patch_scale == (0.5, 0.5)


def test_resume_changes_the_length_only_where_a_value_changed():
    """--resume auto runs the first command line again: the same --max-steps (epochs left at 20) changes nothing."""
    from unetseg.train.loop import _resumed_length

    stored = RunConfig()
    stored.train.max_steps = 5000
    same = RunConfig.from_dict(stored.to_dict())
    _resumed_length(same, stored, 100)
    assert (same.train.epochs, same.train.max_steps) == (20, 5000)
    longer = RunConfig.from_dict(stored.to_dict())
    longer.train.epochs = 80
    _resumed_length(longer, stored, 100)
    assert (longer.train.epochs, longer.train.max_steps) == (80, 0)
    more = RunConfig.from_dict(stored.to_dict())
    more.train.max_steps = 9000
    _resumed_length(more, stored, 100)
    assert (more.train.epochs, more.train.max_steps) == (90, 9000)


def test_a_patch_run_validates_large_images_by_windows_of_the_patch(tmp_path, monkeypatch, caplog):
    """Validation and the batch-norm pass of a patch run whose whole images hold more pixels than a batch of patches
    see windows of the patch, never a whole image (a 4000x4000 image ran out of GPU memory)."""
    from unetseg import fit
    from unetseg.config import DataConfig, TrainConfig, UNetConfig
    from unetseg.data.synthetic import make_synthetic_dataset
    from unetseg.model import UNet

    seen: list[tuple[int, ...]] = []
    forward = UNet.forward

    def recording(self, x):
        if not torch.is_grad_enabled():  # validation and the BN pass; training steps need gradients
            seen.append(tuple(x.shape[-2:]))
        return forward(self, x)

    monkeypatch.setattr(UNet, "forward", recording)
    data = make_synthetic_dataset(tmp_path / "data", count=8, size=(128, 96), seed=3)
    cfg = RunConfig(UNetConfig(base_channels=4, depth=3),
                    DataConfig(data=str(data), patch=(32, 32), val_fraction=0.25),
                    TrainConfig(epochs=1, batch_size=2, bn_recalibrate=True, progress=False))
    with caplog.at_level(logging.WARNING):
        run = fit(cfg, tmp_path / "run")
    assert seen and set(seen) == {(32, 32)}, set(seen)  # (96, 128) before
    assert "--image-size" not in caplog.text  # not given: no warning about it
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0.0 <= row["val_dice"] <= 1.0


def test_checkpoint_steps_save_every_n_steps_whatever_the_decision_interval(synthetic_dir, tmp_path, caplog):
    """--checkpoint-steps 5 with decisions every 16 steps (a GPU's default) saved at step 16 only, before."""
    run = tmp_path / "run"
    with caplog.at_level(logging.DEBUG, logger="unetseg.train.loop"):
        _tiny_run(synthetic_dir, run, "--data", str(synthetic_dir), "--out", str(run), "--epochs", "1",
                  "--batch-size", "1", "--sync-every", "16", "--checkpoint-steps", "5", "--base-channels", "4",
                  "--depth", "3", "--image-size", "64x48", "--val-fraction", "0.25")
    saves = [r.getMessage() for r in caplog.records if r.getMessage().startswith("checkpoint saved")]
    assert saves == [f"checkpoint saved at epoch 1 step {n}" for n in (5, 10, 15)] + [
        "checkpoint saved at epoch 2 step 0"]


def test_multi_class_mean_dice_scores_every_class_unless_a_background_is_declared(tmp_path):
    """On road scenes class 0 is sky: mean Dice averaged classes 1..K-1 (as if 0 were background) while the loss, the
    ceiling and mIoU count every class. Now every class, unless --background K leaves K out; binary: the foreground."""
    from unetseg import Predictor, evaluate_pairs, find_pairs, fit
    from unetseg.config import DataConfig, TrainConfig, UNetConfig
    from unetseg.data.check import scan
    from unetseg.data.synthetic import VOID, make_multiclass_dataset
    from unetseg.metrics import check_background, scored_classes
    from unetseg.train.loop import evaluate as validate

    assert scored_classes(2) == scored_classes(2, 0) == [1] and scored_classes(4) == [0, 1, 2, 3]
    assert scored_classes(4, 0) == [1, 2, 3]
    root = make_multiclass_dataset(tmp_path / "mc", count=8, size=(48, 32), seed=2)
    cfg = RunConfig(UNetConfig(base_channels=4, depth=2),
                    DataConfig(data=str(root), image_size=(48, 32), classes=str(root / "classes.csv"),
                               ignore_index=(VOID,), val_fraction=0.25),
                    TrainConfig(epochs=1, batch_size=4, lr=3e-3, progress=False, amp="off"))
    run = fit(cfg, tmp_path / "run")
    predictor = Predictor.from_run(run, device="cpu", amp="off")
    pairs = find_pairs(root)
    every = evaluate_pairs(predictor, pairs)
    without = evaluate_pairs(predictor, pairs, background=0)
    for rows, first in ((every["per_image"], 0), (without["per_image"], 1)):
        for row in rows:
            assert row["dice"] == pytest.approx(float(torch.tensor(
                [row[f"dice_class{k}"] for k in range(first, 4)]).nanmean()), nan_ok=True)
    assert every["scored_classes"] == ["background", "disc", "box", "line"] and without["scored_classes"][0] == "disc"
    saved = RunConfig.load(run / "config.json")
    data, _ = scan(saved, progress=False)
    val = validate(predictor.model, data, saved, torch.device("cpu"))
    assert len(val["dice_per_class"]) == 4  # every class, class 0 included
    assert val["dice"] == pytest.approx(float(torch.tensor([r["dice"] for r in every["per_image"]]).nanmean()))
    with pytest.raises(ValueError, match=r"--background 7: the masks hold 4 classes \(0..3\)"):
        check_background(7, 4)


def test_the_container_limit_leaves_out_file_cache_and_holds_from_above(monkeypatch, tmp_path):
    """Usage counts the page cache the kernel reclaims (MemAvailable leaves it out); a job's limit holds for its
    steps."""
    (tmp_path / "memory.max").write_text("4294967296\n")  # 4 GiB limit, 3.5 GiB used of which 3 GiB inactive cache
    (tmp_path / "memory.current").write_text(str(7 << 29) + "\n")
    (tmp_path / "memory.stat").write_text(f"anon 100\ninactive_file {3 << 30}\nactive_file 5\n")
    monkeypatch.setattr(_device, "CGROUP_ROOT", tmp_path)
    assert _device.cgroup_free() == (4 << 30) - (1 << 29)
    job = tmp_path / "job" / "step"
    job.mkdir(parents=True)
    (tmp_path / "memory.max").write_text("max\n")
    (tmp_path / "job" / "memory.max").write_text(str(1 << 30) + "\n")  # the job's 1 GiB, none on its step
    (tmp_path / "job" / "memory.current").write_text("0\n")
    (job / "memory.max").write_text("max\n")
    (tmp_path / "cgroup").write_text("0::/job/step\n")
    monkeypatch.setattr(_device, "PROC_CGROUP", tmp_path / "cgroup")
    assert _device.cgroup_free() == 1 << 30
