"""Pretrained encoders against the plain U-Net, each trained to the same budget: held-out scores on frames of CamVid
that the run never saw, and on the other shared sets.

    python benchmarks/pretrained.py [--data-root ../shared/data] [--budget 5m] [--only camvid] [--arms scratch lite0]

Each arm runs the CLI as a user would (`unetseg train ... --budget B`, then `unetseg evaluate` on the held-out
images); the plan chooses what the arm does not pin.
  camvid    camvid_val's 101 consecutive frames of one drive: the first 55 train, the last 36 are held out, 10 frames
            between them left out, so the held-out stretch of street is not the neighbour of a training frame (a
            harder test than the README's interleaved blocks). Void (11) ignored; IoU per class pooled, mIoU.
  drive     DRIVE's 20 images: 16 train, the last 4 held out; field of view only; mean Dice.
  membrane  ISBI 2012's 30 slices: 24 train, the last 6 held out; mean Dice of the membrane.
  carvana   carvana_sample's 6 cars: 5 train, the last car held out (16 views); mean Dice.
Prints one line per arm and a JSON line per arm.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from patches import run  # the benchmarks' one way to run the CLI (python benchmarks/pretrained.py: this folder first)

ROOT = Path(__file__).resolve().parents[1]
ARMS = {
    "scratch": ["--encoder", "unet"],  # given, so a budget plan keeps the plain U-Net
    "lite0": ["--encoder", "efficientnet-lite0"],
    "lite0-lr-all": ["--encoder", "efficientnet-lite0", "--encoder-lr-scale", "1"],
    "lite0-bn-train": ["--encoder", "efficientnet-lite0", "--encoder-bn", "train"],
    "lite0-bn-train-lr-all": ["--encoder", "efficientnet-lite0", "--encoder-bn", "train", "--encoder-lr-scale", "1"],
    "lite0-224": ["--encoder", "efficientnet-lite0", "--image-size", "224x176"],
    "lite0-304": ["--encoder", "efficientnet-lite0", "--image-size", "304x224"],
    "lite0-fold": ["--encoder", "efficientnet-lite0", "--encoder-bn", "fold"],
    "lite0-bn-frozen": ["--encoder", "efficientnet-lite0", "--encoder-bn", "frozen"],
    "lite0-nearest": ["--encoder", "efficientnet-lite0", "--decoder-upsample", "nearest"],
    "lite0-random": ["--encoder", "efficientnet-lite0", "--encoder-weights", "none", "--encoder-lr-scale", "1"],
    "lite1": ["--encoder", "efficientnet-lite1"],
    "lite2": ["--encoder", "efficientnet-lite2"],
}
CAMVID_CLASSES = ("sky", "building", "pole", "road", "pavement", "tree", "sign", "fence", "car", "pedestrian",
                  "bicyclist")


def _split(files: list[Path], folder: Path, train: slice, test: slice) -> None:
    """Links of ``files[train]`` into ``folder/train`` and of ``files[test]`` into ``folder/test``."""
    for part, pick in (("train", train), ("test", test)):
        (folder / part).mkdir(parents=True, exist_ok=True)
        for f in files[pick]:
            (folder / part / f.name).symlink_to(f.resolve())


def datasets(root: Path, work: Path) -> dict[str, tuple[list[str], list[str], list[str], str]]:
    """Each dataset's (training data flags, held-out data flags, flags of both, the score's key in summary.json)."""
    out: dict[str, tuple[list[str], list[str], list[str], str]] = {}
    camvid = root / "camvid_val"
    if camvid.is_dir():
        for kind in ("images", "labels"):
            _split(sorted((camvid / kind).glob("*.png")), work / "camvid" / kind, slice(0, 55), slice(65, None))
        c = work / "camvid"
        out["camvid"] = (["--images", str(c / "images/train"), "--masks", str(c / "labels/train"),
                          "--val-images", str(c / "images/test"), "--val-masks", str(c / "labels/test")],
                         ["--images", str(c / "images/test"), "--masks", str(c / "labels/test")],
                         ["--ignore-index", "11", "--class-names", *CAMVID_CLASSES, "--vflip-p", "0",
                          "--rotate-limit", "10"], "miou")
    drive = root / "drive"
    if drive.is_dir():
        d = work / "drive"
        for kind, pattern in (("image", "*.tif"), ("label", "*.gif"), ("fov_mask", "*.gif")):
            _split(sorted((drive / kind).glob(pattern)), d / kind, slice(0, 16), slice(16, None))
        names = ["--image-pattern", "{id}_training.tif", "--mask-pattern", "{id}_manual1.gif",
                 "--ignore-pattern", "{id}_training_mask.gif"]
        out["drive"] = ([*names, "--images", str(d / "image/train"), "--masks", str(d / "label/train"),
                         "--ignore-masks", str(d / "fov_mask/train"), "--val-images", str(d / "image/test"),
                         "--val-masks", str(d / "label/test"), "--val-ignore-masks", str(d / "fov_mask/test")],
                        [*names, "--images", str(d / "image/test"), "--masks", str(d / "label/test"),
                         "--ignore-masks", str(d / "fov_mask/test")], [], "mean_dice")
    membrane = root / "membrane"
    if membrane.is_dir():
        m = work / "membrane"
        for kind in ("image", "label"):
            files = sorted((membrane / kind).glob("*.png"), key=lambda f: int(f.stem) if f.stem.isdigit() else 0)
            _split(files, m / kind, slice(0, 24), slice(24, None))
        out["membrane"] = (["--images", str(m / "image/train"), "--masks", str(m / "label/train"),
                            "--val-images", str(m / "image/test"), "--val-masks", str(m / "label/test")],
                           ["--images", str(m / "image/test"), "--masks", str(m / "label/test")],
                           ["--invert-mask"], "mean_dice")
    carvana = root / "carvana_sample"
    if carvana.is_dir():
        k = work / "carvana"
        _split(sorted((carvana / "train").glob("*.jpg")), k / "train", slice(0, 80), slice(80, None))
        _split(sorted((carvana / "train_masks").glob("*.gif")), k / "train_masks", slice(0, 80), slice(80, None))
        out["carvana"] = (["--images", str(k / "train/train"), "--masks", str(k / "train_masks/train"),
                           "--val-images", str(k / "train/test"), "--val-masks", str(k / "train_masks/test")],
                          ["--images", str(k / "train/test"), "--masks", str(k / "train_masks/test")], [], "mean_dice")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(ROOT / ".." / "shared" / "data"))
    parser.add_argument("--budget", default="5m")
    parser.add_argument("--only", nargs="+", choices=["camvid", "drive", "membrane", "carvana"])
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=["scratch", "lite0"])
    parser.add_argument("--out", help="folder for the runs (default: a temporary one)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="unetseg-pretrained-"))
    unetseg = [sys.executable, "-m", "unetseg"]
    for name, (train, test, both, key) in datasets(Path(args.data_root), out / "data").items():
        if args.only and name not in args.only:
            continue
        for arm in args.arms:
            folder = out / f"{name}-{arm}"
            seconds = run([*unetseg, "train", *train, *both, *ARMS[arm], "--budget", args.budget, "--no-progress",
                           "--out", str(folder), "--overwrite"])
            run([*unetseg, "evaluate", "--model", str(folder), *test, "--out", str(folder / "eval")])
            summary = json.loads((folder / "eval" / "summary.json").read_text())
            plan = json.loads((folder / "config.json").read_text())["train"]["plan"]
            config = json.loads((folder / "config.json").read_text())
            size = "x".join(map(str, config["data"]["patch"] or config["data"]["image_size"]))
            per_class = {c["name"]: round(c["iou"], 4) for c in summary.get("per_class", [])} if key == "miou" else {}
            print(f"{name:8s} {arm:16s} {seconds:6.0f} s  {size} {plan['planned_steps']} steps  {key} "
                  f"{summary[key]:.4f}" + ("  " + " ".join(f"{k} {v:.3f}" for k, v in per_class.items())
                                           if per_class else ""), flush=True)
            print(json.dumps({"dataset": name, "arm": arm, "budget": args.budget, "seconds": round(seconds),
                              "size": size, "steps": plan["planned_steps"], "score": summary[key],
                              "iou": per_class}), flush=True)


if __name__ == "__main__":
    main()
