"""A set's scores from its images': each score's mean over images and the scores pooled over every pixel, each with
its bootstrap interval over images (:mod:`unetseg.score.intervals`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from unetseg.score import ranking
from unetseg.score.image import ImageScores, ScoreSettings, overlap_scores
from unetseg.score.intervals import RESAMPLES, interval_method, mean_interval, pooled_interval


def _class_mean(values: np.ndarray, scored: list[int]) -> np.ndarray:
    """Mean over ``scored`` classes (the last axis) of values that are not NaN; NaN where all are."""
    chosen = values[..., scored]
    counted = ~np.isnan(chosen)
    return np.where(counted.any(-1), np.nansum(chosen, -1) / np.maximum(1, counted.sum(-1)), math.nan)


def _pooled(name: str, scored: list[int], full: np.ndarray | None = None):
    """Summed confusion matrices (..., K, K) -> the pooled score ``name`` averaged over the scored classes. With
    ``full`` (the whole set's summed matrix) the classes averaged are fixed from it, those with a value there: a
    resample without one of them has no value (as a class's own score), rather than a mean over fewer classes."""
    fixed = None
    if full is not None and name != "pixel_accuracy":
        values = overlap_scores(full)[name]
        fixed = [k for k in scored if not math.isnan(values[k])]

    def score(matrices: np.ndarray) -> np.ndarray:
        if name == "pixel_accuracy":
            return np.trace(matrices, axis1=-2, axis2=-1) / matrices.sum((-2, -1))
        values = overlap_scores(matrices)[name]
        if fixed is None:
            return _class_mean(values, scored)
        return values[..., fixed].mean(-1) if fixed else np.full(values.shape[:-1], math.nan)
    return score


def _ranked(name: str, scored: list[int] | None = None, full: np.ndarray | None = None):
    """Summed histograms (..., 2, B), or per class (..., K, 2, B) with the ``scored`` classes -> the ranking score
    ``name`` (per class, then their mean). With ``full`` (the set's summed per-class histograms) the classes averaged
    are those with a value there: a resample without one of them has no value, as in :func:`_pooled`."""
    f = {"auc": ranking.roc_auc, "ap": ranking.average_precision, "best_f1": lambda h: ranking.best_f1(h)[0]}[name]
    if scored is not None and full is not None:
        scored = [k for k in scored if not math.isnan(f(full[k]))]
        if not scored:
            return lambda hists: np.full(hists.shape[:-3], math.nan)

    def score(hists: np.ndarray) -> np.ndarray:
        lead = hists.shape[:-3] if scored is not None else hists.shape[:-2]
        flat = hists.reshape(-1, *hists.shape[-2:])
        values = np.array([f(h) for h in flat]).reshape(*lead, -1)
        if scored is None:
            return values.reshape(lead)
        chosen = values[..., scored]
        if full is not None:
            return chosen.mean(-1)  # NaN where a resample lacks one of the set's classes
        counted = ~np.isnan(chosen)
        return np.where(counted.any(-1), np.nansum(chosen, -1) / np.maximum(1, counted.sum(-1)), math.nan)
    return score


def summarise(images: list[ImageScores], settings: ScoreSettings, scored: list[int], names: list[str],
              resamples: int = RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """The set's scores.

    Returns:
        ``{"metrics": {score: {"value", "low", "high", "nan"}}`` (means over images; ``nan``: images left out),
        ``"pooled": {score: {"value", "low", "high"}}`` (every pixel of the set counted together: Dice, IoU,
        precision, recall, specificity, pixel accuracy and, with probabilities, AUC, AP, best F1), ``"per_class":
        [{"class", "name", "iou", "iou_low", "iou_high", "dice", "dice_low", "dice_high", "pixels", "mean": {score:
        value}}]`` (pooled IoU and Dice with their intervals, and each score's mean over images), ``"interval"``
        (how the intervals were made)}``.
    """
    probs = all(s.histogram is not None for s in images) and bool(images)
    metrics: dict[str, Any] = {}
    for name in settings.names(probs):
        interval, nan = mean_interval(np.array([s.row[name] for s in images]), resamples, seed)
        # the interval's method by the images that have the score (a NaN image is left out)
        metrics[name] = {**interval.as_dict(), "nan": nan,
                         "method": interval_method(len(images) - nan, resamples)["method"].split(" (")[0]}
    confusions = np.stack([s.confusion for s in images])
    pooled: dict[str, Any] = {}
    full = confusions.sum(0)
    for name in ("dice", "iou", "precision", "recall", "specificity", "pixel_accuracy"):
        pooled[name] = pooled_interval(confusions, _pooled(name, scored, full), resamples, seed).as_dict()
    labels = confusions.shape[-1]
    if labels > 2:  # the CamVid / Cityscapes mIoU: every class, pooled
        pooled["miou"] = pooled_interval(confusions, _pooled("iou", list(range(labels)), full), resamples,
                                         seed).as_dict()
    if probs:
        hists = np.stack([s.histogram for s in images])
        hists = hists[..., hists.reshape(-1, hists.shape[-1]).any(0)]  # bins no pixel fell in change no score
        per_class_hists = hists.ndim == 4
        for name in ("auc", "ap", "best_f1"):
            ranked = _ranked(name, scored, hists.sum(0)) if per_class_hists else _ranked(name)
            pooled[name] = pooled_interval(hists, ranked, resamples, seed).as_dict()
    per_class = []
    totals = overlap_scores(confusions.sum(0))
    for k in range(labels):
        entry: dict[str, Any] = {"class": k, "name": names[k], "pixels": int(confusions[:, k].sum())}
        for name in ("iou", "dice"):
            if labels > 2 or k in scored:
                got = pooled_interval(confusions, _pooled(name, [k]), resamples, seed)
                entry.update({name: got.value, f"{name}_low": got.low, f"{name}_high": got.high})
            else:
                entry.update({name: float(totals[name][k]), f"{name}_low": math.nan, f"{name}_high": math.nan})
        if probs and labels > 2:  # each class against the rest, pooled over the set
            summed = hists[:, k].sum(0)
            entry.update(auc=ranking.roc_auc(summed), ap=ranking.average_precision(summed),
                         best_f1=ranking.best_f1(summed)[0])
        entry["mean"] = {name: _nanmean([s.per_class[name][k] for s in images]) for name in settings.names(probs)}
        per_class.append(entry)
    units = "pixels" if settings.spacing is None else f"--spacing units (a pixel {settings.spacing[0]:g} x " \
        f"{settings.spacing[1]:g})"
    return {"metrics": metrics, "pooled": pooled, "per_class": per_class,
            "settings": {"spacing": settings.spacing, "distance_units": units, "tolerance": settings.tolerance,
                         "boundary_ratio": settings.boundary_ratio},
            "interval": {**interval_method(len(images), resamples), "resamples": resamples, "seed": seed}}


def _nanmean(values: list[float]) -> float:
    a = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(a)) if (~np.isnan(a)).any() else math.nan


def rows_and_summary(named: list[tuple[str, ImageScores]], settings: ScoreSettings, scored: list[int],
                     names: list[str], resamples: int = RESAMPLES, seed: int = 0
                     ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The per-image table and the summary of a scored set, as ``evaluate`` and ``score`` write them.

    Returns:
        (rows: ``{"image", score: value, ...}`` per image, with ``dice_class<k>`` and ``iou_class<k>`` for
        multi-class masks; summary: :func:`summarise`'s keys and ``"images"``, ``"scored_images"``, ``"mean_dice"``,
        ``"image_mean_iou"`` (the mean of the images' IoU; ``"mean_iou"`` its old name, kept one release and listed
        in ``"renamed"``), ``"global_dice"``, ``"miou"`` (pooled over every pixel, over every class: VOC's and
        CamVid's mIoU), ``"pixel_accuracy"``, ``"scored_classes"``, ``"classes"``,
        ``"mean_dice_class<k>"``).
    """
    from unetseg.metrics import class_scores

    import torch

    labels = len(names)
    rows = []
    for image, scores in named:
        row: dict[str, Any] = {"image": image, **scores.row}
        if labels > 2:
            row.update({f"dice_class{k}": float(scores.per_class["dice"][k]) for k in range(labels)})
            row.update({f"iou_class{k}": float(scores.per_class["iou"][k]) for k in range(labels)})
        rows.append(row)
    summary = summarise([s for _, s in named], settings, scored, names, resamples, seed)
    matrix = np.stack([s.confusion for _, s in named]).sum(0)
    pooled = class_scores(torch.from_numpy(matrix))
    summary = {
        "images": len(rows),
        "scored_images": sum(r["dice"] == r["dice"] for r in rows),  # not NaN
        "mean_dice": summary["metrics"]["dice"]["value"],
        "image_mean_iou": summary["metrics"]["iou"]["value"],  # the mean over images; "miou" is pooled
        "mean_iou": summary["metrics"]["iou"]["value"],  # the old name, kept one release (see "renamed")
        "renamed": {"mean_iou": "image_mean_iou"},
        "global_dice": summary["pooled"]["dice"]["value"],
        "scored_classes": [names[k] for k in scored],
        **{f"mean_dice_class{k}": _nanmean([r[f"dice_class{k}"] for r in rows]) for k in range(labels) if labels > 2},
        "miou": pooled["miou"], "pixel_accuracy": pooled["pixel_accuracy"], "classes": names,
        **summary,
    }
    return rows, summary
