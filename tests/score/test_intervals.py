"""Bootstrap intervals cover what they claim; paired comparisons find a true difference and none where there is
none."""

import numpy as np
import pytest
from scipy import stats

from unetseg.score import mean_interval, paired, pooled_interval


def test_the_interval_covers_a_known_mean_in_at_least_93_of_100_seeded_simulations():
    """20 images' Dice-like scores from Beta(8, 2) (mean 0.8, skewed as per-image Dice is) per simulation: a
    DRIVE-sized test set. Plain BCa covered 93.5% in 600 such simulations (too narrow for small samples); the
    expanded interval 95.0%."""
    covered = 0
    for sim in range(100):
        values = np.random.default_rng(1000 + sim).beta(8, 2, 20)
        interval, nan = mean_interval(values, resamples=2000, seed=sim)
        assert nan == 0 and interval.low < values.mean() < interval.high
        covered += interval.low <= 0.8 <= interval.high
    assert covered >= 93, covered


def test_intervals_of_3_to_5_images_cover_what_they_claim():
    """A bootstrap interval of a mean never leaves the sample's range: at 4 images the expanded BCa covered 83% (72%
    at 3), whatever its level. Below T_BELOW images the interval is Student's t: [0.55, 1.05] for 0.7, 0.8, 0.9 (the
    bootstrap's could not pass [0.7, 0.9]), and it covers Beta(8, 2)'s mean at least 88 times in 100 at 4 images."""
    from unetseg.score.intervals import T_BELOW, interval_method

    small, _ = mean_interval(np.array([0.7, 0.8, 0.9]))
    half = stats.t.ppf(0.975, 2) * 0.1 / np.sqrt(3)
    assert (small.low, small.high) == pytest.approx((0.8 - half, 0.8 + half)) and small.low < 0.56
    covered = sum(lo <= 0.8 <= hi for lo, hi in (
        (i.low, i.high) for i, _ in (mean_interval(np.random.default_rng(50 + s).beta(8, 2, 4), seed=s)
                                     for s in range(100))))
    assert covered >= 88, covered
    # a pooled score takes the jackknife's standard error: for a mean of per-image values it is s / sqrt(n)
    counts = np.array([[3.0, 1.0], [5.0, 5.0], [2.0, 6.0], [9.0, 1.0]])  # tp, fp
    pooled = pooled_interval(counts, lambda c: c[..., 0] / c.sum(-1))
    assert pooled.value == pytest.approx(19 / 32) and pooled.low < 19 / 32 < pooled.high
    assert interval_method(4)["method"].startswith("Student") and interval_method(T_BELOW)["method"].startswith("BCa")
    assert interval_method(20)["level_used"] == pytest.approx(0.968, abs=0.001)


def test_nan_images_are_left_out_and_counted():
    interval, nan = mean_interval(np.array([0.5, np.nan, 0.7, 0.6, np.nan]))
    assert nan == 2 and interval.value == pytest.approx(0.6)
    single, _ = mean_interval(np.array([0.4, np.nan]))
    assert single.value == 0.4 and np.isnan(single.low)  # one image: no interval


def test_identical_values_give_a_point_interval():
    interval, _ = mean_interval(np.full(12, 0.9))
    assert interval.low == interval.high == pytest.approx(0.9)


def test_a_pooled_score_is_recomputed_from_the_resampled_images_counts():
    rng = np.random.default_rng(0)
    tp, fp = rng.integers(50, 100, 25), rng.integers(0, 30, 25)
    counts = np.stack([tp, fp], axis=1)
    precision = pooled_interval(counts, lambda c: c[..., 0] / c[..., :].sum(-1))
    assert precision.value == pytest.approx(tp.sum() / (tp.sum() + fp.sum()))
    assert precision.low < precision.value < precision.high


def test_compare_finds_a_true_difference_and_none_between_identical_sets():
    rng = np.random.default_rng(3)
    a = rng.beta(8, 2, 20)
    b = np.clip(a + 0.02 + rng.normal(0, 0.01, 20), 0, 1)
    found = paired(a, b)
    assert found.difference.low > 0 and found.p_value < 0.01 and found.better >= 18
    same = paired(a, a.copy())
    assert same.p_value == 1.0 and same.difference.value == 0 and same.equal == 20
    noise = paired(a, np.clip(a + rng.normal(0, 0.01, 20), 0, 1))
    assert noise.difference.low < 0 < noise.difference.high and noise.p_value > 0.05


