import math

import torch

from unetseg.train.losses import SegmentationLoss


def test_binary_uses_bce_with_logits():
    logits = torch.tensor([[[[0.0, 2.0]]]])
    target = torch.tensor([[[1, 0]]])
    expected = (math.log(2) + math.log(1 + math.exp(2))) / 2
    assert abs(SegmentationLoss()(logits, target).item() - expected) < 1e-6


def test_confident_correct_prediction_has_near_zero_loss():
    target = torch.tensor([[[0, 1, 2]]])
    logits = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 50
    assert SegmentationLoss()(logits, target).item() < 1e-6
