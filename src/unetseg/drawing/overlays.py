"""Error overlays: where a prediction differs from its mask, drawn on the image at a size a person looks at.

Missed pixels (a foreground class in the mask, not predicted) and extra pixels (background in the mask, predicted as
foreground) are filled in two colours; the predicted mask's edges are drawn where the prediction is right (so that
no error, however small, hides under an edge); pixels outside an ignore mask (not scored) are dimmed.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from unetseg.data.encoding import IGNORE

MISSED = (230, 35, 35)    # red: in the mask, not predicted
EXTRA = (30, 144, 255)    # blue: predicted, not in the mask
EDGE = (255, 220, 0)      # yellow: the predicted mask's edges
DISPLAY_WIDTH = 640       # overlays are drawn at this width (or the image's, when smaller)


def display_size(size: tuple[int, int], width: int = DISPLAY_WIDTH) -> tuple[int, int]:
    """(width, height) of an image of ``size`` scaled down to ``width`` (never up), aspect ratio kept."""
    if size[0] <= width:
        return size
    return width, max(1, round(size[1] * width / size[0]))


def shrink_classes(classes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Class indices (H, W) resized to ``size`` (width, height) by nearest neighbour (labels are not blended)."""
    if classes.shape[::-1] == tuple(size):
        return classes
    rows = (np.arange(size[1]) * classes.shape[0] // size[1])[:, None]
    cols = (np.arange(size[0]) * classes.shape[1] // size[0])[None, :]
    return classes[rows, cols]


def edges(classes: np.ndarray) -> np.ndarray:
    """Boolean (H, W): the band two pixels wide along the inside of each predicted foreground region (pixels of a
    foreground class within two steps of another class), so a 1-pixel speck is all edge and background stays clear."""
    differs = np.zeros(classes.shape, dtype=bool)
    differs[:, 1:] |= classes[:, 1:] != classes[:, :-1]
    differs[:, :-1] |= classes[:, 1:] != classes[:, :-1]
    differs[1:, :] |= classes[1:, :] != classes[:-1, :]
    differs[:-1, :] |= classes[1:, :] != classes[:-1, :]
    foreground = classes > 0
    band = differs & foreground
    grown = band.copy()
    grown[1:, :] |= band[:-1, :]
    grown[:-1, :] |= band[1:, :]
    grown[:, 1:] |= band[:, :-1]
    grown[:, :-1] |= band[:, 1:]
    return grown & foreground


def error_overlay(image: np.ndarray, predicted: np.ndarray, target: np.ndarray,
                  alpha: float = 0.75) -> Image.Image:
    """The image with the errors of ``predicted`` against ``target`` coloured and the predicted edges drawn.

    Args:
        image: uint8 (H, W, 3) or (H, W) at the size of the masks.
        predicted: class indices (H, W).
        target: class indices (H, W), ``IGNORE`` where pixels are not scored.
        alpha: opacity of the error colours.
    """
    rgb = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]
    out = rgb.astype(np.float32)
    scored = target != IGNORE
    out[~scored] *= 0.35
    wrong = scored & (predicted != target)
    missed = wrong & (target > 0)
    extra = wrong & (target == 0)
    for where, colour in ((missed, MISSED), (extra, EXTRA)):
        out[where] = (1 - alpha) * out[where] + alpha * np.asarray(colour, dtype=np.float32)
    out[edges(predicted) & ~wrong] = EDGE  # over the right pixels only: an error stays visible, however small
    return Image.fromarray(out.round().astype(np.uint8))
