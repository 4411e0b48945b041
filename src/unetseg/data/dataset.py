"""A dataset held in memory as uint8 arrays at the training size, decoded once with a thread pool."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from unetseg.data.encoding import MaskEncoding, detect_encoding
from unetseg.data.errors import DataError
from unetseg.data.io import Size, read_image, read_mask
from unetseg.data.pairing import Pair

logger = logging.getLogger(__name__)


@dataclass
class ArrayDataset:
    """Decoded pairs at one size.

    Attributes:
        images: (N, H, W, C) uint8.
        masks: (N, H, W) uint8 class indices.
        pairs: the source files, in the same order.
        encoding: how class indices are stored in the mask files.
    """

    images: np.ndarray
    masks: np.ndarray
    pairs: list[Pair]
    encoding: MaskEncoding

    def __len__(self) -> int:
        return len(self.pairs)

    def subset(self, indices: list[int]) -> ArrayDataset:
        """The examples at ``indices`` (copies of the arrays)."""
        return ArrayDataset(self.images[indices], self.masks[indices], [self.pairs[i] for i in indices], self.encoding)


def load_dataset(pairs: list[Pair], size: Size, channels: int, num_classes: int,
                 encoding: MaskEncoding | None = None, progress: bool = True) -> ArrayDataset:
    """Decode every pair once to ``size`` and map mask values to class indices.

    Args:
        pairs: from :func:`unetseg.data.pairing.find_pairs`.
        size: (width, height).
        channels: image channels, 3 or 1.
        num_classes: the model's output channels (1 = binary).
        encoding: the mask encoding to use (e.g. from a trained run); found from the masks when None.
        progress: show a progress bar.

    Raises:
        DataError: naming the first file that cannot be read or does not fit the others.
    """
    width, height = size
    images = np.empty((len(pairs), height, width, channels), dtype=np.uint8)
    stored = np.empty((len(pairs), height, width), dtype=np.uint8)
    histograms = np.empty((len(pairs), 256), dtype=np.int64)
    modes: list[str] = [""] * len(pairs)
    palettes: list[tuple[int, ...] | None] = [None] * len(pairs)

    def decode(i: int) -> None:
        images[i] = read_image(pairs[i].image, size, channels)
        mask = read_mask(pairs[i].mask, size)
        stored[i], histograms[i], modes[i], palettes[i] = mask.values, mask.histogram, mask.mode, mask.palette

    # Pillow releases the GIL while decoding, so threads scale with cores.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for _ in tqdm(pool.map(decode, range(len(pairs))), total=len(pairs), desc="decode", unit="img",
                      disable=None if progress else True, leave=False):
            pass
    if encoding is None:
        encoding = detect_encoding(histograms, modes, palettes, [p.mask for p in pairs], num_classes)
        logger.info("mask encoding: values %s (class index = position)%s", list(encoding.values),
                    ", palette masks" if encoding.palette else "")
    masks = np.empty_like(stored)
    for i, pair in enumerate(pairs):
        masks[i] = encoding.to_classes(stored[i], pair.mask)
    return ArrayDataset(images, masks, list(pairs), encoding)


def split_by_group(pairs: list[Pair], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded, reproducible train/validation split that keeps each group (Carvana: car) on one side.

    Returns:
        (train indices, validation indices); validation is empty when ``val_fraction`` is 0 or there is one group.
    """
    groups = sorted({p.group for p in pairs})
    rng = np.random.default_rng(seed)
    order = [groups[i] for i in rng.permutation(len(groups))]
    n_val = 0 if val_fraction == 0 or len(groups) < 2 else min(len(groups) - 1, max(1, round(val_fraction * len(groups))))
    val_groups = set(order[:n_val])
    train = [i for i, p in enumerate(pairs) if p.group not in val_groups]
    val = [i for i, p in enumerate(pairs) if p.group in val_groups]
    return train, val


def pairs_from_split(pairs: list[Pair], names: list[str]) -> list[Pair]:
    """The pairs whose image file names are in ``names`` (a split saved with a run), in ``names`` order."""
    by_name = {p.image.name: p for p in pairs}
    missing = [n for n in names if n not in by_name]
    if missing:
        folder = pairs[0].image.parent if pairs else Path(".")
        raise DataError(f"{folder}: {len(missing)} image(s) of the run's split are missing, e.g. {missing[0]}")
    return [by_name[n] for n in names]
