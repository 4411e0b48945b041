"""Sliding-window prediction: overlapping windows, batched, blended with Gaussian weights (as nnU-Net and MONAI's
``sliding_window_inference`` do), so each pixel's score comes mostly from windows that see it near their centre,
where the network has the most context. The scores are accumulated in float32 where the model runs (on a GPU, the
GPU, where the two maps take under a quarter of its free memory: no copy back per window batch; else the host):
memory is the image (uint8), one batch of windows and two float maps of the image's size (scores and weights).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from unetseg._device import free_memory


def window_starts(length: int, window: int, overlap: float) -> list[int]:
    """Start offsets of windows of ``window`` pixels covering ``length`` pixels, consecutive windows sharing about
    ``overlap`` of their size; the last window ends at the edge. One window at 0 when the image is not longer."""
    if length <= window:
        return [0]
    step = max(1, int(window * (1.0 - overlap)))
    starts = list(range(0, length - window, step))
    return starts + [length - window]


def gaussian_weights(height: int, width: int, sigma_scale: float = 0.125) -> torch.Tensor:
    """A (height, width) Gaussian centred on the window, sigma ``sigma_scale`` x its size, 1 at the centre and never
    0 at the edges (so every pixel has some weight)."""
    axes = []
    for n in (height, width):
        x = torch.arange(n, dtype=torch.float32) - (n - 1) / 2
        axes.append(torch.exp(-0.5 * (x / max(1e-6, sigma_scale * n)) ** 2))
    weights = axes[0][:, None] * axes[1][None, :]
    weights /= weights.max()
    return weights.clamp_min(max(float(weights.min()), 1e-3))


def sliding_window_logits(forward: Callable[[np.ndarray], torch.Tensor], image: np.ndarray,
                          window: tuple[int, int], overlap: float = 0.5, batch_size: int = 4) -> torch.Tensor:
    """Scores of a whole image from windows.

    Args:
        forward: uint8 windows (N, h, w, C) -> scores (N, K, h, w), e.g. :meth:`Predictor.logits`.
        image: uint8 (H, W, C); smaller than the window in a dimension: padded with zeros there.
        window: (width, height) of a window.
        overlap: share of a window that its neighbour covers too (0 <= overlap < 1).

    Returns:
        float32 (K, H, W) on the device of ``forward``'s scores (the host for maps too large for a GPU): the
        Gaussian-weighted mean of the windows' scores.
    """
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"--overlap {overlap}: a share between 0 and 1 (1 excluded)")
    height, width = image.shape[:2]
    win_w, win_h = window
    pad_h, pad_w = max(0, win_h - height), max(0, win_w - width)
    if pad_h or pad_w:
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)))
    full_h, full_w = image.shape[:2]
    win_h, win_w = min(win_h, full_h), min(win_w, full_w)
    corners = [(y, x) for y in window_starts(full_h, win_h, overlap) for x in window_starts(full_w, win_w, overlap)]
    weights = gaussian_weights(win_h, win_w)
    scores: torch.Tensor | None = None
    total = torch.zeros(0)
    for start in range(0, len(corners), batch_size):
        batch = corners[start:start + batch_size]
        windows = np.stack([image[y:y + win_h, x:x + win_w] for y, x in batch])
        out = forward(windows).float()
        if scores is None:
            device = out.device
            if device.type == "cuda" and (out.shape[1] + 1) * full_h * full_w * 4 > free_memory(device) // 4:
                device = torch.device("cpu")  # maps too large for the GPU's memory: on the host, as before
            scores = torch.zeros(out.shape[1], full_h, full_w, device=device)
            total = torch.zeros(full_h, full_w, device=device)
            weights = weights.to(device)
        out = out.to(scores.device)
        for (y, x), piece in zip(batch, out):
            scores[:, y:y + win_h, x:x + win_w] += piece * weights
            total[y:y + win_h, x:x + win_w] += weights
    assert scores is not None
    scores /= total  # in place: no third map of the image's size
    return scores[:, :height, :width]
