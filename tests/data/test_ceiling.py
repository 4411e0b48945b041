"""The resolution ceiling: one-pixel lines lose most of their IoU at half size, a large disc almost none; values
against a hand computation. And the plan leaves out sizes that destroy a small class of multi-class data."""

from __future__ import annotations

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


def test_the_plan_takes_a_finer_size_for_thin_classes(monkeypatch):
    from unetseg.train import plan

    # a faked speed table: seconds per image follow the convolution FLOPs (no timing in the test)
    monkeypatch.setattr(plan, "measure_step", lambda cfg, *a, **k: 2e-7 * cfg.model.base_channels ** 2
                        * cfg.data.image_size[0] * cfg.data.image_size[1] / 256)
    chosen = {}
    for thin in (False, True):
        cfg = RunConfig()
        cfg.train.budget = "10m"
        plan.make_plan(cfg, 300, 30, (480, 360), torch.device("cpu"), None, torch.contiguous_format, set(),
                       time.monotonic(), class_maps=[_scene(thin)] * 2, num_labels=3)
        chosen[thin] = cfg.data.image_size
        rows = cfg.train.plan["candidates"]
        assert all("ceiling_iou" in r for r in rows)
        assert cfg.train.loss == "dice_ce" and cfg.train.class_weights == "auto"
    assert chosen[True][0] * chosen[True][1] > chosen[False][0] * chosen[False][1], chosen
