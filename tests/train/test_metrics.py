import torch

from unetseg.metrics import (confusion_counts, dice_from_counts, foreground_mean, iou_from_counts,
                             logits_to_classes)


def test_hand_computed_dice_and_iou():
    pred = torch.tensor([[[1, 1, 0, 0]]])
    target = torch.tensor([[[1, 0, 1, 0]]])
    counts = confusion_counts(pred, target, 2)
    assert counts[0, 1].tolist() == [1, 1, 1]  # tp, fp, fn of the foreground
    assert foreground_mean(dice_from_counts(counts)).item() == 0.5
    assert abs(foreground_mean(iou_from_counts(counts)).item() - 1 / 3) < 1e-12


def test_perfect_wrong_and_empty():
    target = torch.tensor([[[1, 0], [0, 1]]])
    assert foreground_mean(dice_from_counts(confusion_counts(target, target, 2))).item() == 1.0
    assert foreground_mean(dice_from_counts(confusion_counts(1 - target, target, 2))).item() == 0.0
    empty = torch.zeros(1, 2, 2, dtype=torch.long)
    assert foreground_mean(iou_from_counts(confusion_counts(empty, empty, 2))).item() == 1.0


def test_logits_to_classes():
    assert logits_to_classes(torch.tensor([[[[-0.1, 0.2]]]])).tolist() == [[[0, 1]]]
    assert logits_to_classes(torch.tensor([[[[1.0]], [[3.0]], [[2.0]]]])).tolist() == [[[1]]]