def test_no_interval_where_some_resamples_have_no_value_or_too_few_images():
    """A class in one image of 8: a resample without that image has no IoU for it, so there is no interval (not a
    point one); two images give none either."""
    counts = np.zeros((8, 3))
    counts[3] = (10, 2, 1)  # tp, fp, fn: only image 3 holds the class
    iou = pooled_interval(counts, lambda c: np.where(c.sum(-1) > 0, c[..., 0] / c.sum(-1), np.nan))
    assert iou.value == pytest.approx(10 / 13) and np.isnan(iou.low) and np.isnan(iou.high)
    two, _ = mean_interval(np.array([0.5, 0.9]))
    assert two.value == pytest.approx(0.7) and np.isnan(two.low)


def test_the_signed_rank_test_counts_only_images_that_differ():
    """34.14: 8 images, 3 equal and 5 higher: exact p = 2 / 2**5 (SciPy < 1.15 gave about 0.043 with zeros), and the
    floor is the 5 images' (the verdict is no difference)."""
    from unetseg.score.compare import Comparison, format_comparison
    from unetseg.score.intervals import Interval, paired, signed_rank_p

    a = np.array([0.5, 0.6, 0.7, 0.5, 0.6, 0.7, 0.8, 0.9])
    b = a + np.array([0, 0, 0, 0.01, 0.02, 0.03, 0.04, 0.05])
    result = paired(a, b)
    assert result.p_value == 0.0625 and (result.better, result.equal) == (5, 3)
    text = format_comparison(Comparison("A", "B", "dice", Interval(0.66, 0.5, 0.8), Interval(0.68, 0.5, 0.8), result))
    assert "no difference these images can show (on 5 image(s) that differ, 3 equal, the signed-rank test's " \
           "smallest p is 0.0625)" in text
    rng = np.random.default_rng(1)  # exact, with tied magnitudes too, as SciPy's exact method where it has one
    for d in (rng.normal(0.2, 1, 12), np.array([1, 1, 2, -2, 3, 3, 4, -1.0])):
        assert abs(signed_rank_p(d) - stats.wilcoxon(d).pvalue) < 1e-9


def test_resamples_without_a_rare_class_do_not_average_fewer_classes():
    """34.16: a class in one image of ten: the pooled mean over classes keeps the full sample's class set, so a
    resample without it has no value (and there is no interval), rather than a mean over the other classes."""
    from unetseg.score.summary import _pooled

    confusions = np.zeros((10, 3, 3))
    confusions[:, 0, 0], confusions[:, 1, 1], confusions[:, 1, 0] = 100, 50, 50  # class 1: IoU 0.5 in every image
    confusions[0, 2, 2] = 10  # class 2 only in the first image, found perfectly
    full = confusions.sum(0)
    score = _pooled("iou", [0, 1, 2], full)
    assert score(full) == pytest.approx((1000 / 1500 + 0.5 + 1.0) / 3)
    assert np.isnan(score(confusions[1:].sum(0)))  # the class is in the set, the resample lacks it
    assert pooled_interval(confusions, score).low != pooled_interval(confusions, score).low  # NaN: no interval
    legacy = _pooled("iou", [0, 1, 2])
    assert legacy(confusions[1:].sum(0)) == pytest.approx((900 / 1350 + 0.5) / 2)  # what it averaged before


def test_compare_says_when_the_two_sets_lack_a_score_on_different_images(tmp_path):
    """34.15: the sets' missing values differ: compare says so (an empty prediction scores the diagonal, so this is
    left for the scores that stay NaN, such as precision where nothing is predicted)."""
    import csv

    from unetseg.score.compare import compare, format_comparison

    for name, values in (("a", [0.5, 0.6, 0.7, 0.8]), ("b", [0.6, float("nan"), 0.8, 0.9])):
        (tmp_path / name).mkdir()
        with open(tmp_path / name / "per_image.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["image", "precision"])
            writer.writerows([f"{k}.png", v] for k, v in enumerate(values))
    text = format_comparison(compare([tmp_path / "a", tmp_path / "b"], metric="precision")[0])
    assert "lacks precision on 0 image(s)" in text and "on 1; those images are left out" in text
