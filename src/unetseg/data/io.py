"""Decoding images and masks into uint8 arrays, once, straight to the size that is needed.

JPEGs are decoded with Pillow's draft mode: the DCT is scaled by 1/2, 1/4 or 1/8 while decoding, so a
1918x1280 Carvana photo comes out at 480x320 in 4.0 ms instead of 39 ms for a full decode and resize
(`python benchmarks/decode.py`, one thread, this 2-core EPYC).
Masks are resized with nearest neighbour only, so their values stay exactly the stored labels.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from unetseg.data.errors import DataError

Size = tuple[int, int]  # (width, height)

#: Threads for decoding: Pillow releases the GIL while decoding, so threads scale with cores.
DECODE_THREADS = min(8, os.cpu_count() or 1)


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn Pillow's errors while reading ``path`` into one-line DataErrors that name it."""
    try:
        yield
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except Image.DecompressionBombError:
        raise DataError(f"{path}: image of {_pixels(path)} pixels is over the decompression-bomb limit of "
                        f"{Image.MAX_IMAGE_PIXELS} (x2); raise it with --max-image-pixels if the file is trusted") from None
    except (OSError, SyntaxError, ValueError) as err:  # truncated / corrupt / not an image
        raise DataError(f"{path}: cannot read image ({err})") from None


def _decode(path: Path, mode: str | None = None, target: Size | None = None) -> Image.Image:
    """Open and fully decode an image; a JPEG with a ``target`` size is decoded in draft ``mode`` at the
    smallest DCT scale that still covers the target."""
    return _decode_sized(path, mode, None if target is None else lambda _: target)[0]


def _decode_sized(path: Path, mode: str | None, target: Callable[[Size], Size] | None
                  ) -> tuple[Image.Image, Size, Size | None]:
    """:func:`_decode` with the target a function of the original size, read from the header the decode opens
    (one open and one header parse a file): the image, its original size and the target."""
    with _reading(path):
        image = Image.open(path)
        size = image.size
        wanted = None if target is None else tuple(target(size))
        if wanted is not None and image.format == "JPEG":
            image.draft(mode, _draft_request(size, wanted))
        image.load()
    return image, size, wanted


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


def to_8bit(array: np.ndarray, mode: str) -> np.ndarray:
    """Greyscale deeper than 8 bits -> uint8 by the file's mode alone, never by an image's own values, so the same
    tissue keeps the same value across images, in training and prediction: integer images (16-bit, and Pillow's
    32-bit mode "I", which is how it opens 16-bit PNGs) are taken as 16-bit data, / 257, clipped; float images as
    values in [0, 1], x 255, clipped."""
    a = array.astype(np.float64)
    scaled = a * 255.0 if mode == "F" else a / 257.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def read_image(path: str | Path, size: Size | None = None, channels: int = 3) -> np.ndarray:
    """Decode an image to ``(H, W, channels)`` uint8, resized (bilinear) to ``size`` when given.

    Args:
        path: JPEG, PNG, TIFF or BMP file.
        size: (width, height) of the result, or None for the original size.
        channels: 3 (RGB) or 1 (greyscale).

    Raises:
        DataError: naming the file when it is missing, not an image or truncated.
    """
    return read_image_for(path, None if size is None else lambda _: size, channels)[0]


def read_image_for(path: str | Path, target: Callable[[Size], Size] | None, channels: int = 3
                   ) -> tuple[np.ndarray, Size]:
    """:func:`read_image` at the size ``target`` gives for the image's original (width, height) (None: the
    original), decoded as :func:`read_image` decodes it, from one open of the file; and that original size.

    Raises:
        DataError: naming the file when it is missing, not an image or truncated.
    """
    decoded, original, size = _decode_sized(Path(path), "RGB" if channels == 3 else "L", target)
    image = _as_8bit(decoded, channels)
    if size is not None and image.size != size:
        image = image.resize(size, Image.BILINEAR)
    return _array(image), original


def _as_8bit(image: Image.Image, channels: int) -> Image.Image:
    """A decoded image as 8-bit RGB (``channels`` 3) or greyscale (1); deeper images scaled by their type's range."""
    if image.mode in ("I", "I;16", "I;16L", "I;16B", "F"):
        image = Image.fromarray(to_8bit(np.asarray(image), image.mode))
    return image.convert("RGB" if channels == 3 else "L")


def _array(image: Image.Image) -> np.ndarray:
    """(H, W, C) uint8, a writable copy (torch.from_numpy warns on read-only arrays)."""
    array = np.array(image)
    return array if array.ndim == 3 else array[:, :, None]


@dataclass(frozen=True)
class MaskFile:
    """A decoded mask: stored values, its mode, palette and value counts.

    ``values`` are palette indices ("P"), grey levels ("L") or colours packed as 0xRRGGBB ("RGB").
    """

    values: np.ndarray  # (H, W) uint8 for "L" / "P", uint32 for "RGB"
    mode: str  # "L", "P" or "RGB"
    palette: tuple[int, ...] | None
    counts: dict[int, int]  # pixel count of each stored value, at the original size
    size: Size  # the original (width, height)


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) uint32 ``0xRRGGBB``."""
    rgb = rgb.astype(np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """(...) ``0xRRGGBB`` -> (..., 3) uint8."""
    packed = np.asarray(packed, dtype=np.uint32)
    return np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], axis=-1).astype(np.uint8)


def read_mask(path: str | Path, size: Size | None = None) -> MaskFile:
    """Decode a mask to its stored values: palette indices for palette images (Carvana's GIFs give {0, 1}),
    grey levels for greyscale ones, packed colours for RGB colour maps; resized with nearest neighbour (so
    values stay exact) when ``size`` is given.

    Raises:
        DataError: naming the file when it is unreadable or of an unsupported mode.
    """
    path = Path(path)
    image = _decode(path)
    palette = None
    if image.mode == "P":
        palette = tuple(image.getpalette() or ())
    elif image.mode in ("1", "LA"):
        image = image.convert("L")
    elif image.mode == "RGBA":
        image = image.convert("RGB")
    elif image.mode not in ("L", "RGB"):
        raise DataError(f"{path}: mask has mode {image.mode}; expected palette, 8-bit greyscale or RGB colours")
    if size is not None and image.size != tuple(size):
        resized = image.resize(tuple(size), Image.NEAREST)
    else:
        resized = image
    if image.mode == "RGB":
        full = pack_rgb(np.asarray(image))
        found, n = np.unique(full, return_counts=True)
        counts = dict(zip(found.tolist(), n.tolist()))
        values = pack_rgb(np.asarray(resized)) if resized is not image else full
    else:
        histogram = image.histogram()
        counts = {v: c for v, c in enumerate(histogram) if c}
        values = np.asarray(resized)
    return MaskFile(values, image.mode, palette, counts, image.size)


def image_info(path: str | Path) -> tuple[tuple[int, int], int]:
    """((width, height), channels) from the file header: 1 for greyscale modes, 3 otherwise."""
    path = Path(path)
    with _reading(path), Image.open(path) as image:
        return image.size, 1 if image.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "F") else 3
