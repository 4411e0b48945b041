"""The resolution ceiling: the best IoU a model could reach per class when it is trained at a smaller size, found
from the masks alone (no model). Each mask is taken down to the training size as the pipeline does (nearest
neighbour), its one-hot classes taken back up to the mask's own size and turned into classes as predictions are
(bilinear, then :func:`unetseg.metrics.logits_to_classes`), and scored against the original with the metrics' one
confusion matrix. Thin structures (poles, vessels) lose most; large regions almost nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from unetseg.data.encoding import IGNORE
from unetseg.data.io import read_mask
from unetseg.metrics import confusion_matrix, counts_from_confusion, iou_from_counts, logits_to_classes

#: Masks read to estimate a dataset's ceiling (evenly spread over its files).
CEILING_SAMPLE = 12


def resolution_ceiling(masks: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]], num_labels: int) -> np.ndarray:
    """IoU per class of masks taken down to each size and back, pooled over the masks.

    Args:
        masks: class-index maps (H, W) uint8 at their own size; IGNORE (255) counts nowhere.
        sizes: candidate training sizes (width, height).
        num_labels: the number of classes.

    Returns:
        (len(sizes), num_labels) float64: the IoU ceiling; NaN for a class in none of the masks.
    """
    matrices = torch.zeros(len(sizes), num_labels, num_labels, dtype=torch.int64)
    for mask in masks:
        target = torch.from_numpy(mask)[None]
        for s, size in enumerate(sizes):
            small = torch.from_numpy(np.array(Image.fromarray(mask).resize(tuple(size), Image.NEAREST)))
            onehot = F.one_hot(small.long().clamp(max=num_labels), num_labels + 1)[..., :num_labels]  # void: none
            scores = F.interpolate(onehot.permute(2, 0, 1)[None].float(), size=mask.shape, mode="bilinear",
                                   align_corners=False)
            matrices[s] += confusion_matrix(logits_to_classes(scores), target, num_labels)[0]
    return iou_from_counts(counts_from_confusion(matrices)).numpy()


def sample_class_maps(mask_paths: Sequence[Path], ignore: Sequence[int] = (),
                      sample: int = CEILING_SAMPLE) -> tuple[list[np.ndarray], int]:
    """Class-index maps of up to ``sample`` masks spread evenly over ``mask_paths``, their stored values numbered in
    sorted order (ignored values -> IGNORE), before the dataset's encoding is known (the budget plan).

    Returns:
        (maps, number of classes found).
    """
    paths = list(mask_paths)
    chosen = [paths[i] for i in np.unique(np.linspace(0, len(paths) - 1, min(sample, len(paths))).round().astype(int))] \
        if paths else []
    stored = [read_mask(p).values for p in chosen]
    values = sorted({int(v) for m in stored for v in np.unique(m)} - set(ignore))
    if len(values) > 64:  # not labels (a JPEG mask): no ceiling
        return [], 0
    table = {v: k for k, v in enumerate(values)}
    maps = []
    for m in stored:
        found, inverse = np.unique(m, return_inverse=True)
        lookup = np.array([table.get(int(v), IGNORE) for v in found], dtype=np.uint8)
        maps.append(lookup[inverse.reshape(m.shape)])
    return maps, len(values)
