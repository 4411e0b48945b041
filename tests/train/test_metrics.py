import math

import pytest
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


def test_validation_sums_give_the_loss_and_dice_of_the_whole_set_in_one_pass():
    """evaluate() adds per-batch sums: with batches of 3 over 7 images it must give the loss of one pass over all 7
    (equal pixel counts) and the per-image mean Dice, per class too (a class absent from an image and not predicted
    there is left out of that class's mean)."""
    import numpy as np

    from unetseg import RunConfig, UNet, UNetConfig
    from unetseg.data import ArrayDataset, MaskEncoding
    from unetseg.data.transforms import to_float
    from unetseg.metrics import logits_to_classes
    from unetseg.train.loop import evaluate
    from unetseg.train.losses import SegmentationLoss

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 32, 48, 3), dtype=np.uint8)
    masks = np.zeros((7, 32, 48), np.uint8)
    masks[:, 8:20, 10:30] = 1
    masks[:3, 20:28, 10:30] = 2  # class 2 in three images only
    cfg = RunConfig(UNetConfig(base_channels=4, depth=2, num_classes=3))
    cfg.train.amp = "off"
    torch.manual_seed(0)
    model = UNet(cfg.model).eval()
    data = ArrayDataset(images, masks, [None] * 7, MaskEncoding((0, 1, 2)))
    got = evaluate(model, data, cfg, torch.device("cpu"), batch_size=3)
    with torch.no_grad():
        logits = model(to_float(torch.from_numpy(images), cfg.data.mean, cfg.data.std))
        y = torch.from_numpy(masks).long()
        loss = float(SegmentationLoss()(logits, y))
        dice = dice_from_counts(confusion_counts(logits_to_classes(logits), y, 3))
    assert abs(got["loss"] - loss) < 1e-5
    assert abs(got["dice"] - float(torch.nanmean(torch.nanmean(dice, dim=1)))) < 1e-9  # every class, 0 included
    expected = [float(torch.nanmean(dice[:, k])) for k in (0, 1, 2)]
    assert np.allclose(got["dice_per_class"], expected, atol=1e-9, equal_nan=True), (got, expected)
    cfg.data.background = 0  # declared: left out of mean Dice, still shown
    got = evaluate(model, data, cfg, torch.device("cpu"), batch_size=3)
    assert abs(got["dice"] - float(torch.nanmean(foreground_mean(dice)))) < 1e-9
    assert np.allclose(got["dice_per_class"], expected, atol=1e-9, equal_nan=True)


def test_confusion_matrix_and_class_scores_against_a_brute_force_count():
    import numpy as np

    from unetseg.metrics import class_scores, confusion_matrix

    rng = np.random.default_rng(0)
    for void in (False, True):
        k = 5
        target = rng.integers(0, k, (3, 7, 9))
        pred = rng.integers(0, k, (3, 7, 9))
        if void:
            target[rng.random(target.shape) < 0.2] = 255
        brute = np.zeros((3, k, k), dtype=np.int64)
        for n, i, j in np.ndindex(*target.shape):
            if target[n, i, j] != 255:
                brute[n, target[n, i, j], pred[n, i, j]] += 1
        got = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(target), k)
        assert got.tolist() == brute.tolist()
        pooled = brute.sum(0)
        scores = class_scores(torch.from_numpy(pooled))
        for c in range(k):
            tp = pooled[c, c]
            fp, fn = pooled[:, c].sum() - tp, pooled[c, :].sum() - tp
            assert scores["iou"][c] == pytest.approx(tp / (tp + fp + fn))
            assert scores["dice"][c] == pytest.approx(2 * tp / (2 * tp + fp + fn))
        assert scores["miou"] == pytest.approx(np.mean([scores["iou"][c] for c in range(k)]))
        counted = (target != 255).sum()
        right = sum(int(((pred == c) & (target == c)).sum()) for c in range(k))
        assert scores["pixel_accuracy"] == pytest.approx(right / counted)


def test_a_class_in_neither_targets_nor_predictions_is_left_out_of_the_miou():
    from unetseg.metrics import class_scores

    matrix = torch.tensor([[3, 1, 0], [1, 3, 0], [0, 0, 0]])
    scores = class_scores(matrix)
    assert scores["iou"][0] == pytest.approx(0.6) and scores["iou"][2] != scores["iou"][2]  # NaN
    assert scores["miou"] == pytest.approx(0.6)


def test_logits_to_classes_on_the_cpu_equals_argmax_over_classes_in_either_layout():
    from unetseg.metrics import logits_to_classes

    logits = torch.randn(2, 11, 7, 9)
    logits[0, 3:5, 0, 0] = 9.0  # a tie: the first class wins, as argmax does
    expected = logits.argmax(dim=1)
    assert expected[0, 0, 0] == 3
    assert torch.equal(logits_to_classes(logits), expected)
    assert torch.equal(logits_to_classes(logits.contiguous(memory_format=torch.channels_last)), expected)


def test_the_threshold_sweep_from_one_histogram_equals_thresholding_at_each():
    from unetseg.metrics import confusion_counts, threshold_dice

    torch.manual_seed(0)
    logits = torch.randn(1, 40, 50) * 3
    logits[0, :5, :5] = math.log(0.3 / 0.7)  # pixels exactly on a threshold's cut: not above it
    target = (torch.rand(40, 50) < 0.4).long()
    target[10:12] = 255  # ignored
    thresholds = [0.5, 0.05, 0.3, 0.95, 0.7]
    swept = threshold_dice(logits, target, thresholds)
    for t, dice in zip(thresholds, swept):
        counts = confusion_counts(logits_to_classes(logits[None], t), target[None], 2)[0]
        assert dice == float(dice_from_counts(counts)[1]), t
    assert math.isnan(threshold_dice(torch.full((1, 4, 4), -9.0), torch.zeros(4, 4, dtype=torch.long), [0.5])[0])
