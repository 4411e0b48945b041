"""Every score of one image: overlap (Dice, IoU, precision, recall, specificity, accuracy), boundary (HD95, ASSD,
NSD, boundary IoU), topology (clDice) and, from a binary model's probabilities, ranking (AUC, AP, best F1).

Scores are per class, one class against the rest; an image's score is the mean over the scored classes (binary
masks: the foreground) that are not NaN. Pixels of ignored values (void, outside an ignore mask) count in no score:
boundary scores take them as background in both masks.

NaN conventions (left out of every mean, and counted): Dice, IoU, NSD, boundary IoU and clDice are NaN where
prediction and mask are both empty; precision where nothing is predicted, recall where there is nothing to find,
specificity where everything is foreground, accuracy where every pixel is ignored (0/0 each); HD95 and ASSD where
either side is empty (no distance exists); AUC where an image holds only one of the two classes; AP and the best F1
where it holds no foreground.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from unetseg.metrics import confusion_matrix
from unetseg.score import ranking
from unetseg.score.surface import BOUNDARY_RATIO, TOLERANCE, band_width, boundary_iou, surface_scores
from unetseg.score.topology import cldice

#: The scores of each class (and, averaged over the scored classes, of each image), in table order.
OVERLAP = ("dice", "iou", "precision", "recall", "specificity", "accuracy")
SURFACE = ("hd95", "assd", "nsd", "boundary_iou")
TOPOLOGY = ("cldice",)
RANKING = ("auc", "ap", "best_f1")
#: Scores where lower is better.
LOWER_IS_BETTER = ("hd95", "assd")


@dataclass(frozen=True)
class ScoreSettings:
    """What is scored, and how.

    Args:
        spacing: a pixel's (width, height) in the units distances are reported in (None: pixels).
        tolerance: normalised surface Dice's tolerance, in those units.
        boundary_ratio: boundary IoU's band as a share of the image diagonal.
        surface: compute the boundary scores (HD95, ASSD, NSD, boundary IoU).
        topology: compute clDice.
        ranking: compute AUC, AP and best F1 where a model's probabilities are given (multi-class: each class's
            against the rest).
    """

    spacing: tuple[float, float] | None = None
    tolerance: float = TOLERANCE
    boundary_ratio: float = BOUNDARY_RATIO
    surface: bool = True
    topology: bool = True
    ranking: bool = True

    def names(self, probs: bool = False) -> tuple[str, ...]:
        """The scores these settings compute, in table order."""
        return OVERLAP + SURFACE * self.surface + TOPOLOGY * self.topology + RANKING * probs


@dataclass
class ImageScores:
    """One image's scores: ``row`` (the means over scored classes, by score name), ``per_class`` (score -> (K,)
    values), the confusion matrix (K, K) of counted pixels and, with probabilities, their histogram (2, BINS), or
    for multi-class masks one per class against the rest (K, 2, CLASS_BINS)."""

    row: dict[str, float]
    per_class: dict[str, np.ndarray]
    confusion: np.ndarray
    histogram: np.ndarray | None = field(default=None)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.full(num.shape, math.nan), where=den > 0)


def overlap_scores(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Per class of (..., K, K) confusion matrices (rows true, columns predicted): the overlap scores, each (..., K).
    One definition for an image's scores and the pooled ones of every bootstrap resample."""
    m = confusion.astype(np.float64)
    tp = np.diagonal(m, axis1=-2, axis2=-1)
    fp, fn = m.sum(-2) - tp, m.sum(-1) - tp
    total = m.sum((-2, -1))[..., None]
    tn = total - tp - fp - fn
    return {"dice": _ratio(2 * tp, 2 * tp + fp + fn), "iou": _ratio(tp, tp + fp + fn), "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, tp + fn), "specificity": _ratio(tn, tn + fp),
            "accuracy": _ratio(tp + tn, np.broadcast_to(total, tp.shape))}


def score_image(pred: np.ndarray, target: np.ndarray, labels: int, scored: list[int],
                settings: ScoreSettings = ScoreSettings(), probs: np.ndarray | None = None) -> ImageScores:
    """Score one prediction against its mask.

    Args:
        pred: (H, W) predicted class indices.
        target: (H, W) class indices; values of ``labels`` or more (IGNORE) count nowhere.
        labels: the number of labels (2 for binary masks).
        scored: the classes an image's means run over (:func:`unetseg.metrics.scored_classes`).
        probs: for the ranking scores, a binary model's foreground probabilities (H, W) in [0, 1], or a multi-class
            model's (K, H, W): each class's AUC, AP and best F1 against the rest, an image's the mean over the
            scored classes.
    """
    confusion = confusion_matrix(torch.from_numpy(np.ascontiguousarray(pred))[None],
                                 torch.from_numpy(np.ascontiguousarray(target))[None], labels)[0].numpy()
    per_class = overlap_scores(confusion)
    if labels > 2:  # a class's pixel accuracy says little beside the image's: every class gets the image's
        counted = confusion.sum()
        per_class["accuracy"] = np.full(labels, np.trace(confusion) / counted if counted else math.nan)
    valid = target < labels
    if settings.surface or settings.topology:
        spacing = None if settings.spacing is None else settings.spacing[::-1]  # (height, width): the arrays' axes
        band = band_width(target.shape, settings.boundary_ratio)
        for name in settings.names()[len(OVERLAP):]:
            per_class[name] = np.full(labels, math.nan)
        for k in scored:
            p, t = (pred == k) & valid, target == k
            if settings.surface:
                for name, value in surface_scores(p, t, spacing, settings.tolerance).items():
                    per_class[name][k] = value
                per_class["boundary_iou"][k] = boundary_iou(p, t, band)
            if settings.topology:
                per_class["cldice"][k] = cldice(p, t)
    hist = None
    if probs is not None and settings.ranking:
        if labels > 2:  # each class against the rest
            hist = ranking.class_histograms(probs, target, labels)
            for name, f in (("auc", ranking.roc_auc), ("ap", ranking.average_precision),
                            ("best_f1", lambda h: ranking.best_f1(h)[0])):
                per_class[name] = np.array([f(h) for h in hist])
        else:
            hist = ranking.histogram(probs, np.where(valid, target, labels))
            f1, _ = ranking.best_f1(hist)
            for name, value in (("auc", ranking.roc_auc(hist)), ("ap", ranking.average_precision(hist)),
                                ("best_f1", f1)):
                per_class[name] = np.array([math.nan, value])
    row = {}
    for name, values in per_class.items():
        chosen = values[scored]
        row[name] = float(np.nanmean(chosen)) if (~np.isnan(chosen)).any() else math.nan
    return ImageScores(row, per_class, confusion, hist)
