"""One model against a K-fold ensemble at the same budget, both scored on images neither trained on (DRIVE).

    python benchmarks/cv_vs_single.py [--data-root ../shared/data] [--budget 10m] [--folds 5] [--out runs/cvdrive]

The README's DRIVE command (``--val-fraction 0.2``) trains the single model; its 4 validation images are then held
out, and the same command with ``--folds K`` instead of the validation split trains on the other 16. Both are scored
on the 4 held-out images at their own size, inside the field of view; the fold ensemble both ways: the mean of the
folds' logits (``--model RUN``, nnU-Net's way for folds) and the mean of their probabilities (``--model RUN/fold_0
--model RUN/fold_1 ...``). Beside them the CV run's out-of-fold score on the 16 (``RUN/cv``). Prints a line per arm
and its JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from patches import run  # the benchmarks' one way to run the CLI (python benchmarks/...: this folder first)

ROOT = Path(__file__).resolve().parents[1]
DRIVE = ["--image-pattern", "{id}_training.tif", "--mask-pattern", "{id}_manual1.gif",
         "--ignore-pattern", "{id}_training_mask.gif"]


def link(source: Path, out: Path, ids: list[str]) -> Path:
    """A DRIVE-shaped folder of symbolic links to the images ``ids`` (image/, label/, fov_mask/)."""
    for sub, name in (("image", "{}_training.tif"), ("label", "{}_manual1.gif"), ("fov_mask", "{}_training_mask.gif")):
        (out / sub).mkdir(parents=True, exist_ok=True)
        for i in ids:
            if not (out / sub / name.format(i)).exists():
                os.symlink((source / sub / name.format(i)).resolve(), out / sub / name.format(i))
    return out


def data_flags(folder: Path) -> list[str]:
    return ["--images", str(folder / "image"), "--masks", str(folder / "label"), "--ignore-masks",
            str(folder / "fov_mask"), *DRIVE]


def scores(folder: Path) -> dict:
    """The set's mean Dice over images, pooled Dice (the papers' F1), pooled AUC and its worst image's Dice."""
    import csv

    s = json.loads((folder / "summary.json").read_text())
    with open(folder / "per_image.csv", newline="") as fh:
        dice = [float(r["dice"]) for r in csv.DictReader(fh)]
    auc = s["pooled"].get("auc", {}).get("value")
    return {"mean_dice": round(s["mean_dice"], 4), "global_dice": round(s["global_dice"], 4),
            "auc": None if auc is None else round(auc, 4), "worst_dice": round(min(dice), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(ROOT / ".." / "shared" / "data"))
    parser.add_argument("--budget", default="10m")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--out", help="folder for the runs (default: a temporary one)")
    args = parser.parse_args()
    source = Path(args.data_root) / "drive"
    if not (source / "image").is_dir():
        sys.exit(f"{source} not found")
    out = Path(args.out or tempfile.mkdtemp(prefix="unetseg-cvdrive-"))
    unetseg = [sys.executable, "-m", "unetseg"]
    single, cv = out / "single", out / f"cv{args.folds}"
    seconds = run(unetseg + ["train", *data_flags(source), "--val-fraction", "0.2", "--budget", args.budget,
                             "--out", str(single), "--overwrite"])
    held_names = json.loads((single / "split.json").read_text())["val"]
    held_ids = sorted(n.split("_")[0] for n in held_names)
    train_ids = sorted(p.name.split("_")[0] for p in (source / "image").iterdir() if p.name.split("_")[0] not in held_ids)
    held, train = link(source, out / "held", held_ids), link(source, out / "train", train_ids)
    cv_seconds = run(unetseg + ["train", *data_flags(train), "--folds", str(args.folds), "--budget", args.budget,
                                "--out", str(cv), "--overwrite"])
    arms = {"single": ([str(single)], seconds), f"{args.folds}-fold ensemble, mean of logits": ([str(cv)], cv_seconds),
            f"{args.folds}-fold ensemble, mean of probabilities":
                ([str(cv / f"fold_{k}") for k in range(args.folds)], cv_seconds)}
    cv_score = scores(cv / "cv")
    for arm, (models, train_s) in arms.items():
        folder = out / ("eval-" + arm.split(",")[-1].strip().replace(" ", "-"))
        run(unetseg + ["evaluate", *sum((["--model", m] for m in models), []), *data_flags(held), "--out",
                       str(folder)])
        row = {"arm": arm, "budget": args.budget, "train_s": round(train_s), "held_out": held_ids,
               "held": scores(folder), "cv_out_of_fold": cv_score if "fold" in arm else None, "folder": str(folder)}
        print(f"{arm}: held-out mean Dice {row['held']['mean_dice']:.4f}, pooled {row['held']['global_dice']:.4f}, "
              f"AUC {row['held']['auc']}" + (f"; CV (out of fold, {len(train_ids)} images) mean Dice "
                                              f"{cv_score['mean_dice']:.4f}" if row["cv_out_of_fold"] else ""),
              flush=True)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
