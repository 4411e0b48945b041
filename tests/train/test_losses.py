import math

import pytest

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


# A 3-class 4x4 example, every loss computed by hand (numpy loops) with and without void pixels and class weights.
def _example():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(1, 3, 4, 4, generator=g, dtype=torch.float64)
    target = torch.tensor([[[0, 0, 1, 1], [0, 2, 2, 1], [0, 2, 255, 1], [255, 0, 1, 1]]])
    return logits, target


def _by_hand(logits, target, weights, kind):
    import numpy as np

    z = logits[0].numpy()
    p = np.exp(z) / np.exp(z).sum(0, keepdims=True)
    w = np.ones(3) if weights is None else np.asarray(weights, dtype=np.float64)
    num = den = 0.0
    tp, psum, gsum = np.zeros(3), np.zeros(3), np.zeros(3)
    for i in range(4):
        for j in range(4):
            t = int(target[0, i, j])
            if t == 255:  # void: nowhere
                continue
            num += -w[t] * np.log(p[t, i, j])
            den += w[t]
            for c in range(3):
                tp[c] += p[c, i, j] * (c == t)
                psum[c] += p[c, i, j]
                gsum[c] += c == t
    ce = num / den
    dice = (2 * tp + 1e-5) / (psum + gsum + 1e-5)
    dice_loss = 1 - (dice * w).sum() / w.sum()
    return {"ce": ce, "dice": dice_loss, "dice_ce": ce + dice_loss}[kind]


@pytest.mark.parametrize("kind", ["ce", "dice", "dice_ce"])
@pytest.mark.parametrize("weights", [None, [0.5, 2.0, 4.0]])
def test_each_loss_equals_the_hand_computation_without_void_pixels(kind, weights):
    logits, target = _example()
    got = SegmentationLoss(kind, weights)(logits, target).item()
    assert abs(got - _by_hand(logits, target, weights, kind)) < 1e-5


def test_void_pixels_do_not_move_any_loss():
    logits, target = _example()
    other = logits.clone()
    other[..., target[0] == 255] = 100.0  # anything at the void pixels
    for kind in ("ce", "dice", "dice_ce"):
        loss = SegmentationLoss(kind, [1.0, 2.0, 3.0])
        assert abs(loss(logits, target).item() - loss(other, target).item()) < 1e-9


def test_binary_dice_is_the_foreground_dice_and_weights_weigh_bce_per_pixel():
    logits = torch.tensor([[[[2.0, -1.0, 0.5, 0.0]]]])
    target = torch.tensor([[[1, 0, 1, 255]]])
    p = torch.sigmoid(logits[0, 0, 0, :3])
    g = torch.tensor([1.0, 0.0, 1.0])
    dice = (2 * (p * g).sum() + 1e-5) / (p.sum() + g.sum() + 1e-5)
    assert abs(SegmentationLoss("dice")(logits, target).item() - (1 - dice.item())) < 1e-6
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits[0, 0, 0, :3], g, reduction="none")
    w = torch.tensor([3.0, 1.0, 3.0])  # weights [background 1, foreground 3]
    expected = (bce * w).sum() / w.sum()
    assert abs(SegmentationLoss("ce", [1.0, 3.0])(logits, target).item() - expected.item()) < 1e-6


def test_median_frequency_weights_against_a_hand_count():
    import numpy as np

    from unetseg.train.losses import median_frequency_weights

    masks = np.zeros((3, 2, 4), dtype=np.uint8)
    masks[0] = [[0, 0, 0, 1], [0, 0, 1, 1]]      # class 0: 5, class 1: 3
    masks[1] = [[0, 0, 2, 2], [0, 255, 255, 2]]  # class 0: 3, class 2: 3, void 2 (not counted)
    masks[2] = [[1, 1, 1, 1], [1, 1, 1, 0]]      # class 0: 1, class 1: 7
    # f_c = pixels of c / counted pixels of the images holding c
    f0 = (5 + 3 + 1) / (8 + 6 + 8)
    f1 = (3 + 7) / (8 + 8)
    f2 = 3 / 6
    median = sorted([f0, f1, f2])[1]
    got = median_frequency_weights(masks, 4)  # class 3 is in no mask: weight 0
    assert got == pytest.approx([median / f0, median / f1, median / f2, 0.0], rel=1e-5)


def test_sqrt_class_weights_are_the_square_roots_of_median_frequency():
    import numpy as np

    from unetseg.config import TrainConfig
    from unetseg.train.losses import median_frequency_weights, resolve_class_weights

    masks = np.zeros((2, 8, 8), dtype=np.uint8)
    masks[:, :2] = 1
    masks[:, 2, :2] = 2
    full = median_frequency_weights(masks, 3)
    mild = resolve_class_weights("sqrt", masks, 3)
    assert mild == [w ** 0.5 for w in full] and full[2] > mild[2] > 1.0 > mild[0] > full[0]
    assert TrainConfig(class_weights="SQRT").class_weights == "sqrt"
