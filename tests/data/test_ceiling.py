"""The resolution ceiling: one-pixel lines lose most of their IoU at half size, a large disc almost none; values
against a hand computation. And the plan leaves out sizes that destroy a small class of multi-class data."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from unetseg.config import RunConfig
from unetseg.data.ceiling import resolution_ceiling


def test_a_one_pixel_line_at_half_size_by_hand():
    # PIL's nearest neighbour at half size keeps the odd columns: a line in column 3 survives, one in column 2 is lost
    kept, lost = np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8)
    kept[:, 3], lost[:, 2] = 1, 1
    # kept: back up bilinearly it is 2 pixels wide (columns 2 and 3): line IoU 8/16, background 48/56
    assert resolution_ceiling([kept], [(4, 4)], 2)[0].tolist() == pytest.approx([48 / 56, 0.5])
    # lost: nothing predicted, line IoU 0; the background takes all 64 pixels of which 56 are background
    assert resolution_ceiling([lost], [(4, 4)], 2)[0].tolist() == pytest.approx([56 / 64, 0.0])
    # pooled over both masks: line (8 + 0) / (16 + 8)
    assert resolution_ceiling([kept, lost], [(4, 4)], 2)[0, 1] == pytest.approx(8 / 24)


def test_a_large_disc_keeps_almost_all_and_void_counts_nowhere():
    yy, xx = np.mgrid[:64, :64]
    disc = ((yy - 32) ** 2 + (xx - 32) ** 2 < 20 ** 2).astype(np.uint8)
    ceiling = resolution_ceiling([disc], [(32, 32), (16, 16), (64, 64)], 2)
    assert ceiling[0, 1] > 0.94 and ceiling[1, 1] > 0.92 and ceiling[2].tolist() == [1.0, 1.0]
    voided = disc.copy()
    voided[:, :8] = 255  # ignored pixels: not scored
    assert resolution_ceiling([voided], [(64, 64)], 2)[0].tolist() == [1.0, 1.0]
    assert np.isnan(resolution_ceiling([disc], [(32, 32)], 3)[0, 2])  # a class in no mask: NaN


def _scene(thin: bool) -> np.ndarray:
    """480x360 class map: background, a large block (class 1), and class 2 as 2-pixel lines or as blobs."""
    m = np.zeros((360, 480), np.uint8)
    m[100:300, 50:250] = 1
    if thin:
        for x in range(300, 460, 20):
            m[20:340, x:x + 2] = 2
    else:
        m[40:320, 300:460] = 2
    return m


def _fake_speed(monkeypatch):
    """A faked speed table: seconds per image follow the convolution FLOPs (no timing in the test)."""
    from unetseg.train import plan

    monkeypatch.setattr(plan, "measure_step", lambda cfg, *a, **k: 2e-7 * cfg.model.base_channels ** 2
                        * cfg.data.image_size[0] * cfg.data.image_size[1] / 256)
    return plan


def _plan(plan, maps, labels, budget="10m", native=(480, 360), keep=(), uniform=True) -> RunConfig:
    cfg = RunConfig()
    cfg.train.budget = budget
    planned = plan.make_plan(cfg, 300, 30, native, torch.device("cpu"), None, torch.contiguous_format, set(keep),
                             time.monotonic(), ceiling=lambda sizes: resolution_ceiling(maps, sizes, labels),
                             num_labels=labels, uniform=uniform)
    assert cfg.train.plan is None  # a new config: the one given is not written
    return planned


def test_the_plan_takes_a_finer_size_for_thin_classes(monkeypatch):
    plan = _fake_speed(monkeypatch)
    chosen = {}
    for thin in (False, True):
        cfg = _plan(plan, [_scene(thin)] * 2, 3)
        chosen[thin] = cfg.data.image_size
        rows = cfg.train.plan["candidates"]
        assert all("ceiling_dice" in r for r in rows)
        assert cfg.train.loss == "dice_ce" and cfg.train.class_weights == "sqrt"
    assert chosen[True][0] * chosen[True][1] > chosen[False][0] * chosen[False][1], chosen


def _vessels(thin: bool, size: int = 1024) -> np.ndarray:
    """Binary size x size: 1-pixel lines every 16 pixels (thin), or four large blobs."""
    m = np.zeros((size, size), np.uint8)
    if thin:
        m[:, 5::16] = 1
        m[7::16, :] = 1
    else:
        for y, x in ((250, 250), (250, 750), (750, 250), (750, 750)):
            m[y - 150:y + 150, x - 150:x + 150] = 1
    return m


def test_binary_thin_lines_get_patches_at_full_resolution_and_blobs_keep_the_ladder(monkeypatch):
    plan = _fake_speed(monkeypatch)
    blob = _plan(plan, [_vessels(False)], 2, native=(1024, 1024))
    thin = _plan(plan, [_vessels(True)], 2, native=(1024, 1024))
    # blobs keep >= 0.9 at every size: the costliest candidate of the ladder seeing 5,000 images, no patches
    assert blob.data.patch is None and all("patch" not in r for r in blob.train.plan["candidates"])
    assert min(r["ceiling_dice"] for r in blob.train.plan["candidates"]) >= 0.9
    # one-pixel lines lose most of their Dice at every resized size: the plan trains full-resolution patches
    rows = thin.train.plan["candidates"]
    assert max(r["ceiling_dice"] for r in rows if "patch" not in r and r["image_size"] != [1024, 1024]) < 0.9
    assert thin.data.patch is not None and thin.data.image_size == (1024, 1024) and thin.data.patch_scale == (1.0, 1.0)
    assert "patch" in thin.train.plan["chosen"] and "patches" in thin.train.plan["rule"]
    # images of several sizes cannot be cropped at one scale: the finest size that keeps the most, no patches
    mixed = _plan(plan, [_vessels(True)], 2, native=(1024, 1024), uniform=False)
    assert mixed.data.patch is None and "highest ceiling" in mixed.train.plan["rule"]
    # a size the user gives wins
    given = RunConfig()
    given.train.budget, given.data.image_size = "10m", (256, 256)
    given = plan.make_plan(given, 300, 30, (1024, 1024), torch.device("cpu"), None, torch.contiguous_format,
                           {"data.image_size"}, time.monotonic(),
                           ceiling=lambda s: resolution_ceiling([_vessels(True)], s, 2), uniform=True)
    assert given.data.image_size == (256, 256) and given.data.patch is None


def _ceilings(capsys, *argv: str) -> dict[tuple[int, int], float]:
    """check-data's resolution-ceiling lines as {size: Dice}."""
    import re

    from unetseg.cli.main import main

    assert main(["check-data", *argv]) == 0
    out = capsys.readouterr().out
    assert "resolution ceiling" in out
    return {(int(w), int(h)): float(d) for w, h, d in re.findall(r"at (\d+)x(\d+) \(.*\): Dice <= ([\d.]+)", out)}


