"""``unetseg compare``: scored sets on the same images, each against the first, image by image."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unetseg.data.errors import DataError
from unetseg.score.files import read_per_image
from unetseg.score.image import LOWER_IS_BETTER
from unetseg.score.intervals import RESAMPLES, Interval, Paired, mean_interval, paired


@dataclass(frozen=True)
class Comparison:
    """One scored set against the baseline: both means over the shared images and :class:`Paired`."""

    baseline: str
    other: str
    metric: str
    baseline_mean: Interval
    other_mean: Interval
    paired: Paired
    missing: tuple[int, int] = (0, 0)  # images without the score: the baseline's, the other's


def compare(sets: list[str | Path], metric: str = "dice", resamples: int = RESAMPLES, seed: int = 0
            ) -> list[Comparison]:
    """Each of ``sets[1:]`` against ``sets[0]`` (run folders or folders of ``per_image.csv``) on ``metric``.

    Raises:
        DataError: naming the images that differ when the sets were scored on different images, or the metric
            where a table lacks it.
    """
    if len(sets) < 2:
        raise ValueError("compare needs at least two scored sets (run folders or score/evaluate --out folders)")
    tables = [read_per_image(s) for s in sets]
    base_file, base = tables[0]
    out = []
    for (other_file, other), name in zip(tables[1:], sets[1:]):
        only_base, only_other = sorted(base.keys() - other.keys()), sorted(other.keys() - base.keys())
        if only_base or only_other:
            shown = [f"only in {base_file}: {', '.join(only_base[:5])}{' ...' if len(only_base) > 5 else ''}"] * bool(
                only_base) + [f"only in {other_file}: {', '.join(only_other[:5])}"
                              f"{' ...' if len(only_other) > 5 else ''}"] * bool(only_other)
            raise DataError(f"{other_file}: scored on other images than {base_file} ({'; '.join(shown)})")
        for file, table in ((base_file, base), (other_file, other)):
            if metric not in next(iter(table.values())):
                known = ", ".join(k for k in next(iter(table.values())) if "_class" not in k)
                raise DataError(f"{file}: no {metric!r} column (it holds {known})")
        images = sorted(base)
        a = np.array([base[i][metric] for i in images])
        b = np.array([other[i][metric] for i in images])
        both = ~(np.isnan(a) | np.isnan(b))  # the images where both have the score: the difference's too
        out.append(Comparison(str(sets[0]), str(name), metric, mean_interval(a[both], resamples, seed)[0],
                              mean_interval(b[both], resamples, seed)[0], paired(a, b, resamples, seed),
                              (int(np.isnan(a).sum()), int(np.isnan(b).sum()))))
    return out


def format_comparison(c: Comparison) -> str:
    """Lines a person reads: both means with intervals, the difference with its interval, the p-value, the counts."""
    d, p = c.paired.difference, c.paired
    better = "lower" if c.metric in LOWER_IS_BETTER else "higher"
    if not p.images or np.isnan(p.p_value):
        verdict = "nothing to compare: no image has the score in both"
    elif p.p_value >= 0.05 or np.isnan(d.low) or d.low <= 0 <= d.high:
        verdict = "no difference these images can show"
        moved = p.images - p.equal  # equal images carry no sign: the test counts the others
        if moved < 6:  # all one way still leaves p = 2 / 2**n
            verdict += (f" (on {moved} image(s) that differ" + (f", {p.equal} equal" if p.equal else "")
                        + f", the signed-rank test's smallest p is {2 / 2 ** moved:.3g})")
    else:
        verdict = f"{c.other if (d.value > 0) == (better == 'higher') else c.baseline} is better"
    missing = ""
    if c.missing[0] != c.missing[1]:  # the images left out are not the same for both: the comparison skips them
        missing = (f"\n  note: {c.baseline} lacks {c.metric} on {c.missing[0]} image(s), {c.other} on "
                   f"{c.missing[1]}; those images are left out of the comparison")
    return (f"{c.metric} ({better} is better) on the {p.images} images where both have it:\n"
            f"  {c.baseline}: {c.baseline_mean}\n"
            f"  {c.other}: {c.other_mean}\n"
            f"  difference (second - first): {d}; Wilcoxon signed-rank p = {p.p_value:.3g}; "
            f"higher on {p.better}, equal on {p.equal}, lower on {p.worse}: {verdict}{missing}")


def format_ranking(sets: list[str | Path], metric: str = "dice") -> str:
    """The sets ranked by their mean ``metric`` over the images (each set's images with the score), best first, with
    the pooled figure of its summary.json where there is one (mIoU for multi-class sets, else global Dice): how
    nnU-Net's ``find_best_configuration`` picks among single configurations and their ensembles."""
    lower = metric in LOWER_IS_BETTER
    rows = []
    for name in sets:
        file, table = read_per_image(name)
        values = np.array([row[metric] for row in table.values() if metric in row], dtype=float)
        pooled = ""
        try:
            summary = json.loads((file.parent / "summary.json").read_text())
            key = "miou" if summary.get("miou") is not None and len(summary.get("per_class", [])) > 2 else "global_dice"
            if summary.get(key) is not None:
                pooled = f", pooled {key} {summary[key]:.4f}"
        except (OSError, ValueError):
            pass
        rows.append((float(np.nanmean(values)) if np.isfinite(values).any() else math.nan, str(name), pooled))
    rows.sort(key=lambda r: (math.isnan(r[0]), r[0] if lower else -r[0]))
    lines = [f"ranked by mean {metric} ({'lower' if lower else 'higher'} is better):"]
    lines += [f"  {k}. {name}: {mean:.4f}{pooled}" for k, (mean, name, pooled) in enumerate(rows, 1)]
    lines.append(f"best: {rows[0][1]}")
    return "\n".join(lines)
