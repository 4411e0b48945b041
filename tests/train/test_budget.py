"""Training to a wall-clock budget: durations, the plan's sizes, the schedule, and a short budget run that ends
with its schedule completed, near its budget, keeping the settings the user gave."""

import json
import math
import time

import pytest
import torch

from unetseg import RunConfig, load_model
from unetseg.cli.main import main
from unetseg.config import parse_duration
from unetseg.checkpoint import load_training_state
from unetseg.train.schedule import cosine_lr, steps_per_epoch
from unetseg.train.plan import BudgetClock, size_for


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("45m", 2700), ("2h", 7200), ("1h30m", 5400),
                                           ("1.5h", 5400), (" 10 m", 600), ("1d", 86400)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["30", "5x", "m", "-5m", "0s", "1h 30", "30 minutes"])
def test_bad_durations_say_what_is_expected(text):
    with pytest.raises(ValueError, match="90s, 30m, 2h|positive"):
        parse_duration(text)


def test_sizes_keep_the_aspect_ratio_in_multiples_of_16():
    assert size_for(1918 / 1280, 1.0) == (480, 320)  # Carvana: the seed's size
    assert size_for(1918 / 1280, 0.25) == (240, 160)
    assert size_for(1.0, 0.25) == (192, 192)
    assert size_for(120 / 90, 120 * 90 / (480 * 320), native=(120, 90)) == (112, 80)  # never above the images
    w, h = size_for(565 / 584, 0.5)  # DRIVE, portrait
    assert w % 16 == 0 and h % 16 == 0 and h > w


def test_cosine_schedule_warms_up_then_decays_to_the_minimum_at_the_last_step():
    lrs = [cosine_lr(s, 100, 10, 1e-3, 1e-5) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[-1] == pytest.approx(1e-5, rel=1e-9) and lrs[-2] > lrs[-1]
    assert lrs[55] == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * 45 / 89)))


def test_budget_clock_corrects_once_then_only_on_drift():
    clock = BudgetClock(budget=100.0, started=time.monotonic(), total=1000, steps_per_epoch=10, val_every=1, first=3)
    for _ in range(3):
        clock.step_time(0.1)
    new = clock.maybe_correct(3, val_estimate=0.0, at_epoch_end=False)
    assert new is not None and 900 <= new <= 960  # 96 s left at 0.1 s per step
    assert clock.maybe_correct(4, val_estimate=0.0, at_epoch_end=False) is None  # once only within an epoch
    assert clock.maybe_correct(4, val_estimate=0.0, at_epoch_end=True) is None  # no drift
    clock.step_time(30 * 0.1 * 2, 30)  # the machine slowed: steps now take far longer on average
    assert clock.maybe_correct(40, val_estimate=0.0, at_epoch_end=True) < new


@pytest.mark.slow
def test_a_short_budget_completes_its_schedule_near_the_budget_and_keeps_given_settings(synthetic_dir, tmp_path):
    run = tmp_path / "run"
    t0 = time.monotonic()
    code = main(["train", "--data", str(synthetic_dir), "--out", str(run), "--budget", "25s", "--base-channels", "4",
                 "--depth", "3", "--no-progress"])
    seconds = time.monotonic() - t0
    assert code == 0
    assert 0.6 * 25 < seconds < 1.3 * 25  # loosely: the exact timing is benchmarks/budget.py's job
    cfg = RunConfig.load(run / "config.json")
    plan = cfg.train.plan
    assert cfg.model.base_channels == 4 and cfg.model.depth == 3  # given: kept
    assert "base_channels" not in plan["chosen"] and {"lr", "image_size", "batch_size"} <= set(plan["chosen"])
    assert max(cfg.data.image_size) <= 64  # never larger than the 64x48 images
    assert cfg.train.schedule == "cosine" and cfg.data.brightness > 0 and cfg.train.bn_recalibrate
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    schedule = load_training_state(run / "last.pt")["schedule"]  # the corrected total: in last.pt, not config.json
    assert schedule["configured"]["max_steps"] == cfg.train.max_steps == plan["planned_steps"]
    assert rows[-1]["step"] == schedule["total"]  # every planned (and corrected) optimiser step ran
    assert rows[-1]["epoch"] == math.ceil(schedule["total"] / steps_per_epoch(plan["train_images"], cfg.train.batch_size))
    assert rows[-1]["lr"] < 0.05 * cfg.train.lr  # the schedule ended: the learning rate decayed to (near) zero
    assert "val_dice" in rows[-1]
    final, _ = load_model(run)
    best, _ = load_model(run, weights="best")
    assert final(torch.zeros(1, 3, 48, 64)).shape == best(torch.zeros(1, 3, 48, 64)).shape == (1, 1, 48, 64)


def test_a_bad_budget_is_a_one_line_error(synthetic_dir, tmp_path, capsys):
    assert main(["train", "--data", str(synthetic_dir), "--out", str(tmp_path / "r"), "--budget", "30 minutes"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "duration" in err[0] and "Traceback" not in err[0]
