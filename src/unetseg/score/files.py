"""The files a scored set is written to: ``per_image.csv``, ``summary.json``, ``confusion.csv`` and
``confusion.png``; and the per-image table read back (``unetseg compare``)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from unetseg.data.errors import DataError
from unetseg.drawing.confusion import plot_confusion

PER_IMAGE = "per_image.csv"
SUMMARY = "summary.json"


def write_scores(out_dir: str | Path, rows: list[dict[str, Any]], summary: dict[str, Any], matrix: np.ndarray,
                 names: list[str]) -> None:
    """Write the per-image table, the summary, and the pooled confusion matrix (pixel counts, rows the true class;
    the PNG's rows normalised) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / PER_IMAGE, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["image", "dice", "iou"])
        writer.writeheader()
        writer.writerows(rows)
    with open(out / "confusion.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["true \\ predicted", *names])
        writer.writerows([name, *row] for name, row in zip(names, matrix.tolist()))
    plot_confusion(np.asarray(matrix), names, out / "confusion.png")
    (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")


def read_per_image(path: str | Path) -> tuple[Path, dict[str, dict[str, float]]]:
    """A scored set's per-image table, from a folder holding ``per_image.csv`` (``evaluate --out``, ``score
    --out``) or a run folder (a cross-validation run's out-of-fold ``cv/``, else its ``eval/``): the file, and per
    image (by file stem) its scores.

    Raises:
        DataError: when neither holds a table.
    """
    path = Path(path)
    for candidate in (path, path / PER_IMAGE, path / "cv" / PER_IMAGE, path / "eval" / PER_IMAGE):
        if candidate.is_file():
            break
    else:
        raise DataError(f"{path}: no {PER_IMAGE} here or in {path / 'eval'} (write one with unetseg evaluate "
                        f"--out or unetseg score --out)")
    table: dict[str, dict[str, float]] = {}
    with open(candidate, newline="") as fh:
        for row in csv.DictReader(fh):
            name = Path(row.pop("image")).stem
            table[name] = {k: (float(v) if v not in ("", "nan") else math.nan) for k, v in row.items()}
    return candidate, table
