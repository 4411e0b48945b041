"""Training losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unetseg.data.encoding import IGNORE


class SegmentationLoss(nn.Module):
    """BCE with logits for one output channel (the seed's binary recipe), cross-entropy for K >= 2; pixels whose
    target is IGNORE (255, outside an ignore mask) count in neither.

    Shape:
        logits (N, C, H, W), target class indices (N, H, W) -> scalar mean over the counted pixels
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()  # the loss in fp32 under autocast
        if logits.shape[1] > 1:
            return F.cross_entropy(logits, target.long(), ignore_index=IGNORE)
        keep = target != IGNORE
        per_pixel = F.binary_cross_entropy_with_logits(logits[:, 0], (target == 1).to(logits.dtype), reduction="none")
        return (per_pixel * keep).sum() / keep.sum().clamp(min=1)
