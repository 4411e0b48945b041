"""Each score against a hand computation on small synthetic cases."""

import math

import numpy as np
import pytest

from unetseg.score import ScoreSettings, score_image
from unetseg.score import ranking
from unetseg.score.surface import boundary_band, boundary_iou, surface_scores


def _square(shape, top, left, side, hole=0):
    mask = np.zeros(shape, bool)
    mask[top:top + side, left:left + side] = True
    if hole:
        inner = top + (side - hole) // 2, left + (side - hole) // 2
        mask[inner[0]:inner[0] + hole, inner[1]:inner[1] + hole] = False
    return mask


@pytest.mark.parametrize("k", [1, 3, 5])
def test_a_square_shifted_by_k_pixels(k):
    """Hand count for an s x s square moved k pixels right (both directions alike by symmetry): its right column
    is k from the other's; its left column's row r is min(k, r, s - 1 - r) from the other's edges; the k - 1 pixels
    of its top (and bottom) row beyond the other square are 1 .. k - 1 away; every other surface pixel lies on the
    other surface."""
    s, tol = 30, 2.0
    target, pred = _square((50, 50), 10, 5, s), _square((50, 50), 10, 5 + k, s)
    distances = [k] * s + [0, 0] + [min(k, r, s - 1 - r) for r in range(1, s - 1)] \
        + 2 * (list(range(1, k)) + [0] * (s - 2 - (k - 1)))
    assert len(distances) == 4 * s - 4
    got = surface_scores(pred, target, tolerance=tol)
    assert got["hd95"] == pytest.approx(np.percentile(distances, 95))
    assert got["hd95"] == k  # more than 5% of the surface (the whole right column) is k away
    assert got["assd"] == pytest.approx(sum(distances) / len(distances))
    assert got["nsd"] == pytest.approx(sum(d <= tol for d in distances) / len(distances))


def test_spacing_scales_distances_along_each_axis():
    target, pred = _square((50, 50), 10, 5, 30), _square((50, 50), 10, 8, 30)  # moved 3 pixels along the width
    assert surface_scores(pred, target, spacing=(1.0, 0.5))["hd95"] == pytest.approx(1.5)  # (height, width)
    scores = score_image(pred.astype(np.uint8), target.astype(np.uint8), 2, [1],
                         ScoreSettings(spacing=(0.5, 1.0)))  # the CLI's order: (width, height)
    assert scores.row["hd95"] == pytest.approx(1.5)


def test_a_one_pixel_line_broken_in_one_place():
    target = np.zeros((9, 60), bool)
    target[4, 5:55] = True  # 50 pixels
    pred = target.copy()
    pred[4, 30] = False  # the break
    row = score_image(pred.astype(np.uint8), target.astype(np.uint8), 2, [1]).row
    assert row["dice"] == pytest.approx(2 * 49 / 99)  # near 1
    tsens, tprec = 49 / 50, 1.0  # the label's skeleton (the line) is found but for the gap; the prediction's all in
    assert row["cldice"] == pytest.approx(2 * tprec * tsens / (tprec + tsens))
    assert row["cldice"] < 1


def test_cldice_sees_a_missing_branch_that_dice_barely_notices():
    """A thick bar with a thin side branch: dropping the branch costs Dice little, clDice its share of skeleton."""
    target = np.zeros((40, 80), bool)
    target[15:25, 5:75] = True  # a 10-pixel-thick bar
    target[25:38, 40] = True  # a thin branch
    pred = target.copy()
    pred[25:38, 40] = False
    row = score_image(pred.astype(np.uint8), target.astype(np.uint8), 2, [1]).row
    assert row["dice"] > 0.99 and row["cldice"] < row["dice"] - 0.02


def _band_by_brute_force(mask, d):
    """Chessboard distance of each mask pixel to the nearest pixel outside (the image's border is outside)."""
    padded = np.pad(mask, 1)
    outside = np.argwhere(~padded)
    band = np.zeros_like(mask)
    for y, x in np.argwhere(mask):
        nearest = np.abs(outside - (y + 1, x + 1)).max(1).min()
        band[y, x] = nearest <= d
    return band


def test_boundary_iou_of_a_square_ring_against_a_filled_square_by_count():
    """s = 40, hole 20 (the ring 10 wide), d = 3: the filled square's band is its outer 3-wide frame,
    40^2 - 34^2 = 444 pixels, all in the ring's band, which adds the 3-wide frame round the hole, 26^2 - 20^2 =
    276: boundary IoU 444 / 720."""
    target, pred = _square((50, 50), 5, 5, 40), _square((50, 50), 5, 5, 40, hole=20)
    assert boundary_band(target, 3).sum() == 444
    assert boundary_band(pred, 3).sum() == 444 + 276
    assert boundary_iou(pred, target, 3) == pytest.approx(444 / 720)
    assert score_image(pred.astype(np.uint8), target.astype(np.uint8), 2, [1]).row["iou"] == pytest.approx(
        (1600 - 400) / 1600)


