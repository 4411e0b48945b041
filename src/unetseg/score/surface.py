"""Boundary metrics of one binary mask against another: Hausdorff 95, average symmetric surface distance, normalised
surface Dice and boundary IoU.

Definitions follow MONAI's (``monai.metrics``) where it has them: a mask's surface is its pixels with a background
4-neighbour (the mask XOR its erosion; pixels on the image's border count as surface), a surface pixel's distance is
the exact Euclidean distance to the nearest surface pixel of the other mask (SciPy's distance transform, in pixels or
in the units of ``spacing``), HD95 is the larger of the two directed 95th percentiles, ASSD the mean of both
directions' distances together, and NSD the share of both surfaces within ``tolerance`` of the other. Boundary IoU is
Cheng et al. (2021)'s: the IoU of the two masks' inner bands of pixels within ``d`` (chessboard) of their outside.

Empty masks: with both empty every metric is NaN (nothing to measure); with one side empty HD95 and ASSD are the
worst case, the image's diagonal (in pixels or ``spacing`` units; Metrics Reloaded's and BraTS's convention: a model
that predicts nothing where there is something to find must not come out level by having no distance), NSD and
boundary IoU 0 (nothing of the other found).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

#: Tolerance of normalised surface Dice in pixels (or --spacing units): 2 px, the width over which two careful
#: annotators of the same outline disagree at these images' resolutions (a hand-drawn edge is placed to about a
#: pixel either side), so NSD counts an edge within that band as found.
TOLERANCE = 2.0
#: Boundary IoU's band as a share of the image diagonal: Cheng et al.'s 2%.
BOUNDARY_RATIO = 0.02


def _crop(*masks: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """The bounding box of the masks' union, grown by ``margin`` (within the image); None when all are empty. Every
    metric here is unchanged by cropping to it (the pixels outside are background in both)."""
    union = np.logical_or.reduce(masks)
    rows, cols = np.flatnonzero(union.any(1)), np.flatnonzero(union.any(0))
    if not len(rows):
        return None
    h, w = union.shape
    return (slice(max(0, rows[0] - margin), min(h, rows[-1] + 1 + margin)),
            slice(max(0, cols[0] - margin), min(w, cols[-1] + 1 + margin)))


def surface(mask: np.ndarray) -> np.ndarray:
    """The pixels of a boolean mask with a background 4-neighbour (the image's border counts as background)."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def surface_distances(pred: np.ndarray, target: np.ndarray, spacing: Sequence[float] | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Distances from each surface pixel of ``pred`` to ``target``'s surface, and back; empty where a side is empty.

    Shape:
        (H, W) bool, (H, W) bool -> (n_pred_surface,), (n_target_surface,) float64
    """
    box = _crop(pred, target)
    if box is None or not pred.any() or not target.any():
        return np.zeros(0), np.zeros(0)
    edge_p, edge_t = surface(pred[box]), surface(target[box])
    sampling = None if spacing is None else tuple(float(s) for s in spacing)
    to_target = ndimage.distance_transform_edt(~edge_t, sampling=sampling)
    to_pred = ndimage.distance_transform_edt(~edge_p, sampling=sampling)
    return to_target[edge_p], to_pred[edge_t]


def surface_scores(pred: np.ndarray, target: np.ndarray, spacing: Sequence[float] | None = None,
                   tolerance: float = TOLERANCE) -> dict[str, float]:
    """HD95, ASSD and NSD at ``tolerance`` of two boolean masks (H, W); see the module's conventions."""
    if not pred.any() and not target.any():
        return {"hd95": math.nan, "assd": math.nan, "nsd": math.nan}
    if not pred.any() or not target.any():  # the worst case: the image's diagonal
        sy, sx = (1.0, 1.0) if spacing is None else (float(spacing[1]), float(spacing[0]))
        diagonal = math.hypot(pred.shape[0] * sy, pred.shape[1] * sx)
        return {"hd95": diagonal, "assd": diagonal, "nsd": 0.0}
    d_pt, d_tp = surface_distances(pred, target, spacing)
    both = np.concatenate([d_pt, d_tp])
    return {"hd95": float(max(np.percentile(d_pt, 95), np.percentile(d_tp, 95))),
            "assd": float(both.mean()),
            "nsd": float((both <= tolerance).sum() / both.size)}


def boundary_band(mask: np.ndarray, d: int) -> np.ndarray:
    """The pixels of a boolean mask within chessboard distance ``d`` of its outside (the image's border is
    outside): what ``d`` 3x3 erosions of the zero-padded mask take away (Cheng et al.'s boundary)."""
    inside = ndimage.distance_transform_cdt(np.pad(mask, 1), metric="chessboard")[1:-1, 1:-1]
    return mask & (inside <= d)


def band_width(shape: tuple[int, int], ratio: float = BOUNDARY_RATIO) -> int:
    """Boundary IoU's ``d``: ``ratio`` of the image's diagonal, rounded, at least 1 (Cheng et al.)."""
    return max(1, round(ratio * math.hypot(*shape)))


def boundary_iou(pred: np.ndarray, target: np.ndarray, d: int) -> float:
    """Boundary IoU of two boolean masks (H, W) with bands ``d`` wide; NaN when both are empty."""
    box = _crop(pred, target)
    if box is None:
        return math.nan
    bp, bt = boundary_band(pred[box], d), boundary_band(target[box], d)
    union = int((bp | bt).sum())
    return float((bp & bt).sum() / union) if union else math.nan
