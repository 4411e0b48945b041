"""What shrinking destroys: the resolution ceiling (the best Dice per class a model trained at a size can reach at
the masks' own size) of the four shared datasets at the budget plan's candidate sizes.

    python benchmarks/resolution.py [--data ../shared/data]

Masks only, no model: each sampled mask (12, spread over the files) is shrunk with nearest neighbour as training
does, its classes enlarged back bilinearly as predictions are, and scored against the original
(unetseg.data.ceiling). The plan reads the ceiling of the run's score (the foreground's Dice, or the mean over
classes): where it falls under 0.90 at a size of its ladder, it trains full-resolution patches.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from unetseg.data.ceiling import dataset_ceiling, dice_from_iou
from unetseg.data.io import read_mask
from unetseg.train.plan import FINE_LADDER, LADDER, SEED_PIXELS, size_for

SETS = {"carvana_sample": ("train_masks", ()), "membrane": ("label", ()), "drive": ("label", ()),
        "camvid_val": ("labels", (11,))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
    args = parser.parse_args()
    for name, (folder, ignore) in SETS.items():
        paths = sorted((Path(args.data) / name / folder).iterdir())
        if not paths:
            continue
        h, w = read_mask(paths[0]).values.shape[:2]
        scales = sorted({s for _, s in LADDER + FINE_LADDER})
        sizes = sorted({size_for(w / h, min(s, w * h / SEED_PIXELS), (w, h)) for s in scales} - {(w, h)})
        t0 = time.perf_counter()
        rows, k = dataset_ceiling(paths, sizes, ignore)
        print(f"{name}: {w}x{h}, {k} classes, 12 of {len(paths)} masks ({time.perf_counter() - t0:.1f} s, cached after)")
        for size, row in zip(sizes, dice_from_iou(rows)):
            worst = int(np.nanargmin(row))
            print(f"  {size[0]:4d}x{size[1]:<4d} ({size[0] / w:.2f} of the width)  worst class {worst}: Dice <= "
                  f"{row[worst]:.3f}   mean over classes {np.nanmean(row):.3f}")


if __name__ == "__main__":
    main()
