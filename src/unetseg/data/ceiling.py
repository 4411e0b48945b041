"""The resolution ceiling: the best IoU (and Dice) a model could reach per class when it is trained at a smaller
size, found from the masks alone (no model). Each mask is taken down to the training size as the pipeline does (nearest
neighbour), its one-hot classes taken back up to the mask's own size and turned into classes as predictions are
(bilinear, then :func:`unetseg.metrics.logits_to_classes`), and scored against the original with the metrics' one
confusion matrix. Thin structures (poles, vessels) lose most; large regions almost nothing.

A dataset's ceilings are cached (``~/.cache/unetseg``, or ``$UNETSEG_CACHE``), keyed by the masks sampled (path,
size, modification time), the ignored values and the size, so a repeated check, or plan, of the same masks computes
each size once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from unetseg.data.encoding import IGNORE
from unetseg.data.io import read_mask
from unetseg.metrics import confusion_matrix, counts_from_confusion, iou_from_counts, logits_to_classes

logger = logging.getLogger(__name__)

#: Masks read to estimate a dataset's ceiling (evenly spread over its files).
CEILING_SAMPLE = 12
#: Part of the cache key: raise it when the ceiling's computation changes.
CACHE_VERSION = 1


def resolution_ceiling(masks: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]], num_labels: int) -> np.ndarray:
    """IoU per class of masks taken down to each size and back, pooled over the masks.

    Args:
        masks: class-index maps (H, W) uint8 at their own size; IGNORE (255) counts nowhere.
        sizes: candidate training sizes (width, height).
        num_labels: the number of classes.

    Returns:
        (len(sizes), num_labels) float64: the IoU ceiling; NaN for a class in none of the masks.
    """
    matrices = torch.zeros(len(sizes), num_labels, num_labels, dtype=torch.int64)
    for mask in masks:
        target = torch.from_numpy(mask)[None]
        for s, size in enumerate(sizes):
            small = torch.from_numpy(np.array(Image.fromarray(mask).resize(tuple(size), Image.NEAREST)))
            onehot = F.one_hot(small.long().clamp(max=num_labels), num_labels + 1)[..., :num_labels]  # void: none
            scores = F.interpolate(onehot.permute(2, 0, 1)[None].float(), size=mask.shape, mode="bilinear",
                                   align_corners=False)
            matrices[s] += confusion_matrix(logits_to_classes(scores), target, num_labels)[0]
    return iou_from_counts(counts_from_confusion(matrices)).numpy()


def sample_class_maps(mask_paths: Sequence[Path], ignore: Sequence[int] = (),
                      sample: int = CEILING_SAMPLE) -> tuple[list[np.ndarray], int]:
    """Class-index maps of up to ``sample`` masks spread evenly over ``mask_paths``, their stored values numbered in
    sorted order (ignored values -> IGNORE), before the dataset's encoding is known (the budget plan).

    Returns:
        (maps, number of classes found).
    """
    chosen = _spread(list(mask_paths), sample)
    stored = [read_mask(p).values for p in chosen]
    values = sorted({int(v) for m in stored for v in np.unique(m)} - set(ignore))
    if len(values) > 64:  # not labels (a JPEG mask): no ceiling
        return [], 0
    table = {v: k for k, v in enumerate(values)}
    maps = []
    for m in stored:
        found, inverse = np.unique(m, return_inverse=True)
        lookup = np.array([table.get(int(v), IGNORE) for v in found], dtype=np.uint8)
        maps.append(lookup[inverse.reshape(m.shape)])
    return maps, len(values)


def dice_from_iou(iou: np.ndarray | float) -> np.ndarray | float:
    """Dice of the same counts as an IoU: 2 IoU / (1 + IoU)."""
    return 2 * iou / (1 + iou)


def cache_dir() -> Path:
    """Where ceilings are cached: ``$UNETSEG_CACHE``, else ``$XDG_CACHE_HOME/unetseg`` or ``~/.cache/unetseg``."""
    if os.environ.get("UNETSEG_CACHE"):
        return Path(os.environ["UNETSEG_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "unetseg"


def dataset_ceiling(mask_paths: Sequence[Path], sizes: Sequence[tuple[int, int]], ignore: Sequence[int] = (),
                    sample: int = CEILING_SAMPLE) -> tuple[np.ndarray, int]:
    """The resolution ceiling (IoU per class, :func:`resolution_ceiling`) of a sample of a dataset's masks at each
    size, from the cache where it holds the size; the sizes computed are added to it.

    Returns:
        ((len(sizes), classes) IoU, NaN for a class in no sampled mask; number of classes). (empty, 0) when the masks
        hold no labels (more than 64 values).
    """
    chosen = _spread(list(mask_paths), sample)
    key = hashlib.sha256(json.dumps([CACHE_VERSION, sorted(int(v) for v in ignore)] + [
        [str(p.resolve()), *_stamp(p)] for p in chosen]).encode()).hexdigest()[:24]
    file = _cache_file(key)
    cached = _read_cache(file)
    missing = [s for s in sizes if f"{s[0]}x{s[1]}" not in cached["sizes"]]
    if missing or cached["classes"] is None:
        maps, found = sample_class_maps(chosen, ignore, sample=len(chosen))
        if not maps or found == 0:  # not labels, or every sampled pixel ignored: no ceiling
            return np.zeros((len(sizes), 0)), 0
        k = max(2, found)  # a sample of background only still has a foreground class to lose
        rows = resolution_ceiling(maps, missing, k) if missing else np.zeros((0, k))
        cached = {"classes": k, "masks": len(maps), "sizes": {**cached["sizes"], **{
            f"{s[0]}x{s[1]}": [None if np.isnan(v) else float(v) for v in row] for s, row in zip(missing, rows)}}}
        _write_cache(file, cached)
    table, k = cached["sizes"], int(cached["classes"])
    rows = np.array([[np.nan if v is None else v for v in table[f"{s[0]}x{s[1]}"]] for s in sizes], dtype=np.float64)
    return rows.reshape(len(sizes), k), k


def _spread(paths: list[Path], sample: int) -> list[Path]:
    """Up to ``sample`` of ``paths``, evenly spread."""
    if not paths:
        return []
    picks = np.unique(np.linspace(0, len(paths) - 1, min(sample, len(paths))).round().astype(int))
    return [Path(paths[i]) for i in picks]


def _cache_file(key: str) -> Path | None:
    try:
        return cache_dir() / f"ceiling-{key}.json"
    except RuntimeError:  # no home directory: no cache
        return None


def _read_cache(file: Path | None) -> dict:
    """The cached entry, or an empty one where the file is missing, unreadable or of another shape."""
    empty = {"classes": None, "sizes": {}}
    try:
        cached = json.loads(file.read_text()) if file is not None else empty
        k = cached["classes"]
        if not isinstance(k, int) or not isinstance(cached["sizes"], dict) or any(
                not isinstance(row, list) or len(row) != k for row in cached["sizes"].values()):
            return empty
        return cached
    except (OSError, ValueError, TypeError, KeyError):
        return empty


def _write_cache(file: Path | None, cached: dict) -> None:
    """Write atomically; a cache that cannot be written (read-only home) is computed again next time."""
    if file is None:
        return
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=file.parent, suffix=".tmp", delete=False) as tmp:
            tmp.write(json.dumps(cached))
        os.replace(tmp.name, file)
    except OSError as err:
        logger.debug("ceiling cache not written: %s", err)
        with contextlib.suppress(OSError, UnboundLocalError):
            os.unlink(tmp.name)


def _stamp(path: Path) -> list[int]:
    try:
        st = path.stat()
        return [st.st_size, st.st_mtime_ns]
    except OSError:
        return [-1, -1]


def worst_class(row: np.ndarray) -> tuple[float, int]:
    """(the lowest ceiling, its class) of one size's per-class ceilings (NaN: a class in no sampled mask)."""
    if row.size == 0 or np.isnan(row).all():
        return 1.0, -1
    k = int(np.nanargmin(row))
    return float(row[k]), k
