"""Evaluation at each image's original resolution: Dice and IoU per image, their means, global Dice."""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from unetseg.data.classes import class_names
from unetseg.data.errors import DataError
from unetseg.data.io import read_image
from unetseg.data.pairing import Pair
from unetseg.drawing.overlays import display_size, error_overlay, shrink_classes
from unetseg.infer.predict import Predictor
from unetseg.metrics import check_background, nan_mean, scored_classes, threshold_dice
from unetseg.score.files import write_scores
from unetseg.score.folder import true_classes
from unetseg.score.image import ImageScores, ScoreSettings, score_image
from unetseg.score.intervals import RESAMPLES
from unetseg.score.summary import rows_and_summary

logger = logging.getLogger(__name__)

OVERLAYS = 6  # worst and best images drawn by evaluate --out


def evaluate_pairs(predictor: Predictor, pairs: list[Pair], out_dir: str | Path | None = None,
                   progress: bool = False, thresholds: Sequence[float] = (), overlays: int = OVERLAYS,
                   meta: dict[str, Any] | None = None, background: int | None = -1,
                   settings: ScoreSettings = ScoreSettings(), resamples: int = RESAMPLES, seed: int = 0
                   ) -> dict[str, Any]:
    """Predict every pair's image and compare with its mask at the mask's original size.

    Dice and IoU are averaged over the scored classes of each image (binary data: the foreground; multi-class data:
    every class but a ``background`` one, by default the run's ``DataConfig.background``, None: every class; see
    :func:`unetseg.metrics.scored_classes`), and for more than two labels each class's Dice is reported too; pixels
    outside a pair's ignore mask are not scored. A class absent from both an image's mask and its prediction scores
    NaN and is left out of the means (an image with nothing to find and nothing found is left out of the mean over
    images). The global Dice pools the pixels
    of all images.

    Raises:
        DataError: when ``pairs`` is empty, or a mask or ignore mask does not fit its image.

    Args:
        predictor: the trained model.
        pairs: image/mask pairs (e.g. from :func:`unetseg.data.find_pairs`).
        out_dir: when given, ``per_image.csv`` and ``summary.json`` are written there, and error overlays of the
            ``overlays`` worst and best scored images (``overlays/worst_01_<stem>.jpg``, ``best_01_...``: missed
            pixels red, extra pixels blue, the predicted edges yellow; see :mod:`unetseg.drawing.overlays`).
        meta: facts to store in ``summary.json`` with the scores (e.g. the split).
        thresholds: for a binary model, foreground probabilities to score too (``threshold_dice``: the mean Dice
            at each, an image with nothing to find and nothing found counting 1.0 so that every threshold is averaged
            over the same images), for ``unetseg evaluate --tune-threshold``.

    The field's multi-class scores come from the confusion matrix pooled over all images (the CamVid / Cityscapes
    protocol): IoU and Dice per class, the mean IoU over the scored classes (``miou``) and the global pixel accuracy;
    pixels of ignored (void) values count nowhere. With ``out_dir``, ``confusion.csv`` (pixel counts, rows the true
    class) and ``confusion.png`` (rows normalised) are written too.

    Every score of :func:`unetseg.score.score_image` is computed per image (``settings``: which, and how; a binary
    model's probabilities give the ranking scores), and each mean over images and each pooled score comes with its
    bootstrap interval (``resamples``, ``seed``): ``unetseg score`` of the masks ``predict`` writes gives the same.

    Returns:
        ``{"images", "mean_dice", "image_mean_iou", "global_dice", "miou", "pixel_accuracy", "metrics", "pooled",
        "interval", "per_class": [{"class", "name", "iou", "dice", "pixels", ...}, ...], "per_image": [{"image",
        "dice", "iou", ...}, ...]}`` (:func:`unetseg.score.rows_and_summary`),
        ``"threshold_dice": {threshold: mean Dice}`` where thresholds are given, and with ``out_dir``
        ``"worst"`` / ``"best"``: ``[{"image", "dice", "overlay"}, ...]`` (overlay file names in ``out_dir``).
    """
    if not pairs:
        raise DataError("nothing to evaluate: no image/mask pairs (check --data, --images/--masks or --split)")
    labels = max(2, predictor.config.model.num_classes)
    names = class_names(predictor.config.data.class_names, labels)
    scored = scored_classes(labels, check_background(predictor.config.data.background if background == -1
                                                     else background, labels))
    binary = predictor.config.model.num_classes == 1
    by_threshold: dict[float, list[float]] = {float(t): [] for t in thresholds} if binary else {}
    drawn = _Extremes(overlays if out_dir is not None else 0)
    named: list[tuple[str, ImageScores]] = []
    for pair, logits, pred, classes, scores in _scored_pairs(predictor, pairs, progress, labels, scored, settings):
        named.append((pair.image.name, scores))
        drawn.offer(scores.row["dice"], pair, pred, classes)
        if by_threshold:  # every threshold from one histogram of the scores, where they are
            target = torch.from_numpy(classes)
            for dices, dice_t in zip(by_threshold.values(), threshold_dice(logits, target, list(by_threshold))):
                dices.append(1.0 if dice_t != dice_t else dice_t)  # nothing to find, nothing found: right, at any t
    rows, summary = rows_and_summary(named, settings, scored, names, resamples, seed)
    if by_threshold:
        summary["threshold_dice"] = {t: nan_mean(d) for t, d in by_threshold.items()}
    if out_dir is not None:
        summary.update(drawn.draw(Path(out_dir) / "overlays"), **(meta or {}))
        write_scores(out_dir, rows, summary, np.stack([s.confusion for _, s in named]).sum(0), names)
    return {**summary, "per_image": rows}


