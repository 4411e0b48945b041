"""What drawing the learning curves costs a training run: seconds to redraw ``curves.png`` at an epoch end for runs
of 10, 100 and 1,000 epochs (median of repeats, written to a file as training does), and the one-off matplotlib
import of the first epoch.

    python benchmarks/report_speed.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def records(epochs: int, classes: int = 1) -> list[dict]:
    """Metrics records of a run of ``epochs`` epochs, shaped like ``metrics.jsonl``."""
    out = []
    for e in range(1, epochs + 1):
        r = {"epoch": e, "step": 10 * e, "train_loss": 0.7 * math.exp(-e / epochs * 4) + 0.02,
             "lr": 1e-3 * 0.5 * (1 + math.cos(math.pi * e / epochs)), "seconds": 30.0, "images_per_s": 8.0,
             "val_loss": 0.8 * math.exp(-e / epochs * 3) + 0.05, "val_dice": 1 - 0.5 * math.exp(-e / epochs * 5)}
        if classes > 1:
            r["val_dice_per_class"] = [r["val_dice"] - 0.01 * k for k in range(classes)]
        out.append(r)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    code = "import time; t = time.perf_counter(); import matplotlib.figure; print(time.perf_counter() - t)"
    imports = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
               for _ in range(3)]
    print(f"matplotlib import (once per training process, at the first epoch end): {statistics.median(imports):.2f} s")
    from unetseg.drawing.curves import plot_curves

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "curves.png"
        plot_curves({"warm-up": records(3)}, out)
        for epochs, classes in ((10, 1), (100, 1), (100, 4), (1000, 1)):
            runs = {"run": records(epochs, classes)}
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                plot_curves(runs, out)
                times.append(time.perf_counter() - t0)
            print(f"curves.png of a {epochs:4d}-epoch run, {classes} class(es): {statistics.median(times):.3f} s "
                  f"(min {min(times):.3f}, {out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