def test_check_data_shows_the_ceiling_lines_lose_and_blobs_keep(tmp_path, capsys):
    from tests.conftest import write_thin_lines
    from unetseg.data.synthetic import make_synthetic_dataset

    thin = _ceilings(capsys, str(write_thin_lines(tmp_path / "thin")))
    assert list(thin) == [(192, 144), (128, 96), (80, 64), (64, 48), (48, 32)]  # 3/4, 1/2, 1/3, 1/4, 1/6 of 256x192
    assert thin[(128, 96)] < 0.7 and thin[(48, 32)] < thin[(128, 96)] < thin[(192, 144)]
    blobs = _ceilings(capsys, str(make_synthetic_dataset(tmp_path / "blobs", count=12, size=(256, 192), seed=3)))
    assert blobs[(128, 96)] > 0.95 and blobs[(128, 96)] > thin[(128, 96)] + 0.3


def test_a_sample_of_background_only_or_void_only_gives_a_ceiling_or_none_not_a_crash(tmp_path):
    from PIL import Image

    from unetseg.data.ceiling import dataset_ceiling

    empty, void = tmp_path / "empty.png", tmp_path / "void.png"
    Image.fromarray(np.zeros((40, 60), np.uint8)).save(empty)
    Image.fromarray(np.full((40, 60), 255, np.uint8)).save(void)
    rows, k = dataset_ceiling([empty] * 3, [(30, 20)])
    assert k == 2 and rows[0, 0] == 1.0 and np.isnan(rows[0, 1])  # the background kept; no foreground to score
    rows, k = dataset_ceiling([void], [(30, 20)], ignore=[255])
    assert k == 0 and rows.shape == (1, 0)


def test_the_cache_is_read_back_and_a_damaged_one_is_recomputed(tmp_path):
    from unetseg.data.ceiling import cache_dir, dataset_ceiling

    yy, xx = np.mgrid[:64, :64]
    path = tmp_path / "disc.png"
    from PIL import Image

    Image.fromarray(((yy - 32) ** 2 + (xx - 32) ** 2 < 400).astype(np.uint8)).save(path)
    first, _ = dataset_ceiling([path], [(32, 32)])
    files = list(cache_dir().glob("ceiling-*.json"))
    assert files, "no cache file written"
    newest = max(files, key=lambda f: f.stat().st_mtime_ns)
    assert json.loads(newest.read_text())["sizes"]["32x32"] == pytest.approx(first[0].tolist())
    newest.write_text('{"classes": 2, "sizes": {"32x32": [0.5]}}')  # the wrong shape: ignored, recomputed
    again, _ = dataset_ceiling([path], [(32, 32)])
    assert again.tolist() == first.tolist()
    assert json.loads(newest.read_text())["sizes"]["32x32"] == pytest.approx(first[0].tolist())


def test_the_plan_takes_an_imagenet_encoder_for_multi_class_scenes_only(monkeypatch):
    """Where its weights are installed: multi-class data that shrinking does not destroy gets the U-Net on
    EfficientNet-Lite0 (size chosen, 3,000 images suffice); binary masks, thin structures and a width or encoder
    given keep the plain U-Net."""
    plan = _fake_speed(monkeypatch)
    monkeypatch.setattr(plan, "encoder_available", lambda name: True)
    scene = _plan(plan, [_scene(False)] * 2, 3)
    assert scene.model.encoder == "efficientnet-lite0" and scene.model.encoder_weights == "imagenet"
    assert "encoder" in scene.train.plan["chosen"] and scene.train.plan["encoder"] == "efficientnet-lite0"
    assert scene.train.encoder_lr_scale == plan.PLAN_ENCODER_LR_SCALE and "3000" in scene.train.plan["rule"]
    assert "base_channels" not in scene.train.plan["chosen"]
    binary = _plan(plan, [_vessels(False)], 2, native=(1024, 1024))
    assert binary.model.encoder == "unet" and "encoder" in binary.train.plan["chosen"]  # the plan's: replanned on reuse
    thin = _plan(plan, [_vessels(True)], 2, native=(1024, 1024))
    assert thin.model.encoder == "unet"
    for keep in ({"model.base_channels"}, {"model.encoder"}):
        assert not _plan(plan, [_scene(False)] * 2, 3, keep=keep).model.pretrained()
    monkeypatch.setattr(plan, "encoder_available", lambda name: False)  # no weights on the machine: from scratch
    assert _plan(plan, [_scene(False)] * 2, 3).model.encoder == "unet"
