"""The confusion matrix as a picture: rows (the true class) normalised to 1, so each row reads as where that class's
pixels went (the diagonal is the class's recall)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from unetseg.drawing.curves import figure_png


def plot_confusion(matrix: np.ndarray, names: Sequence[str], out: str | Path | None = None) -> bytes:
    """Draw a (K, K) confusion matrix (rows: true class, columns: predicted) normalised per row, with the share in
    each cell; return the PNG's bytes and, with ``out``, write them there.

    A row with no pixels (a class absent from the masks) stays blank.
    """
    from matplotlib.figure import Figure

    matrix = np.asarray(matrix, dtype=np.float64)
    k = len(matrix)
    rows = matrix.sum(1, keepdims=True)
    share = np.divide(matrix, rows, out=np.full_like(matrix, np.nan), where=rows > 0)
    side = min(12.0, 2.5 + 0.55 * k)
    fig = Figure(figsize=(side + 1.2, side), dpi=100, layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(np.ma.masked_invalid(share), cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(k), labels=list(names), rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), labels=list(names), fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("confusion matrix (each row sums to 1)")
    if k <= 24:
        for i in range(k):
            for j in range(k):
                if share[i, j] == share[i, j] and share[i, j] >= 0.005:
                    ax.text(j, i, f"{share[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if share[i, j] > 0.6 else "black")
    fig.colorbar(image, ax=ax, shrink=0.8)
    return figure_png(fig, out)
