"""Decoding Carvana JPEGs to the training size: unetseg's read_image vs the plain way, side by side.

    python benchmarks/decode.py [--data ../shared/data/carvana_sample] [--size 480x320] [--repeat 3]

Prints ms per image for: a full decode + bilinear resize (what tutorials do), JPEG draft mode asked for the target size
directly (Pillow then picks the 1/2 DCT scale for 1918 -> 480), and unetseg.data.io.read_image (draft at the largest
scale that covers the target, then resize); with each one's ratio to the plain way.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

from unetseg.config import parse_size
from unetseg.data import find_pairs
from unetseg.data.io import read_image


def plain(path: Path, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB").resize(size, Image.BILINEAR))


def naive_draft(path: Path, size: tuple[int, int]) -> np.ndarray:
    image = Image.open(path)
    image.draft("RGB", size)
    return np.asarray(image.convert("RGB").resize(size, Image.BILINEAR))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/carvana_sample"))
    parser.add_argument("--size", type=parse_size, default=(480, 320))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    paths = [p.image for p in find_pairs(args.data)]
    ways = {"full decode + resize (plain)": plain, "draft(target size) + resize": naive_draft,
            "unetseg read_image": lambda p, s: read_image(p, s)}
    best = {}
    for _ in range(args.repeat):  # interleaved rounds, best of each, so machine noise hits all ways alike
        for name, fn in ways.items():
            t0 = time.perf_counter()
            for path in paths:
                fn(path, args.size)
            best[name] = min(best.get(name, float("inf")), (time.perf_counter() - t0) / len(paths))
    base = best["full decode + resize (plain)"]
    print(f"{len(paths)} JPEGs from {args.data} -> {args.size[0]}x{args.size[1]}, one thread, best of {args.repeat}")
    print(f"{'way':32s} {'ms/img':>8s} {'speed-up':>9s}")
    for name, seconds in best.items():
        print(f"{name:32s} {seconds * 1e3:8.2f} {base / seconds:8.1f}x")


if __name__ == "__main__":
    main()
