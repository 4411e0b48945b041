"""``unetseg score``: masks written by any tool, scored against the true masks with the pairing rules, patterns,
ignore masks, void values, classes files and encodings of ``evaluate``."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from unetseg.config import DataConfig
from unetseg.data.check import encoding_of, names_for
from unetseg.data.classes import read_classes_file
from unetseg.data.encoding import IGNORE, MaskEncoding, detect_encoding
from unetseg.data.errors import DataError
from unetseg.data.io import read_mask
from unetseg.data.pairing import MASK_EXTENSIONS, Pair, find_pairs
from unetseg.metrics import check_background, scored_classes
from unetseg.score.files import write_scores
from unetseg.score.image import ImageScores, ScoreSettings, score_image
from unetseg.score.intervals import RESAMPLES
from unetseg.score.summary import rows_and_summary

logger = logging.getLogger(__name__)


def masks_encoding(data: DataConfig, masks: list[Path]) -> tuple[MaskEncoding, list[str]]:
    """The true masks' encoding and class names: the run's, where ``data`` holds one (``--model``), else found
    from the masks as training finds it (void values, a classes file, ``--invert-mask``)."""
    encoding = encoding_of(data)
    table = None
    if encoding is None:
        read = [read_mask(m) for m in masks]
        table = read_classes_file(data.classes) if data.classes else None
        encoding, _ = detect_encoding([r.counts for r in read], [r.mode for r in read], [r.palette for r in read],
                                      masks, None, data.invert_mask, data.snap_masks, tuple(data.ignore_index),
                                      table, data.classes)
        names, _ = names_for(data, encoding, table)
    else:
        names = list(data.class_names) if data.class_names and len(data.class_names) == encoding.num_labels \
            else names_for(dataclasses.replace(data, class_names=[]), encoding, None)[0]
    return encoding, names


def predicted_classes(values: np.ndarray, path: Path, encoding: MaskEncoding) -> np.ndarray:
    """A prediction file's values as class indices: in the true masks' encoding, or, for binary masks, any
    two-valued mask (0 and one other value that is not void: 0/1, 0/255 or a palette's index) as background and
    foreground (that value alone: all foreground).

    Raises:
        DataError: naming the file, for values outside the classes.
    """
    if encoding.num_labels == 2:
        found = set(np.unique(values).tolist())
        if found <= set(encoding.values):
            return encoding.to_classes(values, path)
        other = found - {0}
        if len(other) == 1 and not other & set(encoding.ignore):  # 0 and one value (or that value alone)
            return (values != 0).astype(np.uint8)
    classes = encoding.to_classes(values, path)
    if (classes >= encoding.num_labels).any():  # a void value predicted: not a class
        bad = sorted(np.unique(values[classes >= encoding.num_labels]).tolist())
        raise DataError(f"{path}: predicted values {encoding.describe(bad[:10])} are void, not among the classes "
                        f"{encoding.describe(encoding.values)}")
    return classes


def read_probabilities(folder: Path, stem: str, shape: tuple[int, int]) -> np.ndarray:
    """The foreground probabilities of prediction ``stem``: ``stem.npy`` (floats in [0, 1]) or ``stem.png``
    (8-bit, 0-255 for 0-1, as ``predict --save-probs`` writes them).

    Raises:
        DataError: naming the file: missing, of another size than the prediction, or outside [0, 1].
    """
    npy, png = folder / f"{stem}.npy", folder / f"{stem}.png"
    if npy.is_file():
        try:
            probs = np.load(npy, allow_pickle=False).astype(np.float64)
        except (OSError, ValueError) as err:
            raise DataError(f"{npy}: cannot read probabilities ({err})") from None
        path = npy
        probs = probs.squeeze()
        if probs.size and (np.isnan(probs).any() or probs.min() < 0 or probs.max() > 1):
            raise DataError(f"{npy}: probabilities outside [0, 1] (from {np.nanmin(probs):.4g} to "
                            f"{np.nanmax(probs):.4g})")
    elif png.is_file():
        read = read_mask(png)
        if read.mode != "L":
            raise DataError(f"{png}: probabilities must be an 8-bit greyscale PNG (0-255 for 0-1), not mode "
                            f"{read.mode}")
        probs, path = read.values.astype(np.float64) / 255.0, png
    else:
        raise DataError(f"{folder}: no probabilities for {stem} (looked for {npy.name} and {png.name})")
    if probs.shape != shape:
        got = f"{probs.shape[1]}x{probs.shape[0]}" if probs.ndim == 2 else f"of shape {probs.shape}"
        raise DataError(f"{path}: probabilities are {got} but the prediction is {shape[1]}x{shape[0]}")
    return probs


def read_class_probabilities(folder: Path, stem: str, shape: tuple[int, int], labels: int) -> np.ndarray:
    """A multi-class prediction's probabilities (K, H, W): ``stem.npy`` of that shape, or the K planes
    ``stem_class<k>.png`` that ``predict --save-probs`` writes (8-bit, 0-255 for 0-1).

    Raises:
        DataError: naming the file: missing, of another shape, or outside [0, 1].
    """
    npy = folder / f"{stem}.npy"
    if npy.is_file():
        try:
            probs = np.load(npy, allow_pickle=False).astype(np.float64)
        except (OSError, ValueError) as err:
            raise DataError(f"{npy}: cannot read probabilities ({err})") from None
        if probs.shape != (labels, *shape):
            raise DataError(f"{npy}: probabilities of shape {probs.shape}, but {labels} classes of a "
                            f"{shape[1]}x{shape[0]} prediction need ({labels}, {shape[0]}, {shape[1]})")
        if probs.size and (np.isnan(probs).any() or probs.min() < 0 or probs.max() > 1):
            raise DataError(f"{npy}: probabilities outside [0, 1] (from {np.nanmin(probs):.4g} to "
                            f"{np.nanmax(probs):.4g})")
        return probs
    planes = []
    for k in range(labels):
        png = folder / f"{stem}_class{k}.png"
        if not png.is_file():
            raise DataError(f"{folder}: no probabilities of class {k} for {stem} (looked for {npy.name} and "
                            f"{png.name})")
        read = read_mask(png)
        if read.mode != "L":
            raise DataError(f"{png}: probabilities must be an 8-bit greyscale PNG (0-255 for 0-1), not mode "
                            f"{read.mode}")
        if read.values.shape != shape:
            raise DataError(f"{png}: probabilities are {read.values.shape[1]}x{read.values.shape[0]} but the "
                            f"prediction is {shape[1]}x{shape[0]}")
        planes.append(read.values.astype(np.float64) / 255.0)
    return np.stack(planes)


def true_classes(pair: Pair, encoding: MaskEncoding, snap: bool = False) -> np.ndarray:
    """A pair's true class map at the mask's size, pixels outside its ignore mask (where it has one) IGNORE: what
    evaluate, score and the out-of-fold choices score against.

    Raises:
        DataError: naming the ignore mask when its size is not the mask's.
    """
    target = encoding.to_classes(read_mask(pair.mask).values, pair.mask, snap)
    if pair.ignore is not None:
        keep = read_mask(pair.ignore).values
        if keep.shape != target.shape:
            raise DataError(f"{pair.ignore}: ignore mask is {keep.shape[1]}x{keep.shape[0]} but the mask "
                            f"{pair.mask.name} is {target.shape[1]}x{target.shape[0]}")
        target[keep == 0] = IGNORE
    return target


def score_folder(pred: str | Path, data: DataConfig, out_dir: str | Path | None = None, probs: str | Path | None = None,
                 settings: ScoreSettings = ScoreSettings(), background: int | None = None,
                 resamples: int = RESAMPLES, seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """Score the masks in ``pred`` against the true masks ``data`` names.

    Args:
        pred: a folder of predicted masks (any tool's: one file per image, named as the images are, or by
            ``data.image_pattern``).
        data: where the true masks are (``masks``), their pattern, ignore masks, void values, classes file; a run's
            config data (``--model``) brings its encoding and class names.
        probs: a folder of a binary model's probabilities (``.npy`` or 8-bit ``.png``), for AUC, AP and best F1.
        background: multi-class: a class left out of the means (None: every class).

    Returns:
        :func:`unetseg.score.rows_and_summary`'s summary with ``"per_image"``; with ``out_dir`` the files of
        :func:`unetseg.score.files.write_scores` there.

    Raises:
        DataError: one line naming the file: a prediction without a mask or a mask without a prediction, sizes
            that differ, values outside the classes, probabilities outside [0, 1].
    """
    try:
        pairs = find_pairs(dataclasses.replace(data, data="", images=str(pred), pairs_csv=""),
                           image_extensions=MASK_EXTENSIONS)  # predictions are masks: GIF, PNG, TIFF, ...
    except DataError as err:  # the pairing's words are of images: here they are predictions
        raise DataError(str(err).replace("mask without an image in", "mask without a prediction in")
                        .replace(": no images (", ": no predictions (")) from None
    if not pairs:
        raise DataError(f"{pred}: no predictions paired with masks in {data.masks}")
    encoding, names = masks_encoding(data, [p.mask for p in pairs])
    labels = encoding.num_labels
    scored = scored_classes(labels, check_background(background, labels))
    binary = labels == 2
    named: list[tuple[str, ImageScores]] = []
    for pair in tqdm(pairs, desc="score", unit="img", disable=None if progress else True, leave=False):
        target = true_classes(pair, encoding, data.snap_masks)
        predicted = predicted_classes(read_mask(pair.image).values, pair.image, encoding)
        if predicted.shape != target.shape:
            raise DataError(f"{pair.image}: prediction is {predicted.shape[1]}x{predicted.shape[0]} but the mask "
                            f"{pair.mask.name} is {target.shape[1]}x{target.shape[0]}")
        p = None if probs is None else read_probabilities(Path(probs), pair.image.stem, target.shape) if binary \
            else read_class_probabilities(Path(probs), pair.image.stem, target.shape, labels)
        named.append((pair.image.name, score_image(predicted, target, labels, scored, settings, p)))
    rows, summary = rows_and_summary(named, settings, scored, names, resamples, seed)
    summary.update(predictions=str(pred), masks=str(data.masks or data.data), probabilities=str(probs or ""))
    if out_dir is not None:
        write_scores(out_dir, rows, summary, np.stack([s.confusion for _, s in named]).sum(0), names)
    return {**summary, "per_image": rows}
