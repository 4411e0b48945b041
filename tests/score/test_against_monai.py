"""HD95, average symmetric surface distance and normalised surface Dice against MONAI's implementations on random
masks. The definitions agree (a surface is the mask XOR its 4-connected erosion, distances exact Euclidean between
surface pixels, HD95 the larger directed 95th percentile, NSD the share within the tolerance): the values agree to
1e-6. Where they differ, by convention only: MONAI gives inf or NaN for an empty side, we the image diagonal for HD95 and ASSD and 0
for NSD (a test below); MONAI's surface Dice with ``use_subvoxels`` weighs surface elements by area, we count
pixels (its default). MONAI returns float32, so "agree" is to 1e-6 relative."""

import math

import numpy as np
import pytest
from scipy import ndimage

from unetseg.score.surface import surface_scores

monai = pytest.importorskip("monai.metrics", reason="MONAI is a test dependency (pip install monai)")
torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")  # MONAI's own, on empty sides


def _blobs(rng, shape, count):
    mask = np.zeros(shape, bool)
    for _ in range(count):
        y, x = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        r = rng.integers(2, 9)
        yy, xx = np.ogrid[:shape[0], :shape[1]]
        mask |= (yy - y) ** 2 + (xx - x) ** 2 <= r * r
    return ndimage.binary_opening(mask) if rng.random() < 0.5 else mask


def _monai(pred, target, tolerance, spacing):
    p = torch.from_numpy(pred)[None, None].float()
    t = torch.from_numpy(target)[None, None].float()
    kwargs = {"include_background": True, "spacing": list(spacing) if spacing else None}
    hd95 = monai.compute_hausdorff_distance(p, t, percentile=95, directed=False, **kwargs)
    assd = monai.compute_average_surface_distance(p, t, symmetric=True, **kwargs)
    nsd = monai.compute_surface_dice(p, t, [tolerance], include_background=True,
                                     spacing=list(spacing) if spacing else None)
    return float(hd95), float(assd), float(nsd)


@pytest.mark.parametrize("seed", range(12))
def test_surface_scores_agree_with_monai_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(24, 90)), int(rng.integers(24, 90)))
    pred, target = _blobs(rng, shape, int(rng.integers(1, 6))), _blobs(rng, shape, int(rng.integers(1, 6)))
    if not pred.any() or not target.any():
        pytest.skip("an empty draw")
    tolerance = float(rng.choice([1.0, 2.0, 3.5]))
    spacing = None if seed % 3 else (float(rng.uniform(0.5, 2)), float(rng.uniform(0.5, 2)))  # (height, width)
    ours = surface_scores(pred, target, spacing=spacing, tolerance=tolerance)
    hd95, assd, nsd = _monai(pred, target, tolerance, spacing)
    assert ours["hd95"] == pytest.approx(hd95, rel=1e-6, abs=1e-6)
    assert ours["assd"] == pytest.approx(assd, rel=1e-6, abs=1e-6)
    assert ours["nsd"] == pytest.approx(nsd, rel=1e-6, abs=1e-6)


def test_an_empty_prediction_where_monai_gives_inf_or_nan():
    target = np.zeros((30, 30), bool)
    target[5:15, 5:15] = True
    pred = np.zeros_like(target)
    hd95, _, nsd = _monai(pred, target, 2.0, None)
    assert math.isinf(hd95) or math.isnan(hd95)
    ours = surface_scores(pred, target)  # the worst case, the image's diagonal (34.15), not NaN
    assert ours["hd95"] == ours["assd"] == math.hypot(30, 30) and ours["nsd"] == 0 == nsd
    assert surface_scores(pred, target, spacing=(2.0, 0.5))["hd95"] == math.hypot(30 * 0.5, 30 * 2.0)
