"""Data placement: where the decoded training cache lives, and how each step's batch gets to the device.

- On a GPU the whole uint8 cache goes to the GPU when it takes under a quarter of the free memory (Carvana's 5,088
  photos at 480x320 take 2.3 GB): a step then gathers its batch there and copies nothing from the host.
- Otherwise the cache stays on the host (in RAM, or memory-mapped with ``--cache disk``), unpinned: pinning it all
  would hold a second copy of it in page-locked RAM. Each step gathers its batch into one of two small pinned staging
  buffers (``index_select(..., out=)``), used in turn, and copies it with ``non_blocking=True``, so the copy overlaps
  the step before.
- On the CPU a step indexes the cache directly.

The batch order is a permutation per epoch and crop corners are drawn per step on the host, from seeds made of
(seed, epoch, step, rank): nothing is read back from the device, and a resumed run draws what it would have drawn.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from unetseg._device import free_memory
from unetseg.data.dataset import ArrayDataset

logger = logging.getLogger(__name__)

#: Pixels kept per class and image as centres of oversampled crops.
CENTRES_PER_CLASS = 64
#: The share of the GPU's free memory the cache may take to be placed there.
CACHE_SHARE = 4


def seed_of(*keys: int) -> int:
    """A 63-bit seed made from a tuple of integers (e.g. seed, epoch, step)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0] >> 1)


