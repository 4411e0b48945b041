"""The train/validation split: validation folders of the dataset's own, or a seeded split of the training pairs by
group (Carvana: cars) or by contiguous blocks of frames, and the check that a per-image split of video frames leaks.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np

from unetseg.config import DataConfig
from unetseg.data.errors import DataError
from unetseg.data.pairing import Pair

#: A "blocks" split cuts the frames, in name order, into this many contiguous runs.
BLOCKS = 10
#: ``<sequence><separator><frame number>`` names (``0016E5_07959``, ``seq3-000120``, ``frame_0042``).
_FRAME = re.compile(r"^(.*?)[_\-. ]?(\d{3,})$")


def split_by_group(pairs: list[Pair], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded, reproducible train/validation split that keeps each group (Carvana: car) on one side.

    Returns:
        (train indices, validation indices); validation is empty when ``val_fraction`` is 0 or there is one group.
    """
    groups = sorted({p.group for p in pairs})
    rng = np.random.default_rng(seed)
    order = [groups[i] for i in rng.permutation(len(groups))]
    n_val = 0 if val_fraction == 0 or len(groups) < 2 else min(len(groups) - 1, max(1, round(val_fraction * len(groups))))
    val_groups = set(order[:n_val])
    train = [i for i, p in enumerate(pairs) if p.group not in val_groups]
    val = [i for i, p in enumerate(pairs) if p.group in val_groups]
    return train, val


def _natural(stem: str) -> tuple:
    """Sort key that orders ``frame_9`` before ``frame_10``."""
    return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", stem))


