"""clDice (Shit et al., 2021): Dice of the masks' centrelines, the metric of thin connected structures (vessels,
membranes). Skeletons from scikit-image's ``skeletonize``.

``clDice = 2 Tprec Tsens / (Tprec + Tsens)`` with ``Tprec = |S(P) & L| / |S(P)|`` (the prediction's skeleton inside
the label) and ``Tsens = |S(L) & P| / |S(L)|``. A break in a one-pixel line costs clDice a whole share of the line's
skeleton while Dice loses only the pixels of the gap. Both masks empty: NaN; one empty: 0.
"""

from __future__ import annotations

import math

import numpy as np
from skimage.morphology import skeletonize

from unetseg.score.surface import _crop


def cldice(pred: np.ndarray, target: np.ndarray) -> float:
    """clDice of two boolean masks (H, W)."""
    box = _crop(pred, target, margin=1)
    if box is None:
        return math.nan
    pred, target = pred[box], target[box]
    if not pred.any() or not target.any():
        return 0.0
    skel_p, skel_t = skeletonize(pred), skeletonize(target)
    tprec = (skel_p & target).sum() / max(1, skel_p.sum())
    tsens = (skel_t & pred).sum() / max(1, skel_t.sum())
    return float(2 * tprec * tsens / (tprec + tsens)) if tprec + tsens > 0 else 0.0