def test_boundary_iou_of_a_ring_against_a_disc_equals_a_brute_force_count():
    yy, xx = np.mgrid[:48, :48]
    r = np.hypot(yy - 23.5, xx - 23.5)
    disc, ring = r < 18, (r < 18) & (r >= 9)
    for d in (1, 2, 4):
        gb, pb = _band_by_brute_force(disc, d), _band_by_brute_force(ring, d)
        assert np.array_equal(boundary_band(disc, d), gb) and np.array_equal(boundary_band(ring, d), pb)
        assert boundary_iou(ring, disc, d) == pytest.approx((gb & pb).sum() / (gb | pb).sum())


def test_empty_masks_follow_the_stated_conventions():
    empty, square = np.zeros((20, 20), bool), _square((20, 20), 5, 5, 6)
    both = score_image(empty.astype(np.uint8), empty.astype(np.uint8), 2, [1]).row
    assert all(math.isnan(both[k]) for k in ("dice", "iou", "hd95", "assd", "nsd", "boundary_iou", "cldice",
                                             "precision", "recall"))
    assert both["specificity"] == 1.0 and both["accuracy"] == 1.0
    missed = score_image(empty.astype(np.uint8), square.astype(np.uint8), 2, [1]).row  # nothing predicted
    assert missed["dice"] == 0 and missed["nsd"] == 0 and missed["boundary_iou"] == 0 and missed["cldice"] == 0
    # the worst case, the image's diagonal (34.15): predicting nothing never escapes the distances
    assert missed["hd95"] == missed["assd"] == math.hypot(20, 20) and math.isnan(missed["precision"])
    assert missed["recall"] == 0
    extra = score_image(square.astype(np.uint8), empty.astype(np.uint8), 2, [1]).row  # nothing to find
    assert extra["dice"] == 0 and extra["hd95"] == math.hypot(20, 20) and math.isnan(extra["recall"])
    assert extra["precision"] == 0


def test_ignored_pixels_count_in_no_score():
    target = _square((30, 30), 5, 5, 10).astype(np.uint8)
    pred = target.copy()
    target[20:, :] = 255  # void: the prediction there is never scored
    pred[22:28, 2:28] = 1
    row = score_image(pred, target, 2, [1]).row
    assert row["dice"] == 1 and row["hd95"] == 0 and row["nsd"] == 1 and row["precision"] == 1


def test_auc_of_a_perfect_a_reversed_and_a_tied_ranking():
    target = np.array([[0, 0, 1, 1, 0, 1]], np.uint8)
    perfect = np.where(target == 1, 0.9, 0.1)
    reversed_ = 1 - perfect
    assert ranking.roc_auc(ranking.histogram(perfect, target)) == 1.0
    assert ranking.roc_auc(ranking.histogram(reversed_, target)) == 0.0
    assert ranking.roc_auc(ranking.histogram(np.full(target.shape, 0.5), target)) == 0.5
    assert ranking.average_precision(ranking.histogram(perfect, target)) == 1.0
    f1, threshold = ranking.best_f1(ranking.histogram(perfect, target))
    assert f1 == 1.0 and 0.1 < threshold <= 0.9


def test_auc_counts_the_pairs_a_positive_wins():
    """Positives 0.2, 0.6, 0.9 and negatives 0.1, 0.6, 0.7: of 9 pairs the positive wins 1 + (1 + 0.5) + 3 = 5.5.
    AP: thresholds 0.9 (precision 1, recall 1/3), 0.6 (2/4 with the tie, recall 2/3), 0.2 (3/5, recall 1)."""
    probs = np.array([[0.2, 0.6, 0.9, 0.1, 0.6, 0.7]])
    target = np.array([[1, 1, 1, 0, 0, 0]], np.uint8)
    hist = ranking.histogram(probs, target)
    assert ranking.roc_auc(hist) == pytest.approx(5.5 / 9)
    assert ranking.average_precision(hist) == pytest.approx((1 + 2 / 4 + 3 / 5) / 3)


