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


def _scene_plan(monkeypatch, keep=frozenset(), num_labels=11, ceiling=0.97, **data):
    """make_plan on 448x336 frames of ``num_labels`` labels whose masks keep a Dice of ``ceiling`` at every size, each
    training sample timed at 1 us a pixel (the size timed is recorded)."""
    timed = []
    monkeypatch.setattr(plan, "measure_step", lambda trial, *a, **k: timed.append(tuple(trial.data.image_size))
                        or 1e-6 * trial.data.image_size[0] * trial.data.image_size[1])
    monkeypatch.setattr(plan, "encoder_available", lambda name: False)
    cfg = _cfg(budget="30m")
    for k, v in data.items():
        setattr(cfg.data, k, v)
    planned = plan.make_plan(cfg, 300, 100, (448, 336), torch.device("cpu"), None, torch.contiguous_format, set(keep),
                             time.monotonic(), ceiling=lambda sizes: __import__("numpy").full((len(sizes), num_labels),
                                                                                              ceiling),
                             num_labels=num_labels)
    return planned, timed


def test_scenes_train_on_scale_jittered_crops_of_about_half_a_frame_timed_at_the_crop(monkeypatch):
    planned, timed = _scene_plan(monkeypatch)
    d = planned.data
    assert d.image_size == (448, 336) and d.crop == (320, 240) and d.patch is None  # the costliest seeing enough
    assert plan.crop_for((448, 336), 32) == (320, 224)  # an encoder (stride 32): no padding
    assert d.scale_limit == plan.SCENE_SCALE_LIMIT == 1.0  # zoom 0.5-2.0
    assert "crop" in planned.train.plan["chosen"] and planned.train.plan["augmentation"]["scale_limit"] == 1.0
    assert "random crops of about half a frame, 320x240 of 448x336, zoomed 0.5-2" in planned.train.plan["rule"]
    assert (320, 240) in timed and (448, 336) not in timed  # each candidate timed at its crop, never the frame
    assert [c.get("crop") for c in planned.train.plan["candidates"]][-1] == [320, 240]
    # the steps fill the budget at the crop's speed: twice the frames' count, about
    assert planned.train.max_steps * 8 * 1e-6 * 320 * 240 < 0.96 * 1800
    # whole frames at prediction, at the scales and with the flips of the scene recipe, recorded for predict
    assert d.predict_scales == plan.SCENE_PREDICT_SCALES == (1.0, 1.5, 2.0) and d.predict_tta is True
    assert {"predict_scales", "predict_tta"} <= set(planned.train.plan["chosen"])
    assert "prediction at 1 1.5 2 x 448x336 with flips" in planned.train.plan["rule"]


def test_the_users_inference_settings_are_kept_and_binary_runs_predict_in_one_pass(monkeypatch):
    planned, _ = _scene_plan(monkeypatch, keep={"data.predict_scales", "data.predict_tta"}, predict_scales=(1.0,),
                             predict_tta=False)
    assert planned.data.predict_scales == (1.0,) and planned.data.predict_tta is False
    assert "predict_scales" not in planned.train.plan["chosen"]
    planned, _ = _scene_plan(monkeypatch, num_labels=2, ceiling=0.99)
    assert planned.data.predict_scales == (1.0,) and planned.data.predict_tta is False


def test_binary_data_and_a_users_own_zoom_or_crop_are_kept(monkeypatch):
    planned, _ = _scene_plan(monkeypatch, num_labels=2, ceiling=0.99)
    assert planned.data.crop is None and planned.data.scale_limit == 0.1  # binary masks: whole images
    planned, _ = _scene_plan(monkeypatch, keep={"data.scale_limit"}, scale_limit=0.25)
    assert planned.data.crop == (320, 240) and planned.data.scale_limit == 0.25
    planned, timed = _scene_plan(monkeypatch, keep={"data.crop"}, crop=(256, 192))
    assert planned.data.crop == (256, 192) and set(timed) == {(256, 192)}
    assert min(planned.data.image_size) >= 192  # no size smaller than the crop
    assert planned.data.scale_limit == 1.0  # the scene zoom, as it was not given
    planned, timed = _scene_plan(monkeypatch, keep={"data.crop"}, crop=None)  # --crop none: whole frames
    assert planned.data.crop is None and planned.data.image_size in timed


def test_the_plan_log_names_the_encoders_real_weights(monkeypatch, caplog):
    import logging

    monkeypatch.setattr(plan, "measure_step", lambda trial, *a, **k: 1e-4)
    for weights, text in (("imagenet", "(ImageNet)"), ("none", "(random weights)"),
                          ("/data/r18.pth", "(weights from /data/r18.pth)")):
        cfg = _cfg()
        cfg.model.encoder, cfg.model.encoder_weights = "resnet18", weights
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="unetseg.train.plan"):
            plan.make_plan(cfg, 200, 20, (128, 96), torch.device("cpu"), None, torch.contiguous_format,
                           {"model.encoder", "model.encoder_weights"}, time.monotonic())
        first = caplog.records[0].getMessage()
        assert f"U-Net on resnet18 {text}" in first, first


