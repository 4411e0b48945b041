"""A 10,000 x 10,000 RGB photo predicted by sliding windows (a patch run): peak memory and windows/s.

    python benchmarks/large_image.py [--side 10000] [--patch 256] [--base 8]

The weights are random (memory and speed do not depend on them). Peak memory is the process's maximum resident set
size, Python and torch included; goal: under 4 GiB on a CPU.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from unetseg import Predictor, RunConfig, UNet, predict_folder
from unetseg.data.io import set_max_image_pixels
from unetseg.infer.windows import window_starts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=10_000)
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--base", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    set_max_image_pixels(args.side * args.side + 1)
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "large.jpg"
        image = Image.new("RGB", (args.side, args.side))
        for top in range(0, args.side, 500):  # made in bands: the making stays below the prediction's memory
            yy, xx = np.mgrid[top:min(top + 500, args.side), 0:args.side]
            band = np.stack([xx * 255 // args.side, yy * 255 // args.side, (xx + yy) % 256], axis=-1)
            image.paste(Image.fromarray(band.astype(np.uint8)), (0, top))
        image.save(photo, quality=90)
        del image, band, yy, xx
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        cfg = RunConfig()
        cfg.model.base_channels = args.base
        cfg.data.image_size = cfg.data.patch = (args.patch, args.patch)
        torch.manual_seed(0)
        predictor = Predictor(UNet(cfg.model), cfg, device="cpu", batch_size=args.batch)
        windows = len(window_starts(args.side, args.patch, predictor.overlap)) ** 2
        t0 = time.perf_counter()
        predict_folder(predictor, photo, Path(tmp) / "pred", overlays=False)
        seconds = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        mask = Image.open(Path(tmp) / "pred" / "masks" / "large.png")
        print(f"{args.side}x{args.side} RGB, windows {args.patch}x{args.patch} overlap {predictor.overlap}, "
              f"U-Net base {args.base}, batch {args.batch}, precision {predictor.dtype or torch.float32}: "
              f"{windows} windows in {seconds:.1f} s ({windows / seconds:.1f} windows/s); mask {mask.size[0]}x"
              f"{mask.size[1]}; peak memory {peak:.2f} GiB (before predicting: {before:.2f} GiB, the test image's "
              f"making included)")


if __name__ == "__main__":
    main()
