"""Threshold-free scores of a binary model's probabilities: ROC AUC, average precision and the F1 at the best
threshold, from histograms of the probabilities of positive and negative pixels.

Probabilities are counted in ``BINS`` equal bins of their logit over [-LOGIT_RANGE, LOGIT_RANGE] (float32's
reach: 1 - 6e-8 is its largest probability below 1), with 0 and 1 in the end bins: fine where models are confident
(a positive at 1e-4 ranks above a negative at 1e-5, as scikit-learn ranks them; equal bins of [0, 1] tied both), and
1/1900 of a probability wide at 0.5 (1/4096 before, where confident pixels tied). Ties within a bin count as ties, half a pair each, as the Mann-Whitney
statistic counts them; scikit-learn's AUC and AP of float maps agree to 1e-4 (tested). Our ``--save-probs`` PNGs
hold 256 levels, each in its own bin, so their scores are exact. Histograms add up, so a set's pooled scores (the retinal
vessel papers pool the pixels of every test image inside the field of view) come from the sum of its images'.
"""

from __future__ import annotations

import math

import numpy as np

BINS = 16384
#: A multi-class model's per-class histograms (one class against the rest): 8x coarser, so that K of them per image
#: stay small (11 classes: 360 KB an image); AP then agrees with scikit-learn's to about 1e-3.
CLASS_BINS = 4096
LOGIT_RANGE = 17.0


def bin_of(probs: np.ndarray, bins: int = BINS) -> np.ndarray:
    """The bin (0 .. bins - 1) of each probability in [0, 1]: equal widths of the logit."""
    p = np.clip(probs.astype(np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore"):
        logit = np.log(p) - np.log1p(-p)  # -inf at 0, +inf at 1: the end bins
    scaled = (np.clip(logit, -LOGIT_RANGE, LOGIT_RANGE) + LOGIT_RANGE) * (bins / (2 * LOGIT_RANGE))
    return np.minimum(scaled.astype(np.int64), bins - 1)


def bin_floor(k: int, bins: int = BINS) -> float:
    """The lowest probability of bin ``k`` (a threshold: pixels at or above it are in bin k or higher)."""
    if k <= 0:
        return 0.0
    return float(1 / (1 + math.exp(-(k * 2 * LOGIT_RANGE / bins - LOGIT_RANGE))))


def histogram(probs: np.ndarray, target: np.ndarray, bins: int = BINS) -> np.ndarray:
    """(2, bins) counts (int32 where they fit) of the probabilities of negative (row 0) and positive (row 1) pixels; ``target``
    values other than 0 and 1 (ignored pixels) are not counted.

    Shape:
        (H, W) float in [0, 1], (H, W) class indices -> (2, BINS)
    """
    counted = target <= 1
    index = bin_of(probs[counted], bins)
    counts = np.bincount(index + bins * target[counted].astype(np.int64), minlength=2 * bins).reshape(2, bins)
    # int32 halves what every image keeps; sums are taken in float64 (summary, intervals)
    return counts.astype(np.int32) if counts.max(initial=0) < 2**31 else counts


def class_histograms(probs: np.ndarray, target: np.ndarray, labels: int) -> np.ndarray:
    """(K, 2, CLASS_BINS) counts of a multi-class model's probabilities, each class against the rest; ``target``
    values of ``labels`` or more (void, ignored) are not counted.

    Shape:
        (K, H, W) float in [0, 1], (H, W) class indices -> (K, 2, CLASS_BINS)
    """
    valid = target < labels
    return np.stack([histogram(probs[k], np.where(valid, (target == k).astype(np.uint8), 2), CLASS_BINS)
                     for k in range(labels)])


def _above(hist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Negatives and positives at or above each bin, highest bin first (the thresholds from strict to lax)."""
    return np.cumsum(hist[0][::-1], dtype=np.float64), np.cumsum(hist[1][::-1], dtype=np.float64)


def roc_auc(hist: np.ndarray) -> float:
    """The area under the ROC curve: the chance that a positive pixel scores above a negative one (ties: half);
    NaN without positives or negatives."""
    neg, pos = hist[0].astype(np.float64), hist[1].astype(np.float64)
    if not neg.sum() or not pos.sum():
        return math.nan
    neg_below = np.cumsum(neg) - neg  # negatives in lower bins
    return float((pos * (neg_below + neg / 2)).sum() / (pos.sum() * neg.sum()))


def average_precision(hist: np.ndarray) -> float:
    """Average precision (scikit-learn's definition: precision at each threshold weighted by the recall it adds);
    NaN without positives."""
    fp, tp = _above(hist)
    positives = tp[-1]
    if not positives:
        return math.nan
    added = np.diff(tp, prepend=0)
    precision = np.divide(tp, tp + fp, out=np.zeros(len(tp)), where=tp + fp > 0)
    return float((added * precision).sum() / positives)


def best_f1(hist: np.ndarray) -> tuple[float, float]:
    """The best F1 over the bins' thresholds and that threshold (a probability: pixels at or above it are
    foreground); (NaN, NaN) without positives."""
    fp, tp = _above(hist)
    positives = tp[-1]
    if not positives:
        return math.nan, math.nan
    f1 = 2 * tp / (tp + fp + positives)
    k = int(np.argmax(f1))
    bins = hist.shape[-1]
    return float(f1[k]), bin_floor(bins - 1 - k, bins)
