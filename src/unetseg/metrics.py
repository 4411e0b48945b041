"""Stateless segmentation metrics on tensors: confusion counts -> Dice / IoU. Used by training and inference."""

from __future__ import annotations

import math
from typing import Any

import torch


def logits_to_classes(logits: torch.Tensor, threshold: float = 0.5, dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """Class index per pixel: ``sigmoid > threshold`` for one channel (compared as logits: ``logit > 0`` at 0.5),
    argmax otherwise; ``dtype`` uint8 skips the int64 copy of a full-size mask (2.5 ms of 4 at 1918x1280 on a CPU).

    Shape:
        (N, C, H, W) -> (N, H, W) ``dtype``
    """
    if logits.shape[1] == 1:
        return (logits[:, 0] > math.log(threshold / (1 - threshold))).to(dtype)
    if logits.device.type == "cpu":  # torch's CPU argmax over dim 1 of NCHW is 5-17x slower than over the last dim
        return logits.movedim(1, -1).contiguous().argmax(dim=-1).to(dtype)  # (benchmarks/README.md, "argmax ...")
    return logits.argmax(dim=1).to(dtype)


def logits_to_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """The sigmoid for one channel (the foreground's probability), the softmax over classes otherwise.

    Shape:
        (N, C, H, W) -> (N, C, H, W)
    """
    return logits.sigmoid() if logits.shape[1] == 1 else logits.softmax(dim=1)


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_labels: int) -> torch.Tensor:
    """Per-image confusion matrices, counted with one ``bincount``: rows are the target class, columns the predicted
    one; target pixels with a value of ``num_labels`` or more (IGNORE, 255: void or outside an ignore mask) are not
    counted. The one source of every score here (IoU, Dice, accuracy), so validation, evaluate and the report agree.

    Args:
        pred, target: class indices (N, H, W).
        num_labels: number of labels (2 for binary).

    Returns:
        (N, num_labels, num_labels) int64.
    """
    n, k = pred.shape[0], num_labels
    pred, target = pred.reshape(n, -1).long(), target.reshape(n, -1).long()
    counted = target < k
    index = (torch.arange(n, device=pred.device)[:, None] * (k * k) + target * k + pred)[counted]
    return torch.bincount(index, minlength=n * k * k).reshape(n, k, k)


def counts_from_confusion(matrix: torch.Tensor) -> torch.Tensor:
    """(..., K, K) confusion matrices -> (..., K, 3) true positives, false positives, false negatives per class."""
    tp = matrix.diagonal(dim1=-2, dim2=-1)
    return torch.stack([tp, matrix.sum(-2) - tp, matrix.sum(-1) - tp], dim=-1)


def confusion_counts(pred: torch.Tensor, target: torch.Tensor, num_labels: int) -> torch.Tensor:
    """True positives, false positives and false negatives per image and label; target pixels with a value
    of ``num_labels`` or more (IGNORE, 255: void or outside an ignore mask) are not counted.

    Args:
        pred, target: class indices (N, H, W).
        num_labels: number of labels (2 for binary).

    Returns:
        (N, num_labels, 3) int64: tp, fp, fn.
    """
    return counts_from_confusion(confusion_matrix(pred, target, num_labels))


def pixel_accuracy(matrix: torch.Tensor) -> float:
    """Global pixel accuracy of a (K, K) confusion matrix: right pixels / counted pixels (NaN when none)."""
    total = int(matrix.sum())
    return float(matrix.diagonal().sum()) / total if total else float("nan")


def class_scores(matrix: torch.Tensor) -> dict[str, Any]:
    """The field's scores of a (K, K) confusion matrix pooled over a dataset (the CamVid / Cityscapes protocol):
    IoU and Dice per class, the mean IoU over every class of the matrix that is present in the targets or predicted
    (the others are NaN and left out; a declared ``--background`` counts too, as VOC's mIoU counts its 21 classes:
    the mean over the scored classes only is the summary's pooled ``iou``), and global pixel accuracy.

    Returns:
        ``{"iou": [...], "dice": [...], "miou": float, "pixel_accuracy": float}``.
    """
    counts = counts_from_confusion(matrix)
    iou = iou_from_counts(counts)
    return {"iou": iou.tolist(), "dice": dice_from_counts(counts).tolist(),
            "miou": float(torch.nanmean(iou)) if (~iou.isnan()).any() else float("nan"),
            "pixel_accuracy": pixel_accuracy(matrix)}


