"""Training losses: the seed's BCE / cross-entropy, soft Dice and Dice + CE (nnU-Net's default), with class weights
and ignored pixels; and median-frequency class weights (SegNet's balancing for CamVid)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unetseg.config import parse_weights
from unetseg.data.encoding import IGNORE

#: nnU-Net's smoothing of the soft Dice: a class absent from both the targets and (almost) the prediction scores 1.
DICE_SMOOTH = 1e-5


class SegmentationLoss(nn.Module):
    """The training loss of a U-Net's logits; pixels whose target is IGNORE (255: a void value, or outside an ignore
    mask) count in none of the terms.

    Args:
        kind: "ce": BCE with logits for one output channel (the seed's binary recipe), cross-entropy for K >= 2;
            "dice": soft Dice over the whole batch (the foreground of binary data; every class of multi-class data,
            since road scenes and the like have no background class); "dice_ce": their sum, 1:1 (nnU-Net).
        class_weights: one weight per class (2 for binary data): each pixel's cross-entropy is weighted by its
            class's weight (the mean is over the weights, as ``F.cross_entropy`` does), and the Dice is the
            weighted mean over classes. None: all 1.

    Shape:
        logits (N, C, H, W), target class indices (N, H, W) -> scalar

    Example:
        >>> loss = SegmentationLoss("dice_ce", class_weights=[0.3, 4.6, 0.1])
        >>> loss(torch.zeros(2, 3, 8, 8), torch.zeros(2, 8, 8, dtype=torch.long)).shape
        torch.Size([])
    """

    def __init__(self, kind: Literal["ce", "dice", "dice_ce"] = "ce",
                 class_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if kind not in ("ce", "dice", "dice_ce"):
            raise ValueError(f"loss must be ce, dice or dice_ce, got {kind!r}")
        self.kind = kind
        weights = torch.as_tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("weights", weights, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()  # the loss in fp32 under autocast
        target = target.long()
        weights = None if self.weights is None else self.weights.to(logits.device)
        if weights is not None and len(weights) != max(2, logits.shape[1]):
            raise ValueError(f"{len(weights)} class weights for {max(2, logits.shape[1])} classes")
        loss = torch.zeros((), device=logits.device)
        if self.kind in ("ce", "dice_ce"):
            loss = loss + cross_entropy(logits, target, weights)
        if self.kind in ("dice", "dice_ce"):
            loss = loss + soft_dice_loss(logits, target, weights)
        return loss


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """BCE with logits for one channel, cross-entropy otherwise; the weighted mean over the counted pixels.

    Shape:
        logits (N, C, H, W), target (N, H, W) -> scalar
    """
    if logits.shape[1] > 1:  # the weighted mean of F.cross_entropy, but 0 (not NaN) where nothing weighs
        per_pixel = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none")
        keep = (target != IGNORE).to(logits.dtype)
        if weights is not None:
            keep = keep * weights[target.clamp(max=logits.shape[1] - 1)]
        return (per_pixel * keep).sum() / keep.sum().clamp(min=1e-12)
    keep = (target != IGNORE).to(logits.dtype)
    per_pixel = F.binary_cross_entropy_with_logits(logits[:, 0], (target == 1).to(logits.dtype), reduction="none")
    if weights is not None:
        keep = keep * weights[target.clamp(max=1)]
    return (per_pixel * keep).sum() / keep.sum().clamp(min=1e-12)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """1 - soft Dice, computed over the whole batch (nnU-Net's batch Dice: steady when a class is in few images):
    per class ``(2 sum(p g) + s) / (sum(p) + sum(g) + s)`` over the counted pixels, s = DICE_SMOOTH, then the mean
    over classes (weighted where weights are given). Binary data (one channel): the foreground's Dice alone.

    Shape:
        logits (N, C, H, W), target (N, H, W) -> scalar
    """
    keep = (target != IGNORE).unsqueeze(1).to(logits.dtype)  # (N, 1, H, W)
    if logits.shape[1] == 1:
        probs = logits.sigmoid()
        onehot = (target == 1).unsqueeze(1).to(logits.dtype)
    else:
        probs = logits.softmax(dim=1)
        onehot = F.one_hot(target.clamp(max=logits.shape[1] - 1), logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)
    probs, onehot = probs * keep, onehot * keep
    dims = (0, 2, 3)
    tp = (probs * onehot).sum(dims)
    dice = (2 * tp + DICE_SMOOTH) / (probs.sum(dims) + onehot.sum(dims) + DICE_SMOOTH)  # (C,)
    if weights is not None:
        w = weights[1:] if logits.shape[1] == 1 else weights
        return 1 - (dice * w).sum() / w.sum().clamp(min=1e-12)
    return 1 - dice.mean()


def median_frequency_weights(masks: np.ndarray, num_labels: int, rows: np.ndarray | None = None,
                             chunk: int = 64) -> list[float]:
    """Median-frequency balancing (Eigen & Fergus 2015; SegNet's CamVid weights): ``w_c = median(f) / f_c``, where
    ``f_c`` is class c's pixels divided by the counted pixels of the images that hold c. A class found in no mask
    gets weight 0 (it has no pixels to weigh); IGNORE pixels count nowhere.

    Args:
        masks: (N, H, W) uint8 class indices (IGNORE = 255), e.g. the training split at the training size.
        num_labels: number of classes (2 for binary data).
        rows: the rows of ``masks`` to count (None: all).

    Returns:
        One weight per class.
    """
    pixels = np.zeros(num_labels, dtype=np.float64)
    present_pixels = np.zeros(num_labels, dtype=np.float64)  # counted pixels of the images holding each class
    rows = np.arange(len(masks)) if rows is None else np.asarray(rows)
    for start in range(0, len(rows), chunk):  # a memory-mapped cache is read a chunk at a time
        for mask in np.asarray(masks[rows[start:start + chunk]]):
            counts = np.bincount(mask.ravel(), minlength=256)[:num_labels].astype(np.float64)
            pixels += counts
            present_pixels += (counts > 0) * counts.sum()
    found = present_pixels > 0
    if not found.any():
        return [1.0] * num_labels
    freq = np.where(found, pixels / np.maximum(present_pixels, 1), np.nan)
    median = float(np.nanmedian(freq))
    return [round(float(median / f), 6) if ok and f > 0 else 0.0 for f, ok in zip(freq, found)]


def resolve_class_weights(setting: str, masks: np.ndarray | None, num_labels: int,
                          rows: np.ndarray | None = None) -> list[float] | None:
    """The weights a ``TrainConfig.class_weights`` setting asks for: None for "none", median frequency over
    ``masks`` for "auto", their square roots for "sqrt", else the given values (one per class).

    Raises:
        ValueError: when the given values are not one per class.
    """
    if setting == "none":
        return None
    if setting in ("auto", "sqrt"):
        assert masks is not None
        weights = median_frequency_weights(masks, num_labels, rows)
        return weights if setting == "auto" else [math.sqrt(w) for w in weights]
    values = parse_weights(setting)
    if len(values) != num_labels:
        raise ValueError(f"--class-weights: {len(values)} weights for {num_labels} classes (binary data has 2: "
                         f"background, foreground)")
    return values
