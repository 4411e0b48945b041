"""Training to a budget: how close a run ends to its budget, what the plan chose, and the held-out Dice at the
photos' original resolution (Carvana's layout; split seed 0 of carvana_sample holds out the white car).

    python benchmarks/budget.py --budget 5m [--data ../shared/data/carvana_sample] [--split-seed 0]
                                [--set model.base_channels=16 --set data.image_size=240x160 ...]

``--set`` fixes a setting the plan would otherwise choose (the table in benchmarks/README.md compares the plan's
choice with fixed widths and sizes at the same budget). Prints one line: budget, seconds the run took (ratio to the
budget), the plan's model / size / steps / images seen, mean and worst held-out Dice of the final and best weights.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

from unetseg import Predictor, RunConfig, evaluate_pairs, find_pairs, fit
from unetseg.checkpoint import read_split
from unetseg.config import DataConfig, TrainConfig, parse_duration, parse_size
from unetseg.data.split import pairs_of_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="5m")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data" /
                                              "carvana_sample"))
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--val-fraction", type=float, default=1 / 6)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.NAME=VALUE",
                        help="fix a setting, e.g. model.base_channels=16, data.image_size=240x160, train.ema_decay=0.99")
    parser.add_argument("--out", help="run folder (default: a temporary one)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = RunConfig(data=DataConfig(data=args.data, val_fraction=args.val_fraction, split_seed=args.split_seed),
                    train=TrainConfig(budget=args.budget, progress=False))
    keep = set()
    for item in args.set:
        key, value = item.split("=", 1)
        section, name = key.split(".")
        parsed = parse_size(value) if name == "image_size" else json.loads(value)
        setattr(getattr(cfg, section), name, parsed)
        keep.add(key)
    out = Path(args.out or tempfile.mkdtemp(prefix="unetseg-budget-"))
    t0 = time.monotonic()
    run = fit(cfg, out, overwrite=True, keep=keep)
    seconds = time.monotonic() - t0
    cfg = RunConfig.load(run / "config.json")
    held_out = pairs_of_split(find_pairs(args.data), "val", read_split(run, "val"))
    scores = {}
    for weights in ("final", "best"):
        result = evaluate_pairs(Predictor.from_run(run, device="cpu", weights=weights), held_out)
        scores[weights] = (result["mean_dice"], min(r["dice"] for r in result["per_image"]))
    budget = parse_duration(args.budget)
    print(f"budget {args.budget}: ran {seconds:.0f} s ({seconds / budget:.3f} of budget); base {cfg.model.base_channels} "
          f"at {cfg.data.image_size[0]}x{cfg.data.image_size[1]}, batch {cfg.train.batch_size}, {cfg.train.max_steps} "
          f"steps, {cfg.train.max_steps * cfg.train.batch_size} images seen; held-out ({held_out[0].group}, "
          f"{len(held_out)} images, original size) Dice final {scores['final'][0]:.4f} (worst {scores['final'][1]:.4f}), "
          f"best {scores['best'][0]:.4f} (worst {scores['best'][1]:.4f})")


if __name__ == "__main__":
    main()