def test_an_explicit_plain_unet_is_kept_by_any_route(monkeypatch):
    import numpy as np

    from unetseg.config import settings_for_new_run
    from unetseg.train.loop import changed_settings

    monkeypatch.setattr(plan, "measure_step", lambda trial, *a, **k: 1e-4)
    monkeypatch.setattr(plan, "encoder_available", lambda name: True)

    def planned(cfg, keep):
        return plan.make_plan(cfg, 300, 100, (448, 336), torch.device("cpu"), None, torch.contiguous_format, keep,
                              time.monotonic(), ceiling=lambda sizes: np.full((len(sizes), 11), 0.97), num_labels=11)

    assert planned(_cfg(), set()).model.encoder == "efficientnet-lite0"  # nobody named one: the plan's choice
    api = _cfg()
    api.model.encoder = "unet"  # fit(cfg) with the plain U-Net named: keep comes from changed_settings
    assert "model.encoder" in changed_settings(api)
    assert planned(api, changed_settings(api)).model.encoder == "unet"
    assert planned(api, set()).model.encoder == "unet"  # even with nothing said kept
    stored = api.to_dict()  # a config.json naming it, reused for a new budget run
    assert "model.encoder" in settings_for_new_run(stored, replan=True)[1]
    chose = planned(_cfg(), set()).to_dict()  # a config.json whose encoder the plan chose: chosen afresh
    assert "model.encoder" not in settings_for_new_run(chose, replan=True)[1]


def test_encoder_runs_plan_sizes_in_whole_strides_of_32(monkeypatch):
    """An encoder pads every side to 32: the plan's sizes are multiples of 32 then (224x176 ran as 224x192, 9% of
    the compute on padding), the plain U-Net's multiples of its 16."""
    monkeypatch.setattr(plan, "measure_step", lambda trial, *a, **k: 1e-6 * trial.data.image_size[0]
                        * trial.data.image_size[1])
    monkeypatch.setattr(plan, "encoder_available", lambda name: True)
    cfg = _cfg(budget="30m")
    planned = plan.make_plan(cfg, 300, 100, (480, 360), torch.device("cpu"), None, torch.contiguous_format, set(),
                             time.monotonic(), ceiling=lambda sizes: __import__("numpy").full((len(sizes), 11), 0.97),
                             num_labels=11)
    assert planned.model.encoder == plan.PLAN_ENCODER
    sizes = [tuple(c["image_size"]) for c in planned.train.plan["candidates"]]
    assert sizes and all(w % 32 == 0 and h % 32 == 0 for w, h in sizes), sizes
    assert (448, 352) in sizes and all(w % 32 == 0 and h % 32 == 0 for w, h in [planned.data.crop])
    assert plan.size_for(4 / 3, 0.25, multiple=32) == (224, 160) and plan.size_for(4 / 3, 0.25) == (224, 176)


def test_validations_take_at_most_their_share_of_the_budget_and_the_steps_get_the_rest():
    from unetseg.train.validate import validation_seconds

    # CamVid on a slow machine: 320x256 crops of 448x352 at 0.38 s each, 101 validation frames, 1,700 s to spend
    slow = plan.Choice(64, (448, 352), 0.38, True, crop=(320, 256))
    per = validation_seconds(367, 101, 0.38, (448, 352), None, 8, plan.BN_IMAGES, (320, 256))
    assert per > 0.1 * 1700 / 2  # one validation costs more than half the share: the final one only
    assert plan.validations(slow, 1700, 367, 101, 8) == 0
    assert plan._train_seconds(slow, 1700, 367, 101, 8) == 1700 - plan.reserve_seconds(0, per) \
        - plan.decode_seconds(468)
    fast = plan.Choice(64, (448, 352), 0.1, True, crop=(320, 256))  # four times faster: several, within the share
    k = plan.validations(fast, 1700, 367, 101, 8)
    per_fast = validation_seconds(367, 101, 0.1, (448, 352), None, 8, plan.BN_IMAGES, (320, 256))
    assert 1 <= k < plan.VALIDATIONS and (k + 1) * per_fast <= 0.1 * 1700 < (k + 2) * per_fast
    cheap = plan.Choice(16, (224, 160), 0.004, True)  # cheap validations: the usual count
    assert plan.validations(cheap, 1700, 367, 101, 8) == plan.VALIDATIONS
    # recorded: the run validates about that often (every epoch at most)
    cfg = _cfg(budget="30m")
    plan.record(cfg, slow, set(), [], 1700, 367, 101, 1, 11, False, scene=True)
    assert cfg.train.val_every == cfg.train.epochs  # the last epoch's validation only


def test_the_rule_counts_a_crop_by_its_share_of_a_frame():
    # 1,000 s to train: 5,000 crops of half a frame are 2,500 frames' worth, short of 3,000; 5,000 whole frames are not
    crops = plan.Choice(64, (448, 352), 0.2, True, crop=(320, 246))
    frames = plan.Choice(64, (224, 176), 0.2, True)
    assert abs(crops.frame_share - 0.5) < 0.01 and frames.frame_share == 1.0
    cheapest = plan.Choice(64, (160, 128), 0.01, True)
    seconds = {id(c): 1000.0 for c in (crops, frames, cheapest)}
    import unittest.mock as mock

    with mock.patch.object(plan, "_train_seconds", lambda c, *a: seconds[id(c)]):
        best, _ = plan.choose([cheapest, frames, crops], 1000, 367, 101, 8, 3000, False, {})
    assert best is frames  # the crops' larger frames are not chosen on their count of crops
