"""How class indices are stored in mask files, found from the training masks and used in reverse when
predictions are written, so a predicted mask has the encoding and colours of the training masks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from unetseg.data.errors import DataError

_UNKNOWN = 255


@dataclass(frozen=True)
class MaskEncoding:
    """Stored value of each class index, plus the palette of palette masks.

    Example:
        Carvana's GIFs: ``MaskEncoding(values=(0, 1), palette=(0, 0, 0, 255, 255, 255))``;
        greyscale PNGs with white foreground: ``MaskEncoding(values=(0, 255))``.
    """

    values: tuple[int, ...]
    palette: tuple[int, ...] | None = None

    @property
    def num_labels(self) -> int:
        return len(self.values)

    def lut(self) -> np.ndarray:
        """(256,) uint8 table from stored value to class index; values not in the encoding map to 255."""
        table = np.full(256, _UNKNOWN, dtype=np.uint8)
        table[list(self.values)] = np.arange(len(self.values), dtype=np.uint8)
        return table

    def to_classes(self, stored: np.ndarray, path: str | Path) -> np.ndarray:
        """Map stored values (H, W) to class indices (H, W) uint8.

        Raises:
            DataError: naming ``path`` and the values that are not in the encoding.
        """
        classes = self.lut()[stored]
        if (classes == _UNKNOWN).any():
            bad = sorted(set(np.unique(stored).tolist()) - set(self.values))
            raise DataError(f"{path}: mask values {bad[:10]} are not among the dataset's labels {list(self.values)}")
        return classes

    def to_image(self, classes: np.ndarray) -> Image.Image:
        """A mask image of class indices (H, W) in this encoding: a palette image when the training masks
        were palette images (same palette), else greyscale with the stored values."""
        stored = np.asarray(self.values, dtype=np.uint8)[classes]
        if self.palette is None:
            return Image.fromarray(stored, mode="L")
        image = Image.fromarray(stored, mode="P")
        image.putpalette(list(self.palette))
        return image


def detect_encoding(histograms: np.ndarray, modes: Sequence[str], palettes: Sequence[tuple[int, ...] | None],
                    paths: Sequence[Path], num_classes: int) -> MaskEncoding:
    """Find the encoding of a set of masks from their value histograms.

    Args:
        histograms: (N, 256) pixel count of each stored value per mask.
        modes, palettes, paths: per mask, from :func:`unetseg.data.io.read_mask`.
        num_classes: the model's output channels (1 = binary).

    Raises:
        DataError: when modes are mixed, or the values found do not fit ``num_classes``.
    """
    if any(m != modes[0] for m in modes):
        odd = next(i for i, m in enumerate(modes) if m != modes[0])
        raise DataError(f"{paths[odd]}: mask mode {modes[odd]} differs from {paths[0]} ({modes[0]})")
    values = tuple(int(v) for v in np.flatnonzero(histograms.sum(axis=0)))
    labels = 2 if num_classes == 1 else num_classes
    if len(values) > labels:
        raise DataError(f"{paths[0].parent}: masks hold {len(values)} distinct values {list(values)[:20]} but the "
                        f"model has {labels} labels; set --num-classes to the number of classes")
    if len(values) < 2 and num_classes == 1:
        raise DataError(f"{paths[0].parent}: every mask holds only the value {values[0]}; nothing to learn")
    palette = None
    if modes[0] == "P":
        palette = max((p for p in palettes if p), key=len, default=None)
    return MaskEncoding(values=values, palette=palette)