def _scored_pairs(predictor: Predictor, pairs: list[Pair], progress: bool, labels: int, scored: list[int],
                  settings: ScoreSettings) -> Iterator[tuple[Pair, torch.Tensor, np.ndarray, np.ndarray, ImageScores]]:
    """Per pair: its logits at the image's size, the predicted classes, the true classes (ignored pixels IGNORE)
    and the image's scores."""
    by_image = {p.image: p for p in pairs}
    snap = predictor.config.data.snap_masks
    binary = predictor.config.model.num_classes == 1
    scored_paths = predictor.predict_paths([p.image for p in pairs], progress=progress)
    with closing(scored_paths):  # a bad mask stops the model's thread at once
        for path, logits in scored_paths:
            pair = by_image[path]
            classes = true_classes(pair, predictor.encoding, snap)  # outside the ignore mask: not scored
            pred = predictor.classes(logits).cpu()
            if pred.shape != classes.shape:
                raise DataError(f"{pair.mask}: mask is {classes.shape[1]}x{classes.shape[0]} (WxH) but the image is "
                                f"{pred.shape[1]}x{pred.shape[0]}")
            probs = predictor.probabilities(logits)[0].float().cpu().numpy() if binary and settings.ranking else None
            pred_np = predictor.finish(pred.numpy().astype(np.uint8))
            yield pair, logits, pred_np, classes, score_image(pred_np, classes, labels, scored, settings, probs)


