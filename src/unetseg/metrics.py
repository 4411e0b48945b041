"""Stateless segmentation metrics on tensors: confusion counts -> Dice / IoU. Used by training and inference."""

from __future__ import annotations

import math

import torch


def logits_to_classes(logits: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Class index per pixel: ``sigmoid > threshold`` for one channel (compared as logits: ``logit > 0`` at 0.5),
    argmax otherwise.

    Shape:
        (N, C, H, W) -> (N, H, W) int64
    """
    if logits.shape[1] == 1:
        return (logits[:, 0] > math.log(threshold / (1 - threshold))).long()
    return logits.argmax(dim=1)


def logits_to_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """The sigmoid for one channel (the foreground's probability), the softmax over classes otherwise.

    Shape:
        (N, C, H, W) -> (N, C, H, W)
    """
    return logits.sigmoid() if logits.shape[1] == 1 else logits.softmax(dim=1)


def confusion_counts(pred: torch.Tensor, target: torch.Tensor, num_labels: int) -> torch.Tensor:
    """True positives, false positives and false negatives per image and label; target pixels with a value
    of ``num_labels`` or more (IGNORE, 255: outside an ignore mask) are not counted.

    Args:
        pred, target: class indices (N, H, W).
        num_labels: number of labels (2 for binary).

    Returns:
        (N, num_labels, 3) int64: tp, fp, fn.
    """
    n = pred.shape[0]
    pred, target = pred.reshape(n, -1), target.reshape(n, -1).to(pred.dtype)
    counted = target < num_labels
    counts = torch.empty(n, num_labels, 3, dtype=torch.int64, device=pred.device)
    for k in range(num_labels):
        p, t = (pred == k) & counted, target == k
        tp = (p & t).sum(1)
        counts[:, k, 0] = tp
        counts[:, k, 1] = p.sum(1) - tp
        counts[:, k, 2] = t.sum(1) - tp
    return counts


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


def foreground_mean(scores: torch.Tensor) -> torch.Tensor:
    """Mean over the foreground labels (all but label 0) of (..., num_labels) scores, leaving out NaN (classes
    absent from both target and prediction); NaN when every foreground label is NaN."""
    return torch.nanmean(scores[..., 1:], dim=-1)


def nan_mean(values: list[float] | torch.Tensor) -> float:
    """The mean of the values that are not NaN (the images with something to find or found); NaN if none is."""
    t = torch.as_tensor(values, dtype=torch.float64)
    return float(torch.nanmean(t)) if t.numel() else float("nan")
