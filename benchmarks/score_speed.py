"""What each group of scores costs per image, on real masks: a Carvana mask (1918x1280) and a DRIVE vessel map
(565x584), each against a prediction made from it by a 2-pixel shift and a 1-pixel erosion (edges everywhere, as a
model's are).

    python benchmarks/score_speed.py [--data ../shared/data] [--repeat 5]

Prints ms per image for: the confusion matrix alone (what validation computes: the plain baseline), the overlap
scores, the boundary scores (HD95, ASSD, NSD: SciPy's exact distance transform; boundary IoU: its chessboard one),
clDice (scikit-image's skeletonize), the ranking scores from a probability map, and every score together; each with
its ratio to the baseline. Where MONAI is installed, its HD95 + ASSD + NSD of the same masks beside ours.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from unetseg.data.io import read_mask
from unetseg.metrics import confusion_matrix
from unetseg.score import ScoreSettings, score_image
from unetseg.score.surface import band_width, boundary_iou, surface_scores
from unetseg.score.topology import cldice


def _timed(fn, repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return 1000 * best


def _cases(root: Path) -> list[tuple[str, np.ndarray]]:
    cases = []
    carvana = sorted((root / "carvana_sample" / "train_masks").glob("*.gif"))
    if carvana:
        cases.append(("Carvana mask 1918x1280", read_mask(carvana[0]).values > 0))
    drive = sorted((root / "drive" / "label").glob("*.gif"))
    if drive:
        cases.append(("DRIVE vessels 565x584", read_mask(drive[0]).values > 0))
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name, target in _cases(Path(args.data)):
        pred = ndimage.binary_erosion(np.roll(target, 2, axis=1))
        t, p = target.astype(np.uint8), pred.astype(np.uint8)
        probs = ndimage.gaussian_filter(pred.astype(np.float32), 2)
        band = band_width(target.shape)
        base = _timed(lambda: confusion_matrix(torch.from_numpy(p)[None], torch.from_numpy(t)[None], 2), args.repeat)
        rows = [
            ("confusion matrix (baseline)", base),
            ("overlap scores", _timed(lambda: score_image(p, t, 2, [1], ScoreSettings(surface=False, topology=False)),
                                      args.repeat)),
            ("HD95 + ASSD + NSD", _timed(lambda: surface_scores(pred, target), args.repeat)),
            (f"boundary IoU (d={band})", _timed(lambda: boundary_iou(pred, target, band), args.repeat)),
            ("clDice", _timed(lambda: cldice(pred, target), args.repeat)),
            ("ranking (AUC, AP, F1)", _timed(lambda: score_image(p, t, 2, [1], ScoreSettings(surface=False,
                                                                                              topology=False), probs),
                                             args.repeat)),
            ("every score", _timed(lambda: score_image(p, t, 2, [1], ScoreSettings(), probs), args.repeat)),
        ]
        try:
            from monai.metrics import (compute_average_surface_distance, compute_hausdorff_distance,
                                       compute_surface_dice)

            pt, tt = torch.from_numpy(pred)[None, None].float(), torch.from_numpy(target)[None, None].float()

            def monai_surface() -> None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    compute_hausdorff_distance(pt, tt, include_background=True, percentile=95)
                    compute_average_surface_distance(pt, tt, include_background=True, symmetric=True)
                    compute_surface_dice(pt, tt, [2.0], include_background=True)

            rows.append(("MONAI: HD95 + ASSD + NSD", _timed(monai_surface, args.repeat)))
        except ImportError:
            pass
        print(f"{name} (one thread, best of {args.repeat}):")
        for label, ms in rows:
            print(f"  {label:<30} {ms:8.1f} ms   {ms / base:7.1f}x the baseline")


if __name__ == "__main__":
    main()
