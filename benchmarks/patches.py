"""Patches at full resolution vs resizing every image: held-out Dice of the U-Net paper's data (ISBI 2012 membranes)
and of DRIVE (field of view only), each trained the same number of steps both ways.

    python benchmarks/patches.py [--data-root ../shared/data] [--steps 400] [--base 16] [--only drive]

Each arm runs the CLI as a user would (`unetseg train`, then `unetseg evaluate --split val --out`): the same model,
batch, learning rate, schedule, augmentation, split and number of steps; only how the images reach the model differs:
  resize  every image resized to half its size (`--image-size`), predicted whole and resized back;
  patch   random crops at the images' own resolution (`--patch`), predicted by Gaussian-blended sliding windows.
Dice is scored at each image's original size (DRIVE: inside the field-of-view masks only). Prints one line per arm:
training seconds, held-out images, mean Dice, global Dice, prediction seconds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def datasets(root: Path) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Each dataset's data flags and the training size per arm."""
    drive = root / "drive"
    return {
        "membrane": (["--data", str(root / "membrane"), "--invert-mask"],
                     {"resize": "256x256", "patch": "256x256"}),
        "drive": (["--images", str(drive / "image"), "--masks", str(drive / "label"),
                   "--image-pattern", "{id}_training.tif", "--mask-pattern", "{id}_manual1.gif",
                   "--ignore-masks", str(drive / "fov_mask"), "--ignore-pattern", "{id}_training_mask.gif"],
                  {"resize": "288x296", "patch": "256x256"}),
    }


def run(cmd: list[str]) -> float:
    """Run a command, fail loudly, return its wall seconds."""
    t0 = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return time.monotonic() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(ROOT / ".." / "shared" / "data"))
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--base", type=int, default=16)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--only", choices=["membrane", "drive"])
    parser.add_argument("--out", help="folder for the runs (default: a temporary one)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="unetseg-patches-"))
    unetseg = [sys.executable, "-m", "unetseg"]
    for name, (data_flags, sizes) in datasets(Path(args.data_root)).items():
        if args.only and name != args.only:
            continue
        for arm, size in sizes.items():
            run_dir = out / f"{name}-{arm}"
            size_flag = ["--image-size", size] if arm == "resize" else ["--patch", size]
            train = [*unetseg, "train", *data_flags, *size_flag, "--out", str(run_dir), "--overwrite",
                     "--base-channels", str(args.base), "--batch-size", str(args.batch), "--lr", "1e-3",
                     "--schedule", "cosine", "--warmup-steps", "20", "--max-steps", str(args.steps),
                     "--epochs", "100000", "--val-fraction", str(args.val_fraction), "--val-every", "1000000",
                     "--no-progress"]
            train_s = run(train)
            eval_s = run([*unetseg, "evaluate", "--model", str(run_dir), "--split", "val", "--out",
                          str(run_dir / "eval")])
            summary = json.loads((run_dir / "eval" / "summary.json").read_text())
            print(f"{name:9s} {arm:7s} {size:>8s}  train {train_s:6.0f} s  held-out {summary['images']} images  "
                  f"mean Dice {summary['mean_dice']:.4f}  global Dice {summary['global_dice']:.4f}  "
                  f"predict+score {eval_s:4.0f} s", flush=True)


if __name__ == "__main__":
    main()
