"""A synthetic segmentation dataset: textured shapes on textured backgrounds, so demos and tests need no
download. Foreground and background share colours; what separates them is texture and shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def _texture(rng: np.random.Generator, h: int, w: int, stripes: bool) -> np.ndarray:
    """(H, W, 3) float texture in [0, 1]: smooth colour waves, plus oriented stripes when ``stripes``."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(0.2, 0.8, size=3).astype(np.float32)
    out = np.empty((h, w, 3), dtype=np.float32)
    freq = rng.uniform(0.01, 0.05, size=2)
    smooth = 0.15 * np.sin(xx * freq[0] + rng.uniform(0, 6.3)) * np.cos(yy * freq[1] + rng.uniform(0, 6.3))
    pattern = 0.0
    if stripes:
        angle, period = rng.uniform(0, np.pi), rng.uniform(4, 9)
        pattern = 0.18 * np.sign(np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period))
    for c in range(3):
        out[..., c] = base[c] + smooth + pattern
    return out


def make_sample(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One image (H, W, 3) uint8 and its mask (H, W) uint8 with values {0, 255}.

    Args:
        size: (width, height).
    """
    w, h = size
    mask_img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask_img)
    for _ in range(rng.integers(1, 4)):
        cx, cy = rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h
        rx, ry = rng.uniform(0.08, 0.25) * w, rng.uniform(0.08, 0.25) * h
        kind = rng.integers(3)
        if kind == 0:
            draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
        elif kind == 1:
            draw.rectangle([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
        else:
            angles = np.sort(rng.uniform(0, 2 * np.pi, size=rng.integers(3, 7)))
            draw.polygon([(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in angles], fill=255)
    mask = np.asarray(mask_img)
    fg, bg = _texture(rng, h, w, stripes=True), _texture(rng, h, w, stripes=False)
    image = np.where(mask[..., None] > 0, fg, bg) + rng.normal(0, 0.05, size=(h, w, 3))
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8), mask


def make_synthetic_dataset(out: str | Path, count: int = 120, size: tuple[int, int] = (128, 96),
                           seed: int = 0) -> Path:
    """Write ``count`` pairs as ``out/images/NNNN.png`` + ``out/masks/NNNN.png`` (greyscale {0, 255}).

    Returns:
        ``out``, ready for ``unetseg train --data``.
    """
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        image, mask = make_sample(rng, size)
        Image.fromarray(image).save(out / "images" / f"{i:04d}.png")
        Image.fromarray(mask).save(out / "masks" / f"{i:04d}.png")
    return out