def split_by_blocks(pairs: list[Pair], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded split of the pairs, in natural name order, into BLOCKS contiguous runs, ``val_fraction`` of the runs
    held out: neighbouring video frames stay on one side except at the runs' ends.

    Returns:
        (train indices, validation indices), each in the pairs' order.
    """
    order = sorted(range(len(pairs)), key=lambda i: _natural(pairs[i].image.stem))
    n_blocks = min(BLOCKS, len(pairs))
    blocks = np.array_split(np.asarray(order, dtype=np.int64), n_blocks) if n_blocks else []
    n_val = 0 if val_fraction == 0 or n_blocks < 2 else min(n_blocks - 1, max(1, round(val_fraction * n_blocks)))
    chosen = set(np.random.default_rng(seed).permutation(n_blocks)[:n_val].tolist())
    held = {int(i) for b in sorted(chosen) for i in blocks[b]}
    return [i for i in range(len(pairs)) if i not in held], sorted(held)


def kfold(pairs: list[Pair], k: int, split: str, seed: int) -> list[int]:
    """The fold (0..k-1) of each pair in a seeded k-fold split that keeps a group (``split="groups"``: Carvana's car,
    ``--group-pattern``'s match) or a contiguous block of frames (``"blocks"``: ``max(BLOCKS, k)`` runs in name
    order) in one fold. The units are shuffled with ``seed`` and each goes, largest first, to the fold holding the
    fewest pairs so far (ties: the lower fold), so the folds are as even as whole units allow.

    Raises:
        DataError: when there are fewer units (groups, blocks, images) than folds.
    """
    if split == "blocks":
        order = sorted(range(len(pairs)), key=lambda i: _natural(pairs[i].image.stem))
        units = [b.tolist() for b in np.array_split(np.asarray(order, dtype=np.int64), min(max(BLOCKS, k),
                                                                                           len(pairs)))]
        what = "blocks of frames"
    else:
        by_group: dict[str, list[int]] = {}
        for i, p in enumerate(pairs):
            by_group.setdefault(p.group, []).append(i)
        units = [by_group[g] for g in sorted(by_group)]
        what = "groups" if len(units) < len(pairs) else "images"
    if len(units) < k:
        raise DataError(f"--folds {k}: the {len(pairs)} training pairs make only {len(units)} {what} (a fold "
                        f"holds whole ones): give --folds {max(2, len(units))} or fewer")
    shuffled = [units[i] for i in np.random.default_rng(seed).permutation(len(units))]
    shuffled.sort(key=len, reverse=True)  # stable: equal sizes stay in the seeded order
    sizes, fold = [0] * k, [0] * len(pairs)
    for unit in shuffled:
        target = min(range(k), key=lambda f: (sizes[f], f))
        sizes[target] += len(unit)
        for i in unit:
            fold[i] = target
    return fold


def split_pairs(pairs: list[Pair], cfg: DataConfig) -> tuple[list[int], list[int]]:
    """The run's split: the validation folders' pairs where given; in fold ``cfg.fold`` of a ``cfg.folds``-fold
    cross-validation, that fold's pairs (:func:`kfold`); else ``cfg.split`` over the training pairs. With
    ``cfg.train_on_val`` the validation pairs are in both lists.

    Returns:
        (train indices, validation indices) into ``pairs``.
    """
    if any(p.split == "val" for p in pairs):
        train, val = [i for i, p in enumerate(pairs) if p.split != "val"], [i for i, p in enumerate(pairs)
                                                                             if p.split == "val"]
    elif cfg.folds > 1 and cfg.fold is not None:
        fold = kfold(pairs, cfg.folds, cfg.split, cfg.split_seed)
        train, val = [i for i, f in enumerate(fold) if f != cfg.fold], [i for i, f in enumerate(fold) if f == cfg.fold]
    elif cfg.split == "blocks":
        train, val = split_by_blocks(pairs, cfg.val_fraction, cfg.split_seed)
    else:
        train, val = split_by_group(pairs, cfg.val_fraction, cfg.split_seed)
    return (sorted(train + val) if cfg.train_on_val else train), val


def describe_split(pairs: list[Pair], cfg: DataConfig) -> str:
    """How the split is made, in words (for notes and logs)."""
    also = "; --train-on-val: the validation pairs train too" if cfg.train_on_val else ""
    return _describe(pairs, cfg) + also


def _describe(pairs: list[Pair], cfg: DataConfig) -> str:
    if any(p.split == "val" for p in pairs):
        return f"validation folders {cfg.val_data or cfg.val_images}"
    if cfg.folds > 1 and cfg.fold is not None:
        unit = "blocks of frames" if cfg.split == "blocks" else "groups"
        return f"fold {cfg.fold} of {cfg.folds} (by {unit}, --split-seed {cfg.split_seed})"
    if cfg.split == "blocks":
        return f"{min(BLOCKS, len(pairs))} contiguous blocks of frames in name order, --split-seed {cfg.split_seed}"
    groups = len({p.group for p in pairs})
    rule = f"groups by --group-pattern {cfg.group_pattern!r}" if cfg.group_pattern else \
        "Carvana car ids" if groups < len(pairs) else "each image its own group"
    return f"{groups} groups: {rule}; --split-seed {cfg.split_seed}"


def frame_sequences(pairs: list[Pair]) -> Counter | None:
    """The sequences of names that carry a sequence and a frame number (``0016E5_07959``), counted, when most names
    do and sequences hold several frames each; None otherwise."""
    if len(pairs) < 10:
        return None
    matches = [_FRAME.match(p.image.stem) for p in pairs]
    found = Counter(m.group(1) for m in matches if m)
    if sum(found.values()) < 0.8 * len(pairs) or max(found.values(), default=0) < 5:
        return None
    # a sequence id (0016E5, seq01, 2011_09_26_drive_0001) or several sequences; plain numbering (0001, img_0001)
    # says nothing about where the images come from
    if len(found) < 2 and not any(ch.isdigit() for ch in next(iter(found))):
        return None
    return found


def leak_warning(pairs: list[Pair], cfg: DataConfig) -> str | None:
    """A warning when the split would be made per image over names that look like video frames: neighbouring frames
    look alike, so validation would flatter the model."""
    if any(p.split == "val" for p in pairs) or cfg.split != "groups" or cfg.group_pattern or cfg.val_fraction == 0:
        return None
    if len({p.group for p in pairs}) < len(pairs):  # grouped already (Carvana's cars)
        return None
    sequences = frame_sequences(pairs)
    if sequences is None:
        return None
    example = pairs[0].image.stem
    seq = sequences.most_common(1)[0][0]
    grouping = f"--group-pattern '^(.*?)[_-]?\\d+$' (whole sequences on one side: {len(sequences)} here)" \
        if len(sequences) >= 3 else ""
    return (f"{pairs[0].image.parent}: the names carry a sequence and a frame number ({example}: sequence "
            f"{seq or '(none)'}), so a per-image split puts neighbouring frames, which look alike, on both sides "
            f"and validation flatters the model; give --split blocks (contiguous runs of frames)"
            + (f", {grouping}" if grouping else "") + ", or --val-data DIR (the dataset's own split)")


def pairs_of_split(pairs: list[Pair], which: str, names: list[str]) -> list[Pair]:
    """The pairs of a run's ``which`` split ("train" or "val"): the validation folders' pairs (marked) where the run
    has them, else those whose image names are in ``names`` (the run's split.json), in ``names`` order.

    Raises:
        DataError: when images of the split are missing.
    """
    if any(p.split == "val" for p in pairs):
        return [p for p in pairs if (p.split == "val") == (which == "val")]
    by_name = {p.image.name: p for p in pairs}
    missing = [n for n in names if n not in by_name]
    if missing:
        folder = pairs[0].image.parent if pairs else Path(".")
        raise DataError(f"{folder}: {len(missing)} image(s) of the run's split are missing, e.g. {missing[0]}")
    return [by_name[n] for n in names]
