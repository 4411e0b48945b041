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


#: Class names of the multi-class synthetic set (class 0 is the background), and the void value at object edges.
MULTICLASS_NAMES = ("background", "disc", "box", "line")
VOID = 255


def make_multiclass_sample(rng: np.random.Generator, size: tuple[int, int],
                           void_edges: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One image (H, W, 3) uint8 and its label map (H, W) uint8: 0 background, 1 discs, 2 boxes, 3 thin lines (a
    rare class), each with its own texture; with ``void_edges`` a one-pixel ring of VOID (255) around every object,
    as annotators leave edges unlabelled (Pascal VOC)."""
    w, h = size
    labels = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(labels)
    for _ in range(rng.integers(1, 3)):
        cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
        r = rng.uniform(0.08, 0.2) * min(w, h)
        if rng.random() < 0.5:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
        else:
            draw.rectangle([cx - r, cy - 0.7 * r, cx + r, cy + 0.7 * r], fill=2)
    x0, x1 = sorted(rng.uniform(0, w, 2))
    draw.line([(x0, rng.uniform(0, h)), (x1, rng.uniform(0, h))], fill=3, width=4)
    label = np.asarray(labels).copy()
    textures = [_texture(rng, h, w, stripes=k > 0) for k in range(4)]
    tint = np.array([[0, 0, 0], [0.25, -0.1, -0.1], [-0.1, 0.25, -0.1], [-0.1, -0.1, 0.3]], dtype=np.float32)
    image = np.zeros((h, w, 3), dtype=np.float32)
    for k in range(4):
        image = np.where((label == k)[..., None], textures[k] + tint[k], image)
    image = image + rng.normal(0, 0.04, size=(h, w, 3))
    if void_edges:
        padded = np.pad(label, 1, mode="edge")
        edge = np.zeros_like(label, dtype=bool)
        for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
            edge |= padded[dy:dy + h, dx:dx + w] != label
        label[edge & (label > 0)] = VOID  # the objects' outer pixels
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8), label


def make_multiclass_dataset(out: str | Path, count: int = 60, size: tuple[int, int] = (96, 64), seed: int = 0,
                            void_edges: bool = True) -> Path:
    """Write ``count`` multi-class pairs as ``out/images/NNNN.png`` + ``out/masks/NNNN.png`` (grey levels 0-3, and
    255 = void at the objects' edges) and ``out/classes.csv`` (value, name, colour; 255 named void).

    Returns:
        ``out``, ready for ``unetseg train --data OUT --classes OUT/classes.csv --ignore-index 255``.
    """
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        image, mask = make_multiclass_sample(rng, size, void_edges)
        Image.fromarray(image).save(out / "images" / f"{i:04d}.png")
        Image.fromarray(mask).save(out / "masks" / f"{i:04d}.png")
    colours = ("#000000", "#e6194b", "#3cb44b", "#ffe119")
    rows = [f"{k},{name},{colour}" for k, (name, colour) in enumerate(zip(MULTICLASS_NAMES, colours))]
    (out / "classes.csv").write_text("value,name,colour\n" + "\n".join(rows) + f"\n{VOID},void,#ffffff\n")
    return out
