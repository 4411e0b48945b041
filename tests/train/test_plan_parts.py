"""The budget plan's steps, each called alone: candidates, measure, choose, record; the plan returns a new config."""

import math
import time

import torch

from unetseg.config import RunConfig
from unetseg.train import plan
from unetseg.train.schedule import steps_per_epoch


def _cfg(**train) -> RunConfig:
    cfg = RunConfig()
    cfg.train.budget, cfg.train.batch_size = "10m", 8
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def test_candidates_are_the_ladder_cheapest_first_and_patches_join_for_thin_data():
    cfg = _cfg()
    ladder = plan.candidates(cfg, set(), (1024, 1024), thin=False, uniform=True)
    assert all(p is None for _, _, p in ladder) and len(ladder) == len(set(ladder))
    costs = [plan._flops(b, p or s) for b, s, p in ladder]
    assert costs == sorted(costs)
    thin = plan.candidates(cfg, set(), (1024, 1024), thin=True, uniform=True)
    assert {p for _, _, p in thin if p} == {(256, 256)} and len(thin) > len(ladder)
    assert not [p for _, _, p in plan.candidates(cfg, set(), (1024, 1024), thin=True, uniform=False) if p]
    cfg.model.base_channels = 24
    assert {b for b, _, _ in plan.candidates(cfg, {"model.base_channels"}, (1024, 1024), False, True)} == {24}


def test_measure_times_within_its_limit_and_estimates_the_rest(monkeypatch):
    calls = []
    monkeypatch.setattr(plan, "measure_step", lambda trial, *a, **k: calls.append(trial.model.base_channels) or 1e-3)
    ladder = [(8, (64, 48), None), (16, (64, 48), None), (32, (128, 96), None)]
    choices, spent = plan.measure(ladder, _cfg(), torch.device("cpu"), None, torch.contiguous_format,
                                  {"train.memory_format"}, 1, probe_limit=10.0)
    assert [c.measured for c in choices] == [True] * 3 and calls == [8, 16, 32] and spent >= 0
    choices, _ = plan.measure(ladder, _cfg(), torch.device("cpu"), None, torch.contiguous_format,
                              {"train.memory_format"}, 1, probe_limit=0.0)
    assert [c.measured for c in choices][1:] == [False, False]  # the first is always timed
    assert choices[2].seconds_per_image > choices[1].seconds_per_image  # by pixels, from a measured one


def test_choose_takes_the_costliest_that_sees_enough_images_else_the_cheapest():
    choices = [plan.Choice(8, (160, 112), 0.001, True), plan.Choice(16, (224, 160), 0.004, True),
               plan.Choice(32, (480, 320), 0.1, True)]
    best, why = plan.choose(choices, 300.0, 100, 10, 8, 5000, thin=False, score={})
    assert best.base == 16 and "costliest" in why  # 32 at 0.1 s/image sees under 3,000 images in 300 s
    best, why = plan.choose(choices, 1.0, 100, 10, 8, 5000, thin=False, score={})
    assert best.base == 8 and "the cheapest" in why


def test_record_sets_the_recipe_and_a_step_total_that_fills_the_budget():
    cfg = _cfg()
    chosen: list[str] = []
    best = plan.Choice(16, (224, 160), 0.004, True)
    aug = plan.record(cfg, best, {"train.lr"}, chosen, 300.0, 100, 10, 1, 2, False)
    assert cfg.model.base_channels == 16 and cfg.data.image_size == (224, 160) and cfg.train.lr == 1e-4  # lr given
    assert "lr" not in chosen and {"schedule", "loss", "bn_recalibrate", "image_size"} <= set(chosen)
    assert aug and all(getattr(cfg.data, k) == v for k, v in aug.items())
    assert cfg.train.epochs == math.ceil(cfg.train.max_steps / steps_per_epoch(100, 8))
    assert cfg.train.max_steps * 8 * 0.004 <= 300.0


def test_the_plan_returns_a_new_config_and_writes_nothing_into_the_one_given(monkeypatch):
    monkeypatch.setattr(plan, "measure_step", lambda trial, *a, **k: 1e-4)
    given = _cfg()
    before = given.to_dict()
    planned = plan.make_plan(given, 200, 20, (128, 96), torch.device("cpu"), None, torch.contiguous_format, set(),
                             time.monotonic())
    assert given.to_dict() == before and planned.train.plan["planned_steps"] == planned.train.max_steps