def cpu_generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded from a tuple of integers (e.g. seed, epoch, step)."""
    return torch.Generator().manual_seed(seed_of(*keys))


def class_centres(masks: np.ndarray, rows: np.ndarray, labels: int) -> dict[int, list[np.ndarray]]:
    """For each cache row, the (y, x) pixels (up to CENTRES_PER_CLASS, evenly spread over the class's pixels: no random
    draw) of each class that oversampled crops may be centred on: every class of multi-class data, the foreground of
    binary data. Classes absent from an image have no entry.

    Returns:
        ``row -> [points of class k (M, 2) int32 or an empty array, for k in 0..labels-1]``.
    """
    wanted = range(1, 2) if labels == 2 else range(labels)
    out: dict[int, list[np.ndarray]] = {}
    for r in np.asarray(rows).tolist():
        mask = np.asarray(masks[r])
        points = [np.zeros((0, 2), np.int32)] * labels
        for k in wanted:
            ys, xs = np.nonzero(mask == k)
            if len(ys):
                pick = np.linspace(0, len(ys) - 1, min(len(ys), CENTRES_PER_CLASS)).round().astype(np.int64)
                points[k] = np.stack([ys[pick], xs[pick]], axis=1).astype(np.int32)
        out[r] = points
    return out


def crop_corners(shape: tuple[int, int], rows: Sequence[int], patch: tuple[int, int], rng: np.random.Generator,
                 centres: dict[int, list[np.ndarray]] | None = None,
                 oversample: float = 0.0) -> list[tuple[int, int]]:
    """The (y, x) corner of a random ``patch`` (width, height) crop of each cache row, drawn from ``rng``. With
    ``oversample`` > 0, that share of the crops (drawn per crop) is centred on a pixel of a class present in the image,
    the class drawn uniformly among them (nnU-Net's foreground oversampling, which makes rare classes seen)."""
    pw, ph = patch
    height, width = shape
    n = len(rows)
    ys = rng.integers(0, height - ph + 1, n).tolist()
    xs = rng.integers(0, width - pw + 1, n).tolist()
    if oversample > 0 and centres is not None:
        u, v, w = rng.random((3, n)).tolist()
        for i, r in enumerate(rows):
            present = [pts for pts in centres.get(r, []) if len(pts)]
            if u[i] < oversample and present:
                pts = present[min(len(present) - 1, int(v[i] * len(present)))]
                cy, cx = pts[min(len(pts) - 1, int(w[i] * len(pts)))].tolist()
                ys[i] = min(max(0, cy - ph // 2), height - ph)
                xs[i] = min(max(0, cx - pw // 2), width - pw)
    return list(zip(ys, xs))


def crops(images: torch.Tensor, masks: torch.Tensor, rows: Sequence[int], patch: tuple[int, int],
          rng: np.random.Generator, centres: dict[int, list[np.ndarray]] | None = None, oversample: float = 0.0,
          out: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ``patch`` crops (see :func:`crop_corners`) of the cached ``images`` (N, H, W, C) and ``masks`` rows.
    Only the crops are read, so a memory-mapped cache of large images is touched a patch at a time; ``out``: buffers
    to stack them into (a pinned staging buffer)."""
    pw, ph = patch
    corners = crop_corners(tuple(images.shape[1:3]), rows, patch, rng, centres, oversample)
    parts = ([images[r, y:y + ph, x:x + pw] for r, (y, x) in zip(rows, corners)],
             [masks[r, y:y + ph, x:x + pw] for r, (y, x) in zip(rows, corners)])
    if out is None:
        return torch.stack(parts[0]), torch.stack(parts[1])
    n = len(rows)
    return torch.stack(parts[0], out=out[0][:n]), torch.stack(parts[1], out=out[1][:n])


class _Staging:
    """Two pinned host buffers used in turn: a batch is gathered into one while the other's copy to the GPU may still
    be running. Before a buffer is filled again, the copy out of it two steps ago is waited for (long done: this only
    keeps the host from running more than two steps ahead)."""

    def __init__(self, image_shape: tuple[int, ...], mask_shape: tuple[int, ...], device: torch.device) -> None:
        self.device = device
        self.buffers = [(torch.empty(image_shape, dtype=torch.uint8).pin_memory(),
                         torch.empty(mask_shape, dtype=torch.uint8).pin_memory()) for _ in range(2)]
        self.copied: list[torch.cuda.Event | None] = [None, None]
        self.turn = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.turn
        if self.copied[k] is not None:
            self.copied[k].synchronize()
        return self.buffers[k]

    def to_device(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Copy views of the current buffers to the device without waiting."""
        x, y = images.to(self.device, non_blocking=True), masks.to(self.device, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self.copied[self.turn] = event
        self.turn ^= 1
        return x, y


class BatchSource:
    """The training cache, placed for ``device``, and the batches of each step.

    Args:
        data: the decoded training set (rows of a cache that may be shared with validation, or memory-mapped).
        device: the training device.
        patch: (width, height) of random crops, or None for whole images.
        per_process: the most images one process takes in a step (the staging buffers' size).
        centres, oversample: see :func:`crop_corners`.
    """

    def __init__(self, data: ArrayDataset, device: torch.device, patch: tuple[int, int] | None, per_process: int,
                 centres: dict[int, list[np.ndarray]] | None = None, oversample: float = 0.0) -> None:
        with warnings.catch_warnings():  # a node cache is mapped read-only; steps only read it
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            images, masks = torch.from_numpy(data.images), torch.from_numpy(data.masks)
        self.device, self.patch, self.centres, self.oversample = device, patch, centres, oversample
        self.rows = np.asarray(data.row_numbers(), dtype=np.int64)
        self.staging: _Staging | None = None
        self.on_device = device.type == "cuda" and images.nbytes + masks.nbytes < free_memory(device) // CACHE_SHARE
        if self.on_device:
            images, masks = images.to(device), masks.to(device)
            self.where = f"on the GPU ({(images.nbytes + masks.nbytes) / 1e9:.2f} GB)"
        elif device.type == "cuda":
            h, w = (patch[1], patch[0]) if patch else tuple(images.shape[1:3])
            self.staging = _Staging((per_process, h, w, images.shape[3]), (per_process, h, w), device)
            self.where = (f"on the host ({(images.nbytes + masks.nbytes) / 1e9:.2f} GB), batches copied through "
                          f"pinned staging buffers")
        else:
            self.where = "in host memory"
        self.images, self.masks = images, masks
        self._order: torch.Tensor | None = None

    def start_epoch(self, order: torch.Tensor) -> None:
        """The epoch's order of the training positions (a CPU permutation). With the cache on the GPU, the rows in
        that order are copied there once, and each step slices them."""
        self._positions = order.numpy()
        self._order = torch.from_numpy(self.rows[self._positions]).to(self.device) if self.on_device else None

    def batch(self, start: int, stop: int, rng: np.random.Generator | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (n, H, W, C) and class masks (n, H, W) on the device: the positions ``start:stop`` of the
        epoch's order (this process's share), whole or cropped with corners from ``rng``."""
        if self.patch:
            rows = self.rows[self._positions[start:stop]].tolist()
            if self.staging is not None:
                return self.staging.to_device(*crops(self.images, self.masks, rows, self.patch, rng, self.centres,
                                                     self.oversample, out=self.staging.next()))
            x, y = crops(self.images, self.masks, rows, self.patch, rng, self.centres, self.oversample)
            return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if self._order is not None:  # the cache is on the GPU: a gather there
            idx = self._order[start:stop]
            return self.images[idx], self.masks[idx]
        idx = torch.from_numpy(self.rows[self._positions[start:stop]])
        if self.staging is not None:
            images, masks = self.staging.next()
            n = len(idx)
            return self.staging.to_device(torch.index_select(self.images, 0, idx, out=images[:n]),
                                          torch.index_select(self.masks, 0, idx, out=masks[:n]))
        return self.images[idx], self.masks[idx]
