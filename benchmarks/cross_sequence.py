"""Scene recipes judged on streets the model has never seen: CamVid's training split held out by whole sequence.

    python benchmarks/cross_sequence.py [--data-root ../shared/data] [--hold 0006R0] [--budget 30m] \
        [--arms old crop crop-sqrt] [--out runs/xseq]

``camvid_train`` holds three drives (0001TP, 0006R0, 0016E5; the group is the file name's part before ``_``). For each
held-out sequence, the other two train, with ``camvid_val`` (more 0016E5) as the validation folder, as the README's
command uses it (with 0016E5 held out, a block split of the training pairs validates instead, so that no frame of the
held-out street is seen); the held-out sequence is then scored with ``unetseg evaluate --data`` (final weights, void
11 ignored, IoU per class pooled over the frames: the CamVid protocol), with the run's own inference (the plan's
scales and flips) and, where that is more than one pass, in one pass too (``--scales 1 --no-tta``). Each arm runs the
CLI as a user would; the budget plan chooses what the arm does not pin. Prints one line per run and its JSON.
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
SEQUENCES = ("0001TP", "0006R0", "0016E5")
#: The flags of each arm, after the README's (void 11, the classes file, no vertical flips, rotation 10 degrees).
ARMS = {
    # the recipe before the scene crops: whole frames, zoom 0.9-1.1 (pinned, so today's plan does not add the crops)
    "old": ["--encoder", "efficientnet-lite0", "--scale-limit", "0.1", "--crop", "none", "--class-weights", "auto"],
    # scale-jittered crops with median-frequency weights, then with their square roots (today's plan)
    "crop": ["--encoder", "efficientnet-lite0", "--class-weights", "auto"],
    "crop-sqrt": ["--encoder", "efficientnet-lite0", "--class-weights", "sqrt"],
    # the same, the validation pairs training too (the final model's protocol)
    "crop-sqrt-all": ["--encoder", "efficientnet-lite0", "--class-weights", "sqrt", "--train-on-val"],
    # the quick check: whole frames at 304x224, zoom 0.67-1.5, many more of them (square-root weights, train + val)
    "small-sqrt-all": ["--encoder", "efficientnet-lite0", "--class-weights", "sqrt", "--train-on-val",
                       "--image-size", "304x224", "--crop", "none", "--scale-limit", "0.5"],
    # the README's command with the narrower decoder (128-64-32-16-16: 0.79x a step, so more steps in the budget)
    "narrow-all": ["--encoder", "efficientnet-lite0", "--class-weights", "sqrt", "--train-on-val",
                   "--decoder-channels", "128", "64", "32", "16", "16"],
    # the README's command with an exponential moving average of the weights as the final model
    "ema-all": ["--encoder", "efficientnet-lite0", "--class-weights", "sqrt", "--train-on-val", "--ema-decay", "0.998"],
    # the README's command on the larger EfficientNet-Lite1 (the plan sizes it for its cost)
    "lite1-all": ["--encoder", "efficientnet-lite1", "--class-weights", "sqrt", "--train-on-val"],
    # the README's command with the frames pinned at 448x352 (the plan's size on a faster machine; crops 320x256)
    "size448-all": ["--encoder", "efficientnet-lite0", "--class-weights", "sqrt", "--train-on-val",
                    "--image-size", "448x352"],
    # ... and at 384x288 (crops 272x208), between the ladder's 288x224 and 448x352
    "size384-all": ["--encoder", "efficientnet-lite0", "--class-weights", "sqrt", "--train-on-val",
                    "--image-size", "384x288"],
    "scratch": ["--encoder", "unet"],
    # 5-fold cross-validation at the same budget (each fold a fifth of it; the folds by blocks of frames, the
    # validation folder not used), scored as the ensemble of the 5 folds
    "cv5": ["--encoder", "efficientnet-lite0", "--class-weights", "sqrt", "--folds", "5", "--split", "blocks"],
    "cv3": ["--encoder", "efficientnet-lite0", "--class-weights", "sqrt", "--folds", "3", "--split", "blocks"],
}
README_FLAGS = ["--ignore-index", "11", "--classes", str(ROOT / "configs" / "camvid_classes.csv"),
                "--vflip-p", "0", "--rotate-limit", "10"]


def link_fold(source: Path, hold: str, out: Path) -> tuple[Path, Path]:
    """Folders of symbolic links: the frames of the other sequences (train) and of ``hold`` (held out)."""
    train, held = out / f"train_without_{hold}", out / f"held_{hold}"
    for folder in (train, held):
        for sub in ("images", "labels"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
    for image in sorted((source / "images").glob("*.png")):
        folder = held if image.name.split("_")[0] == hold else train
        for sub, path in (("images", image), ("labels", source / "labels" / image.name)):
            link = folder / sub / image.name
            if not link.exists():
                os.symlink(path.resolve(), link)
    return train, held


def steps_run(run_dir: Path, folds: int) -> int:
    """The optimiser steps a run took (its last metrics line: the budget's clock may have changed the plan's), or the
    sum over a cross-validation run's ``folds``."""
    if folds:
        return sum(json.loads((run_dir / f"fold_{k}" / "finished.json").read_text())["steps"] for k in range(folds))
    return json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["step"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(ROOT / ".." / "shared" / "data"))
    parser.add_argument("--hold", nargs="+", choices=SEQUENCES, default=["0006R0"])
    parser.add_argument("--budget", default="30m")
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=["old", "crop"])
    parser.add_argument("--out", help="folder for the folds and runs (default: a temporary one)")
    args = parser.parse_args()
    root = Path(args.data_root)
    if not (root / "camvid_train" / "images").is_dir():
        sys.exit(f"{root / 'camvid_train'} not found: the cross-sequence folds are cut from it")
    out = Path(args.out or tempfile.mkdtemp(prefix="unetseg-xseq-"))
    unetseg = [sys.executable, "-m", "unetseg"]
    for hold in args.hold:
        train, held = link_fold(root / "camvid_train", hold, out)
        validation = ["--split", "blocks", "--val-fraction", "0.1"] if hold == "0016E5" else \
            ["--val-data", str(root / "camvid_val")]
        for arm in args.arms:
            run_dir = out / f"{arm}-{hold}"
            cv = "--folds" in ARMS[arm]
            seconds = run(unetseg + ["train", "--data", str(train), *([] if cv else validation), *README_FLAGS,
                                     *ARMS[arm],
                                     "--budget", args.budget, "--out", str(run_dir), "--overwrite"])
            run(unetseg + ["evaluate", "--model", str(run_dir), "--data", str(held), "--out", str(run_dir / "held")])
            summary = json.loads((run_dir / "held" / "summary.json").read_text())
            one = summary  # the run's own inference (the plan's scales and flips), and in one pass where it differs
            if summary.get("tta") or summary.get("scales", [1.0]) != [1.0]:
                run(unetseg + ["evaluate", "--model", str(run_dir), "--data", str(held), "--scales", "1", "--no-tta",
                               "--out", str(run_dir / "held_one_pass")])
                one = json.loads((run_dir / "held_one_pass" / "summary.json").read_text())
            config = json.loads((run_dir / ("fold_0" if cv else "") / "config.json").read_text())
            folds = config["data"].get("folds", 1) if cv else 1
            iou = {c["name"]: round(c["iou"], 4) for c in summary["per_class"]}
            worst = min(iou, key=iou.get)
            plan = config["train"].get("plan") or {}
            row = {"arm": arm, "held_out": hold, "budget": args.budget, "train_s": round(seconds),
                   "miou": round(summary["miou"], 4), "pixel_accuracy": round(summary["pixel_accuracy"], 4),
                   "inference": {"scales": summary.get("scales", [1.0]), "tta": summary.get("tta", False)},
                   "miou_one_pass": round(one["miou"], 4),
                   "worst": worst, "worst_iou": iou[worst], "iou": iou,
                   "image_size": config["data"]["image_size"], "crop": config["data"].get("crop"),
                   "scale_limit": config["data"]["scale_limit"], "steps": config["train"]["max_steps"],
                   "samples_seen": steps_run(run_dir, folds if cv else 0) * config["train"]["batch_size"],
                   "folds": folds, "cv_miou": json.loads((run_dir / "cv" / "summary.json").read_text())["miou"]
                   if cv else None,
                   "class_weights": config["train"]["class_weights"], "rule": plan.get("rule")}
            print(f"{arm:10s} held out {hold}: mIoU {row['miou']:.4f} (one pass {row['miou_one_pass']:.4f}), worst {worst} "
                  f"{iou[worst]:.3f}, {row['samples_seen']} samples at {row['crop'] or row['image_size']}", flush=True)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
