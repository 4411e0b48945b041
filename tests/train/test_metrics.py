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
    assert torch.isnan(foreground_mean(iou_from_counts(confusion_counts(empty, empty, 2)))).item()
    assert foreground_mean(dice_from_counts(confusion_counts(target, empty, 2))).item() == 0.0  # false positives


def test_logits_to_classes():
    assert logits_to_classes(torch.tensor([[[[-0.1, 0.2]]]])).tolist() == [[[0, 1]]]
    assert logits_to_classes(torch.tensor([[[[1.0]], [[3.0]], [[2.0]]]])).tolist() == [[[1]]]


def test_nothing_to_find_and_nothing_found_is_left_out_of_the_means():
    from unetseg.metrics import nan_mean

    empty = torch.zeros(1, 2, 2, dtype=torch.long)
    half = torch.tensor([[[1, 1], [0, 0]]])
    quarter = torch.tensor([[[1, 0], [0, 0]]])
    scores = [foreground_mean(dice_from_counts(confusion_counts(p, t, 2))).item()
              for p, t in ((half, half), (empty, empty), (quarter, half))]
    assert scores[0] == 1.0 and scores[2] == 2 / 3 and scores[1] != scores[1]  # NaN
    assert nan_mean(scores) == (1.0 + 2 / 3) / 2  # not (1 + 1 + 2/3) / 3


def test_a_class_absent_from_truth_and_prediction_is_left_out_of_the_class_mean():
    target = torch.tensor([[[0, 1], [1, 0]]])  # classes 0 and 1; class 2 nowhere
    pred = torch.tensor([[[0, 1], [0, 0]]])
    dice = dice_from_counts(confusion_counts(pred, target, 3))[0]
    assert dice[1].item() == 2 / 3 and torch.isnan(dice[2])
    assert foreground_mean(dice).item() == 2 / 3  # MONAI / nnU-Net: not (2/3 + 1) / 2


def test_ignored_pixels_count_in_neither_metric_nor_loss():
    from unetseg.train.losses import SegmentationLoss

    target = torch.tensor([[[1, 0, 255, 255]]])
    pred = torch.tensor([[[1, 0, 1, 0]]])  # right where counted, anything where ignored
    counts = confusion_counts(pred, target, 2)
    assert counts[0, 1].tolist() == [1, 0, 0] and counts[0, 0].tolist() == [1, 0, 0]
    logits = torch.tensor([[[[5.0, -5.0, -9.0, 9.0]]]])
    loss = SegmentationLoss()(logits, target)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor([5.0, -5.0]), torch.tensor([1.0, 0.0]))
    assert abs(loss.item() - expected.item()) < 1e-6
    multi = torch.zeros(1, 3, 1, 4)
    multi[0, 1, 0, 0] = multi[0, 0, 0, 1] = 5.0
    multi[0, 2, 0, 2:] = 9.0  # confidently wrong on the ignored pixels
    ce = SegmentationLoss()(multi, target)
    assert abs(ce.item() - torch.nn.functional.cross_entropy(multi[..., :2], target[..., :2]).item()) < 1e-6