def test_eight_bit_probabilities_are_ranked_exactly():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 2, (64, 64)).astype(np.uint8)
    levels = np.clip(target * 40 + rng.integers(0, 216, target.shape), 0, 255)
    probs = levels / 255.0
    pos, neg = levels[target == 1].astype(np.int64), levels[target == 0].astype(np.int64)
    wins = (pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()
    assert ranking.roc_auc(ranking.histogram(probs, target)) == pytest.approx(wins / (len(pos) * len(neg)), abs=1e-12)


def test_multi_class_scores_average_the_scored_classes():
    target = np.zeros((20, 30), np.uint8)
    target[:, 10:20], target[:, 20:] = 1, 2
    pred = target.copy()
    pred[:, 18:20] = 2  # class 1 loses 2 of 10 columns to class 2
    scores = score_image(pred, target, 3, [0, 1, 2])
    assert scores.per_class["dice"].tolist() == pytest.approx([1.0, 2 * 8 / 18, 2 * 10 / 22])
    assert scores.row["dice"] == pytest.approx(np.mean([1.0, 16 / 18, 20 / 22]))
    assert scores.per_class["hd95"][0] == 0 and scores.per_class["hd95"][1] == 2
    without_0 = score_image(pred, target, 3, [1, 2])
    assert without_0.row["dice"] == pytest.approx(np.mean([16 / 18, 20 / 22]))


def test_float_probabilities_rank_as_scikit_learn_ranks_them():
    """Confident pixels are not tied: a positive at 1e-4 above a negative at 1e-5 is AUC 1 (equal bins of [0, 1]
    gave 0.5), and on DRIVE-like float maps (a vessel share of 12%, confident background) AUC and AP agree with
    scikit-learn to 1e-4; the best F1's threshold is a probability the F1 is reached at."""
    metrics = pytest.importorskip("sklearn.metrics", reason="scikit-learn (the test extra) is the reference")
    hist = ranking.histogram(np.array([[1e-4, 1e-5, 0.999999, 1.0]]), np.array([[1, 0, 0, 1]], np.uint8))
    assert ranking.roc_auc(hist) == pytest.approx(metrics.roc_auc_score([1, 0, 0, 1], [1e-4, 1e-5, 0.999999, 1.0]))
    rng = np.random.default_rng(0)
    for trial in range(3):
        target = (rng.random((584, 565)) < 0.12).astype(np.uint8)
        logit = rng.normal(-3, 2.5, target.shape) + target * rng.normal(6, 2, target.shape)
        probs = (1 / (1 + np.exp(-logit))).astype(np.float32)
        hist = ranking.histogram(probs, target)
        assert ranking.roc_auc(hist) == pytest.approx(metrics.roc_auc_score(target.ravel(), probs.ravel()), abs=1e-4)
        assert ranking.average_precision(hist) == pytest.approx(
            metrics.average_precision_score(target.ravel(), probs.ravel()), abs=1e-4)
        f1, threshold = ranking.best_f1(hist)
        found = probs >= threshold
        tp = (found & (target == 1)).sum()
        assert f1 == pytest.approx(2 * tp / (found.sum() + target.sum()), abs=1e-9)


def test_the_mean_over_images_and_the_pooled_miou_are_named_apart_and_miou_counts_the_background():
    """Two images of 3 classes, class 0 declared background: ``image_mean_iou`` is the mean of the images' IoU over
    the scored classes 1 and 2, ``miou`` the pooled IoU over all three (VOC's convention), pooled ``iou`` over 1 and 2;
    the old key ``mean_iou`` stays, listed under ``renamed``."""
    from unetseg.score.summary import rows_and_summary

    target = np.zeros((4, 4), np.uint8)
    target[:, 2:] = 1
    target[3, :] = 2
    pred = target.copy()
    pred[0, 0] = 1  # a background pixel called class 1
    settings = ScoreSettings(surface=False, topology=False)
    named = [("a", score_image(pred, target, 3, [1, 2], settings)), ("b", score_image(target, target, 3, [1, 2],
                                                                                       settings))]
    _, summary = rows_and_summary(named, settings, [1, 2], ["bg", "one", "two"], resamples=0)
    iou_a = np.mean([6 / 7, 1.0])  # class 1: 6 true pixels + 1 false; class 2 exact
    assert summary["image_mean_iou"] == pytest.approx((iou_a + 1.0) / 2) == summary["mean_iou"]
    assert summary["renamed"] == {"mean_iou": "image_mean_iou"}
    pooled = [11 / 12, 12 / 13, 1.0]  # bg: 12 true pixels, 11 kept; class 1: 12 true, 1 false
    assert summary["miou"] == pytest.approx(np.mean(pooled))
    assert summary["pooled"]["iou"]["value"] == pytest.approx(np.mean(pooled[1:]))
