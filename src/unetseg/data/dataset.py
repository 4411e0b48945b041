"""A dataset held in memory as uint8 arrays at the training size, decoded once with a thread pool, and the
checks that run while it is decoded (``unetseg check-data`` prints them; ``unetseg train`` refuses to start on errors)."""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from unetseg.data.classes import ClassEntry
from unetseg.data.encoding import IGNORE, MaskEncoding, detect_encoding, rare_labels, void_hints
from unetseg.data.errors import DataError, raise_problems
from unetseg.data.io import DECODE_THREADS, Size, image_info, read_image, read_mask
from unetseg.data.pairing import Pair, Pairing

logger = logging.getLogger(__name__)


@dataclass
class ArrayDataset:
    """Decoded pairs at one size; a subset shares the arrays (which may be a memory-mapped file) and keeps row numbers.

    Attributes:
        images: (N, H, W, C) uint8.
        masks: (N, H, W) uint8 class indices; IGNORE (255) where an ignore mask excludes the pixel.
        pairs: the source files of this dataset's examples, in order.
        encoding: how class indices are stored in the mask files.
        rows: the rows of ``images`` / ``masks`` that are this dataset's examples (None: all of them).
    """

    images: np.ndarray
    masks: np.ndarray
    pairs: list[Pair]
    encoding: MaskEncoding
    rows: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.pairs)

    def row_numbers(self) -> np.ndarray:
        """The rows of the shared arrays, one per example."""
        return np.arange(len(self.images)) if self.rows is None else self.rows

    def subset(self, indices: list[int]) -> ArrayDataset:
        """The examples at ``indices``, sharing the arrays (nothing is copied)."""
        return ArrayDataset(self.images, self.masks, [self.pairs[i] for i in indices], self.encoding,
                            self.row_numbers()[np.asarray(indices, dtype=np.int64)])

    def take(self, positions: slice | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(images, masks) of the examples at ``positions``, read from the shared arrays."""
        rows = self.row_numbers()[positions]
        return self.images[rows], self.masks[rows]


@dataclass
class DataReport:
    """What the checks found: facts for the report, errors (training refuses to start) and warnings."""

    rule: str
    pairs: int = 0
    image_sizes: Counter = field(default_factory=Counter)
    channels: int = 3
    encoding: MaskEncoding | None = None
    class_pixels: list[int] = field(default_factory=list)
    void_pixels: int = 0  # pixels of ignored (void) mask values, at the original size
    names: list[str] = field(default_factory=list)  # the class names
    colours: list[str] = field(default_factory=list)  # their display colours (#rrggbb) from a classes file
    ignore_masks: int = 0
    ignored_share: float = 0.0  # of the pixels of the pairs that have an ignore mask, at the training size
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def raise_errors(self) -> None:
        """One DataError with every error, the first in front."""
        raise_problems(self.errors)


def load_dataset(pairing: Pairing | list[Pair], size: Size, channels: int | None = None, num_classes: int | None = None,
                 encoding: MaskEncoding | None = None, invert: bool = False, snap: bool = False,
                 progress: bool = True, cache_file: Path | None = None, ignore: tuple[int, ...] = (),
                 table: list[ClassEntry] | None = None, table_path: str = "") -> tuple[ArrayDataset | None, DataReport]:
    """Check and decode every pair once to ``size``; map mask values to class indices.

    Args:
        pairing: from :func:`unetseg.data.pairing.pair_files` (its problems become errors), or a list of pairs.
        size: (width, height).
        channels: image channels (3 RGB, 1 greyscale), or None to follow the images (1 when all are greyscale).
        num_classes: the model's outputs (1 = binary) when fixed, or None to follow the masks.
        encoding: the mask encoding of a trained run; found from the masks when None.
        invert, snap: see :func:`unetseg.data.encoding.detect_encoding`.
        progress: show a progress bar.
        cache_file: keep the decoded images in this .npy file, memory-mapped, instead of in RAM (datasets larger
            than memory); None keeps them in RAM.
        ignore: stored mask values that count nowhere (void).
        table, table_path: the entries of a classes file and its path: the labels, whatever the masks hold.

    Returns:
        (dataset, report); the dataset is None when the report has errors.
    """
    if not isinstance(pairing, Pairing):
        pairing = Pairing(list(pairing), "given")
    pairs = pairing.pairs
    report = DataReport(pairing.rule, len(pairs), errors=list(pairing.problems))
    infos: list[tuple[Size, int] | None] = [None] * len(pairs)
    for i, pair in enumerate(pairs):
        try:
            infos[i] = image_info(pair.image)
        except DataError as err:
            report.errors.append(str(err))
    report.image_sizes = Counter(info[0] for info in infos if info)
    trained = {info[1] for p, info in zip(pairs, infos) if info and p.split != "val"}  # channel counts of training
    odd = next(((p, info[1]) for p, info in zip(pairs, infos)
                if info and p.split == "val" and trained and info[1] not in trained), None)
    if odd:  # a validation folder of another kind of image
        kind = {1: "greyscale", 3: "colour"}
        report.errors.append(f"{odd[0].image}: validation image is {kind[odd[1]]} but the training images are "
                             f"{' and '.join(kind[c] for c in sorted(trained))}")
    if channels is None:
        channels = 1 if infos and all(info is not None and info[1] == 1 for info in infos) else 3
    report.channels = channels

    width, height = size
    shape = (len(pairs), height, width, channels)
    if cache_file is not None:
        images = np.lib.format.open_memmap(cache_file, mode="w+", dtype=np.uint8, shape=shape)
    else:
        images = np.zeros(shape, dtype=np.uint8)
    stored: list[np.ndarray | None] = [None] * len(pairs)
    valid: list[np.ndarray | None] = [None] * len(pairs)
    masks_read: list = [None] * len(pairs)

    def decode(i: int) -> str | None:
        pair = pairs[i]
        try:
            images[i] = read_image(pair.image, size, channels)
            mask = read_mask(pair.mask, size)
            image_size = infos[i][0] if infos[i] else None
            if image_size is not None and mask.size != image_size:
                return f"{pair.mask}: mask is {mask.size[0]}x{mask.size[1]} but its image {pair.image.name} is " \
                       f"{image_size[0]}x{image_size[1]}"
            if pair.ignore is not None:
                keep = read_mask(pair.ignore, size)
                if keep.size != mask.size:
                    return f"{pair.ignore}: ignore mask is {keep.size[0]}x{keep.size[1]} but the mask is " \
                           f"{mask.size[0]}x{mask.size[1]}"
                valid[i] = keep.values != 0
            stored[i], masks_read[i] = mask.values, mask
        except DataError as err:
            return str(err)
        return None

    with ThreadPoolExecutor(max_workers=DECODE_THREADS) as pool:
        for problem in tqdm(pool.map(decode, range(len(pairs))), total=len(pairs), desc="decode", unit="img",
                            disable=None if progress else True, leave=False):
            if problem:
                report.errors.append(problem)
    ok = [i for i in range(len(pairs)) if masks_read[i] is not None]
    if not ok:
        report.errors.append(f"{pairs[0].mask.parent if pairs else 'dataset'}: no readable pairs")
        return None, report
    if encoding is None:
        try:
            encoding, report.notes = detect_encoding([masks_read[i].counts for i in ok], [masks_read[i].mode for i in ok],
                                                     [masks_read[i].palette for i in ok], [pairs[i].mask for i in ok],
                                                     num_classes, invert, snap, ignore, table, table_path)
        except DataError as err:
            report.errors.append(str(err))
            return None, report
        report.warnings += void_hints(table, table_path, encoding)
    report.encoding = encoding
    if table is None:  # declared classes are not annotation slips
        report.warnings += rare_labels([masks_read[i].counts for i in ok], [pairs[i].mask for i in ok], encoding)
    classes = np.zeros((len(pairs), height, width), dtype=np.uint8)
    report.class_pixels = [0] * encoding.num_labels
    for i in ok:
        try:
            classes[i] = encoding.to_classes(stored[i], pairs[i].mask, snap)
        except DataError as err:
            report.errors.append(str(err))
            continue
        for value, n in masks_read[i].counts.items():
            k = encoding.values.index(value) if value in encoding.values else None
            if k is not None:
                report.class_pixels[k] += n
            elif value in encoding.ignore:
                report.void_pixels += n
        if not (classes[i] > 0).any():
            report.warnings.append(f"{pairs[i].mask}: empty mask (background only)")
        if valid[i] is not None:
            classes[i][~valid[i]] = IGNORE
            report.ignore_masks += 1
            report.ignored_share += float((~valid[i]).mean())
    report.ignored_share /= max(1, report.ignore_masks)
    if report.errors:
        return None, report
    return ArrayDataset(images, classes, list(pairs), encoding), report
