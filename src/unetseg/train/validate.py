"""Validation and the weights a run saves: scores on the held-out images (each process a share, the sums added),
and the weights that are validated and written (the average or the training weights, batch-norm statistics
recomputed on rank 0 alone and shared)."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

from unetseg._device import autocast_dtype, memory_format
from unetseg.config import RunConfig
from unetseg.data import ArrayDataset
from unetseg.data.transforms import to_float
from unetseg.metrics import (class_mean, class_scores, confusion_matrix, counts_from_confusion, dice_from_counts,
                             logits_to_classes, scored_classes)
from unetseg.model import UNet
from unetseg.train.distributed import World
from unetseg.train.losses import SegmentationLoss
from unetseg.infer.windows import sliding_window_logits, window_starts
from unetseg.train.weights import WeightAverage, recalibrate_bn

#: Overlap of the windows that validate a patch run's large images (the predictor's default).
WINDOW_OVERLAP = 0.5
#: A forward pass costs about this share of a training step.
FORWARD_SHARE = 0.35


def validation_window(cfg: RunConfig) -> tuple[int, int] | None:
    """The window (the training patch) through which a patch run validates and recalibrates whole images that hold
    more pixels than a training batch of patches (a 4000x4000 image is 30x a batch of 8 at 256x256): memory stays
    that of a step. None: whole images go through the model."""
    return window_for(tuple(cfg.data.image_size), cfg.data.patch, cfg.train.batch_size)  # type: ignore[arg-type]


def window_for(image_size: tuple[int, int], patch: tuple[int, int] | None,
               batch_size: int) -> tuple[int, int] | None:
    """:func:`validation_window` of a training size, patch and batch."""
    if not patch:
        return None
    larger = image_size[0] * image_size[1] > batch_size * patch[0] * patch[1]
    return tuple(patch) if larger else None  # type: ignore[return-value]


def validation_seconds(n_train: int, n_val: int, per_sample: float, image_size: tuple[int, int],
                       patch: tuple[int, int] | None, batch_size: int, bn_images: int,
                       crop: tuple[int, int] | None = None) -> float:
    """Seconds of one validation, from the seconds of one training sample (an image, a patch or a crop): the
    batch-norm pass over up to ``bn_images`` training images (0: none) and the forward passes over the validation
    images, whole, or by windows of the patch where :func:`window_for` says so. The plan reserves it, a budget run's
    clock starts from it: one estimate for both."""
    bn = min(n_train, bn_images)
    window = window_for(image_size, patch, batch_size)
    if window is not None:  # windows of the patch, a crop each for the BN pass
        windows = len(window_starts(image_size[0], window[0], WINDOW_OVERLAP)) * \
            len(window_starts(image_size[1], window[1], WINDOW_OVERLAP))
        return FORWARD_SHARE * per_sample * (n_val * windows + bn)
    sample = patch or crop  # a whole image costs its pixels' share more than the sample timed
    area = 1.0 if sample is None else image_size[0] * image_size[1] / (sample[0] * sample[1])
    return FORWARD_SHARE * per_sample * area * (n_val + bn)


@torch.inference_mode()
def evaluate(model: torch.nn.Module, data: ArrayDataset, cfg: RunConfig, device: torch.device,
             batch_size: int | None = None, world: World = World()) -> dict[str, Any]:
    """Loss, mean per-image Dice (the scored classes: :func:`unetseg.metrics.scored_classes`) and the pooled
    confusion matrix's scores on decoded data at the training size.

    Under torchrun each process scores a contiguous share of the images, and the sums (losses, per-image Dice,
    the number of images scored, the confusion matrix) are added over the processes before dividing: the same
    figures as one process.

    Returns:
        ``{"loss": ..., "dice": ..., "dice_per_class": [...], "miou": ..., "iou_per_class": [...],
        "pixel_accuracy": ...}``: the per-image mean Dice of each class (the foreground's alone for binary data; NaN
        for a class never present nor predicted); IoU of every class and their mean over the scored classes, and
        global pixel accuracy, from the confusion matrix pooled over the images (the CamVid protocol).
    """
    model.eval()
    dtype = autocast_dtype(device, cfg.train.amp)
    # the training model's layout
    layout = memory_format(device, cfg.train.memory_format, training=True, encoder=cfg.model.pretrained())
    loss_fn = SegmentationLoss(cfg.train.loss, cfg.train.class_weight_values).to(device)
    labels = max(2, cfg.model.num_classes)
    share = np.array_split(np.arange(len(data)), world.size)[world.rank]
    batch = batch_size or cfg.train.batch_size
    # sums over the images: (loss x images, images), and per column (the mean over the scored classes, then the
    # foreground of binary masks or each class) the Dice and the number of images it is defined for
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    n_columns = 2 if labels == 2 else labels + 1
    dice_sum = torch.zeros(n_columns, dtype=torch.float64, device=device)
    dice_n = torch.zeros(n_columns, dtype=torch.float64, device=device)
    matrix = torch.zeros(labels, labels, dtype=torch.float64, device=device)
    window = validation_window(cfg)
    scored = scored_classes(labels, cfg.data.background)
    per_class = [1] if labels == 2 else list(range(labels))  # the Dice columns: the foreground, or every class

    def forward(images: np.ndarray) -> torch.Tensor:
        x = to_float(torch.from_numpy(images).to(device), cfg.data.mean, cfg.data.std)
        with torch.autocast(device.type, dtype=dtype) if dtype else nullcontext():
            return model(x.contiguous(memory_format=layout))

    for start in range(0, len(share), batch):
        images, masks = data.take(share[start:start + batch])
        y = torch.from_numpy(masks).to(device).long()
        if window is None:
            logits = forward(images)
        else:  # each image by windows, a training batch of them at a time
            logits = torch.stack([sliding_window_logits(forward, image, window, WINDOW_OVERLAP, cfg.train.batch_size)
                                  for image in images]).to(device)
        confusion = confusion_matrix(logits_to_classes(logits), y, labels)  # (images, labels, labels)
        matrix += confusion.sum(0)
        dice = dice_from_counts(counts_from_confusion(confusion))  # (images, labels)
        columns = torch.cat([class_mean(dice, scored)[:, None], dice[:, per_class]], dim=1)
        totals[0] += loss_fn(logits, y).double() * len(images)
        totals[1] += len(images)
        dice_sum += columns.nan_to_num().sum(0)
        dice_n += (~columns.isnan()).sum(0)
    totals, dice_sum, dice_n, matrix = world.sum(torch.cat([totals, dice_sum, dice_n, matrix.flatten()])).split(
        [2, n_columns, n_columns, labels * labels])
    dice = (dice_sum / dice_n.clamp_min(1)).masked_fill(dice_n == 0, float("nan")).tolist()
    scores = class_scores(matrix.reshape(labels, labels).round().long().cpu())
    return {"loss": float(totals[0] / totals[1]) if totals[1] else float("nan"), "dice": dice[0],
            "dice_per_class": dice[1:], "miou": scores["miou"], "iou_per_class": scores["iou"],
            "pixel_accuracy": scores["pixel_accuracy"]}


class SavedWeights:
    """The weights a run validates and writes: with an average (``ema_decay``) or ``bn_recalibrate``, a shadow model
    holding the average (or the training weights) with batch-norm statistics recomputed on up to ``bn_images``
    training images; else the training model itself.

    Args:
        model: the training model (the plain module).
        average: the weight average, or None.
        recalibrate: recompute batch-norm statistics.
        data: the training images (for the recalibration).
        cfg: the run (normalisation, sizes), device, layout, dtype: where the passes run.
        batch_size: images per recalibration pass.
        bn_images: at most this many images.
    """

    def __init__(self, model: torch.nn.Module, average: WeightAverage | None, recalibrate: bool, data: ArrayDataset,
                 cfg: RunConfig, device: torch.device, layout: torch.memory_format, dtype: torch.dtype | None,
                 batch_size: int, bn_images: int) -> None:
        self.model, self.average, self.recalibrate, self.data, self.cfg = model, average, recalibrate, data, cfg
        self.device, self.layout, self.dtype, self.batch_size, self.bn_images = device, layout, dtype, batch_size, \
            bn_images
        self.shadow = UNet(cfg.model).to(device, memory_format=layout) if average is not None or recalibrate else None

    def compute(self, world: World) -> torch.nn.Module:
        """The weights to validate and save. Rank 0 computes them (the recalibration passes run there alone); the
        other processes get rank 0's result when ``world.broadcast_module`` shares it."""
        if self.shadow is None:
            return self.model
        if not world.is_main:
            return self.shadow
        self.shadow.load_state_dict(self.average.state_dict() if self.average is not None else self.model.state_dict())
        if self.recalibrate:
            window = validation_window(self.cfg)  # large images: crops of the training patch's size, a batch's worth
            recalibrate_bn(self.shadow, self.data, self.cfg.data.mean, self.cfg.data.std, self.device,
                           self.cfg.train.batch_size if window else self.batch_size, self.bn_images, self.layout,
                           self.dtype, crop=window)
        return self.shadow
