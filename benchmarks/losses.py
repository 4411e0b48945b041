"""Losses and class weights for imbalanced classes: held-out mIoU on CamVid frames and Dice on DRIVE vessels, every
arm trained the same number of steps with the same model, size, batch, schedule, augmentation and split.

    python benchmarks/losses.py [--data-root ../shared/data] [--steps 500] [--only camvid|drive] [--out DIR]

Arms: ce (the seed's cross-entropy / BCE), ce + median-frequency weights, dice, dice_ce (nnU-Net), dice_ce + weights.
The recipe is a budget run's (Adam 1e-3, warm-up and one cosine decay, colour augmentation, batch-norm recalibration,
batch 8) with the step count fixed, so the arms compare at equal work whatever the machine's load.
  camvid  camvid_val, void (11) ignored, 10 contiguous blocks of frames with 2 held out (20 frames), 320x240, base 16;
          scored as the field does: IoU per class from the confusion matrix pooled over the held-out frames, mIoU.
  drive   the 20 DRIVE training images, 4 held out, field of view only, 288x296, base 16; mean Dice at 565x584.
Prints one line per arm (training seconds, score, and the per-class IoU for CamVid) and a JSON line per arm.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from patches import run  # the benchmarks' one way to run the CLI (python benchmarks/losses.py: this folder is first)

ROOT = Path(__file__).resolve().parents[1]
ARMS = {"ce": ["--loss", "ce"], "ce+weights": ["--loss", "ce", "--class-weights", "auto"], "dice": ["--loss", "dice"],
        "dice_ce": ["--loss", "dice_ce"], "dice_ce+weights": ["--loss", "dice_ce", "--class-weights", "auto"]}
RECIPE = ["--batch-size", "8", "--lr", "1e-3", "--schedule", "cosine", "--warmup-steps", "20", "--bn-recalibrate",
          "--brightness", "0.3", "--contrast", "0.3", "--saturation", "0.5", "--gamma", "0.25", "--scale-limit", "0.1",
          "--base-channels", "16", "--no-progress"]
CAMVID_CLASSES = ("sky", "building", "pole", "road", "pavement", "tree", "sign", "fence", "car", "pedestrian",
                  "bicyclist")


def datasets(root: Path) -> dict[str, list[str]]:
    """Each dataset's data flags."""
    drive = root / "drive"
    return {
        "camvid": ["--data", str(root / "camvid_val"), "--ignore-index", "11", "--class-names", *CAMVID_CLASSES,
                   "--split", "blocks", "--val-fraction", "0.2", "--image-size", "320x240",
                   "--hflip-p", "0.5", "--vflip-p", "0", "--rotate-limit", "10"],
        "drive": ["--images", str(drive / "image"), "--masks", str(drive / "label"),
                  "--image-pattern", "{id}_training.tif", "--mask-pattern", "{id}_manual1.gif",
                  "--ignore-masks", str(drive / "fov_mask"), "--ignore-pattern", "{id}_training_mask.gif",
                  "--val-fraction", "0.2", "--image-size", "288x296"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(ROOT / ".." / "shared" / "data"))
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--only", choices=["camvid", "drive"])
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--out", help="folder for the runs (default: a temporary one)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="unetseg-losses-"))
    unetseg = [sys.executable, "-m", "unetseg"]
    for name, flags in datasets(Path(args.data_root)).items():
        if args.only and name != args.only:
            continue
        for arm in args.arms:
            folder = out / f"{name}-{arm}"
            seconds = run([*unetseg, "train", *flags, *RECIPE, *ARMS[arm], "--max-steps", str(args.steps),
                           "--epochs", "100000", "--val-every", "1000", "--out", str(folder), "--overwrite"])
            run([*unetseg, "evaluate", "--model", str(folder), "--split", "val", "--out", str(folder / "eval")])
            summary = json.loads((folder / "eval" / "summary.json").read_text())
            per_class = {c["name"]: round(c["iou"], 4) for c in summary["per_class"]}
            score = summary["miou"] if name == "camvid" else summary["mean_dice"]
            print(f"{name:7s} {arm:16s} {seconds:6.0f} s  {'mIoU' if name == 'camvid' else 'Dice'} {score:.4f}"
                  + (f"  pixel acc {summary['pixel_accuracy']:.4f}  " + " ".join(f"{k} {v:.3f}" for k, v in
                                                                          per_class.items()) if name == "camvid"
                     else f"  global Dice {summary['global_dice']:.4f}"), flush=True)
            print(json.dumps({"dataset": name, "arm": arm, "seconds": round(seconds), "score": score,
                              "pixel_accuracy": summary["pixel_accuracy"], "iou": per_class}), flush=True)


if __name__ == "__main__":
    main()
