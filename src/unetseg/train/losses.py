"""Training losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SegmentationLoss(nn.Module):
    """BCE with logits for one output channel (the seed's binary recipe), cross-entropy for K >= 2.

    Shape:
        logits (N, C, H, W), target class indices (N, H, W) -> scalar mean over pixels
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()  # the loss in fp32 under autocast
        if logits.shape[1] == 1:
            return F.binary_cross_entropy_with_logits(logits[:, 0], target.to(logits.dtype))
        return F.cross_entropy(logits, target.long())
