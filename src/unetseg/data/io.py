"""Decoding images and masks into uint8 arrays, once, straight to the size that is needed.

JPEGs are decoded with Pillow's draft mode: the DCT is scaled by 1/2, 1/4 or 1/8 while decoding, so a
1918x1280 Carvana photo comes out at 480x320 in about 2.5 ms instead of 30 ms for a full decode and resize.
Masks are resized with nearest neighbour only, so their values stay exactly the stored labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from unetseg.data.errors import DataError

Size = tuple[int, int]  # (width, height)


def _decode(path: Path, mode: str | None = None, target: Size | None = None) -> Image.Image:
    """Open and fully decode an image; a JPEG with a ``target`` size is decoded in draft ``mode`` at the
    smallest DCT scale that still covers the target."""
    try:
        image = Image.open(path)
        if target is not None and image.format == "JPEG":
            image.draft(mode, _draft_request(image.size, target))
        image.load()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except Image.DecompressionBombError:
        raise DataError(f"{path}: image of {_pixels(path)} pixels is over the decompression-bomb limit of "
                        f"{Image.MAX_IMAGE_PIXELS} (x2); raise it with --max-image-pixels if the file is trusted") from None
    except (OSError, SyntaxError, ValueError) as err:  # truncated / corrupt / not an image
        raise DataError(f"{path}: cannot read image ({err})") from None
    return image


def _pixels(path: Path) -> str:
    """``"W x H = N"`` read from the header alone (the check is off while reading it)."""
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(path) as image:
            return f"{image.width} x {image.height} = {image.width * image.height}"
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def set_max_image_pixels(pixels: int) -> None:
    """Pillow's decompression-bomb limit: images over twice this many pixels are refused (Pillow's default
    is about 89 million). Raise it only for files you trust."""
    if pixels < 1:
        raise ValueError(f"max image pixels must be >= 1, got {pixels}")
    Image.MAX_IMAGE_PIXELS = pixels


def _draft_request(full: Size, target: Size) -> Size:
    """The size to ask JPEG draft mode for, so it picks the largest DCT scale whose output still covers
    ``target`` (asking for the target itself makes Pillow pick 1/2 instead of 1/4 for 1918 -> 480)."""
    for scale in (8, 4, 2):
        if -(-full[0] // scale) >= target[0] and -(-full[1] // scale) >= target[1]:
            return full[0] // scale, full[1] // scale
    return full


def read_image(path: str | Path, size: Size | None = None, channels: int = 3) -> np.ndarray:
    """Decode an image to ``(H, W, channels)`` uint8, resized (bilinear) to ``size`` when given.

    Args:
        path: JPEG, PNG, TIFF or BMP file.
        size: (width, height) of the result, or None for the original size.
        channels: 3 (RGB) or 1 (greyscale).

    Raises:
        DataError: naming the file when it is missing, not an image or truncated.
    """
    path = Path(path)
    image = _decode(path, "RGB" if channels == 3 else "L", size)
    image = image.convert("RGB" if channels == 3 else "L")
    if size is not None and image.size != tuple(size):
        image = image.resize(tuple(size), Image.BILINEAR)
    array = np.asarray(image)
    return array if array.ndim == 3 else array[:, :, None]


@dataclass(frozen=True)
class MaskFile:
    """A decoded mask: stored values (palette indices for palette images), its mode and palette."""

    values: np.ndarray  # (H, W) uint8
    mode: str  # "P" or "L"
    palette: tuple[int, ...] | None
    histogram: np.ndarray  # (256,) pixel count of each stored value, at the original size


def read_mask(path: str | Path, size: Size | None = None) -> MaskFile:
    """Decode a mask to its stored values: palette indices for palette images (Carvana's GIFs give
    {0, 1}), grey levels for greyscale ones; resized with nearest neighbour when ``size`` is given.

    Raises:
        DataError: naming the file when it is unreadable or not a single-channel 8-bit mask.
    """
    path = Path(path)
    image = _decode(path)
    palette = None
    if image.mode == "P":
        palette = tuple(image.getpalette() or ())
    elif image.mode == "1":
        image = image.convert("L")
    elif image.mode != "L":
        raise DataError(f"{path}: mask has mode {image.mode}; expected a palette or 8-bit greyscale image")
    histogram = np.asarray(image.histogram(), dtype=np.int64)
    if size is not None and image.size != tuple(size):
        image = image.resize(tuple(size), Image.NEAREST)
    return MaskFile(np.asarray(image), image.mode, palette, histogram)