def dice_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """Dice ``2tp / (2tp + fp + fn)`` per entry of (..., 3) counts; NaN (left out of means) where prediction and
    target are both empty: there was nothing to find and nothing was found, which says nothing about the model
    (nnU-Net's convention; an empty target with a false positive scores 0)."""
    tp, fp, fn = counts.double().unbind(-1)
    denom = 2 * tp + fp + fn
    return torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.full_like(denom, float("nan")))


def iou_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """IoU ``tp / (tp + fp + fn)`` per entry of (..., 3) counts; NaN where both are empty (as Dice)."""
    tp, fp, fn = counts.double().unbind(-1)
    denom = tp + fp + fn
    return torch.where(denom > 0, tp / denom.clamp(min=1), torch.full_like(denom, float("nan")))


def scored_classes(labels: int, background: int | None = None) -> list[int]:
    """The classes a mean Dice (and an image's mean IoU) averages over: the foreground of binary masks (class 1);
    every class of multi-class masks but a declared ``background`` (``DataConfig.background``), as mIoU counts every
    class: on road scenes class 0 is sky, not background."""
    if labels <= 2:
        return [1]
    return [k for k in range(labels) if k != background]


def check_background(background: int | None, labels: int) -> int | None:
    """``background`` where it is a class of ``labels`` (binary masks: ignored, they score their foreground).

    Raises:
        ValueError: one line, for a class the masks do not have.
    """
    if background is not None and labels > 2 and not 0 <= background < labels:
        raise ValueError(f"--background {background}: the masks hold {labels} classes (0..{labels - 1})")
    return background


def class_mean(scores: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """Mean of (..., num_labels) scores over ``classes`` (:func:`scored_classes`), leaving out NaN (classes absent
    from both target and prediction); NaN when every one is NaN."""
    return torch.nanmean(scores[..., classes], dim=-1)


def foreground_mean(scores: torch.Tensor) -> torch.Tensor:
    """Mean over the foreground labels (all but label 0) of (..., num_labels) scores, leaving out NaN (classes
    absent from both target and prediction); NaN when every foreground label is NaN."""
    return torch.nanmean(scores[..., 1:], dim=-1)


def nan_mean(values: list[float] | torch.Tensor) -> float:
    """The mean of the values that are not NaN (the images with something to find or found); NaN if none is."""
    t = torch.as_tensor(values, dtype=torch.float64)
    return float(torch.nanmean(t)) if t.numel() else float("nan")


def threshold_dice(logits: torch.Tensor, target: torch.Tensor, thresholds: list[float]) -> list[float]:
    """The foreground Dice of a binary model's scores at each threshold, from one histogram pass: each pixel's logit
    is bucketed between the thresholds' logits, and the counts above each threshold are cumulative sums. The same
    decisions as :func:`logits_to_classes` at each threshold (``logit > log(t / (1 - t))`` in the logits' dtype).

    Args:
        logits: (1, H, W) or (H, W) scores of one image.
        target: (H, W) class indices; values other than 0 and 1 (IGNORE) are not counted.
        thresholds: probabilities in (0, 1), any order.

    Returns:
        Dice per threshold, in the order given; NaN where there is nothing to find and nothing is found.
    """
    scores = logits.reshape(target.shape)
    order = sorted(range(len(thresholds)), key=lambda i: thresholds[i])
    cuts = torch.tensor([math.log(thresholds[i] / (1 - thresholds[i])) for i in order], dtype=scores.dtype,
                        device=scores.device)
    bucket = torch.bucketize(scores, cuts)  # how many cuts lie below each logit: above cut j when bucket > j
    target = target.to(scores.device)
    n = len(cuts) + 1
    hist = torch.bincount((bucket + n * target.long()).masked_select(target <= 1), minlength=2 * n).view(2, n)
    above = hist.flip(1).cumsum(1).flip(1)[:, 1:]  # pixels above each cut: background, foreground
    tp, fp = above[1], above[0]
    dice = dice_from_counts(torch.stack([tp, fp, hist[1].sum() - tp], dim=-1)).tolist()  # one read back
    out = [0.0] * len(thresholds)
    for rank, i in enumerate(order):
        out[i] = dice[rank]
    return out