def evaluate_folds(folds: Sequence[tuple[Predictor, list[Pair]]], out_dir: str | Path, progress: bool = False,
                   background: int | None = -1, settings: ScoreSettings = ScoreSettings(),
                   resamples: int = RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """The out-of-fold evaluation of a cross-validation run: each fold's model predicts its own held-out pairs
    (every image once, by the one model that did not train on it); the scores of each fold go to
    ``out_dir/fold_N`` and those pooled over every image to ``out_dir`` (per image, per class, with intervals:
    :func:`unetseg.score.rows_and_summary`), the predicted masks to ``out_dir/predictions/masks`` (in the training
    masks' encoding) and a binary model's foreground probabilities to ``out_dir/predictions/probs`` (8-bit PNG),
    so ``unetseg score`` and ``compare`` can read them.

    Args:
        folds: per fold (in fold order), its predictor and its held-out pairs.

    Returns:
        The pooled summary with ``"per_image"`` and ``"per_fold"`` (each fold's summary).
    """
    out = Path(out_dir)
    first = folds[0][0]
    labels = max(2, first.config.model.num_classes)
    names = class_names(first.config.data.class_names, labels)
    scored = scored_classes(labels, check_background(first.config.data.background if background == -1
                                                     else background, labels))
    binary = first.config.model.num_classes == 1
    for sub in ("masks",) + (("probs",) if binary else ()):
        (out / "predictions" / sub).mkdir(parents=True, exist_ok=True)
    pooled: list[tuple[str, ImageScores]] = []
    per_fold = []
    for fold, (predictor, pairs) in enumerate(folds):
        if not pairs:
            raise DataError(f"fold {fold}: no held-out pairs to predict")
        named: list[tuple[str, ImageScores]] = []
        drawn = _Extremes(OVERLAYS)
        for pair, logits, pred, classes, scores in _scored_pairs(predictor, pairs, progress, labels, scored,
                                                                 settings):
            named.append((pair.image.name, scores))
            drawn.offer(scores.row["dice"], pair, pred, classes)
            predictor.encoding.to_image(pred).save(out / "predictions" / "masks" / f"{pair.image.stem}.png")
            if binary:
                probs = predictor.probabilities(logits)[0].float().cpu().numpy()
                Image.fromarray(np.round(probs * 255).astype(np.uint8)).save(
                    out / "predictions" / "probs" / f"{pair.image.stem}.png")
        rows, summary = rows_and_summary(named, settings, scored, names, resamples, seed)
        summary.update(drawn.draw(out / f"fold_{fold}" / "overlays"), fold=fold, model=predictor.source)
        write_scores(out / f"fold_{fold}", rows, summary, np.stack([s.confusion for _, s in named]).sum(0), names)
        per_fold.append(summary)
        pooled += named
    rows, summary = rows_and_summary(pooled, settings, scored, names, resamples, seed)
    summary.update(folds=len(folds), split="out of fold", predictions=str(out / "predictions"),
                   per_fold=[{k: f.get(k) for k in ("fold", "images", "mean_dice", "global_dice", "miou",
                                                     "pixel_accuracy")} for f in per_fold])
    write_scores(out, rows, summary, np.stack([s.confusion for _, s in pooled]).sum(0), names)
    return {**summary, "per_image": rows}


class _Extremes:
    """The ``count`` worst and best scored images, their masks kept at display size until the overlays are drawn."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.kept: list[tuple[float, int, Pair, np.ndarray, np.ndarray]] = []  # by Dice (then arrival), ascending
        self.seen = 0

    def offer(self, dice: float, pair: Pair, predicted: np.ndarray, target: np.ndarray) -> None:
        if not self.count or dice != dice:  # NaN: nothing to find and nothing found, not ranked
            return
        self.seen += 1
        full = len(self.kept) >= 2 * self.count
        if full and self.kept[self.count - 1][0] <= dice <= self.kept[-self.count][0]:
            return  # between the worst and the best kept: never drawn
        size = display_size(target.shape[::-1])
        bisect.insort(self.kept, (dice, self.seen, pair, shrink_classes(predicted, size), shrink_classes(target, size)),
                      key=lambda k: k[:2])
        del self.kept[self.count:-self.count]  # keeps all while there are at most 2 x count

    def draw(self, folder: Path) -> dict[str, list[dict[str, Any]]]:
        """Write the overlays; return the worst (worst first) and the best (best first)."""
        if not self.kept:
            return {"worst": [], "best": []}
        folder.mkdir(parents=True, exist_ok=True)
        for old in [*folder.glob("worst_*.jpg"), *folder.glob("best_*.jpg")]:  # a previous evaluation's
            old.unlink()
        ranked = self.kept
        n_worst = min(self.count, (len(ranked) + 1) // 2)
        result: dict[str, list[dict[str, Any]]] = {"worst": [], "best": []}
        for kind, chosen in (("worst", ranked[:n_worst]), ("best", ranked[n_worst:][::-1])):
            for rank, (dice, _, pair, predicted, target) in enumerate(chosen, 1):
                image = read_image(pair.image, target.shape[::-1], 3)
                name = f"{kind}_{rank:02d}_{pair.image.stem}.jpg"
                # 4:4:4 JPEG: thin coloured errors stay sharp
                error_overlay(image, predicted, target).save(folder / name, quality=90, subsampling=0)
                result[kind].append({"image": pair.image.name, "dice": dice, "overlay": f"overlays/{name}"})
        return result
