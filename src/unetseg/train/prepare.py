"""Before step 1: the data (checked, paired, split into ``split.json``, decoded) and the budget plan, which runs
between the pairing and the decoding because it chooses the size the images are decoded to. What the data and the
plan decide is written into the run's config here, once; :mod:`unetseg.train.loop` then trains on a frozen copy."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unetseg._device import free_memory
from unetseg.checkpoint import SPLIT_FILE
from unetseg.config import RunConfig
from unetseg.data import ArrayDataset
from unetseg.data.ceiling import dataset_ceiling, dice_from_iou
from unetseg.data.check import adopt, format_report, scan
from unetseg.data.io import image_info
from unetseg.data.node_cache import load_node_cache
from unetseg.data.pairing import Pairing, pair_files
from unetseg.data.split import describe_split, split_pairs
from unetseg.train.distributed import World
from unetseg.train.plan import SEED_PIXELS, encoder_everywhere, make_plan, model_stride, planned_batch, size_for
from unetseg.train.run_dir import process_cache

logger = logging.getLogger(__name__)

CARVANA_SIZE = (1918, 1280)  # the seed's 480x320 is made for these photos


@dataclass
class RunData:
    train: ArrayDataset
    val: ArrayDataset | None
    check: str = ""  # the check-data report of the data
    ceiling: dict[str, Any] | None = None  # the resolution ceiling at the training size (data/ceiling.py)
    node_cache: Path | None = None  # the folder of a cache shared by the node's processes


def load_data(cfg: RunConfig, out: Path, resume: bool, world: World,
               before_decode: Callable[[Pairing], None] | None = None) -> RunData:
    """Check, pair, split (saved to ``split.json``) and decode the dataset; writes what the data decides (mask
    encoding, channels, classes) into ``cfg``. ``before_decode`` sees the pairing first (the budget plan, which
    chooses the size the images are decoded to).

    Raises:
        DataError: listing every problem the checks found, the first in front.
    """
    pairing = pair_files(cfg.data)
    if before_decode is not None:
        before_decode(pairing)
    width, height = cfg.data.image_size
    pairs_bytes = len(pairing.pairs) * width * height * cfg.model.in_channels
    node_cache = None
    if world.local_size > 1 and cfg.data.cache != "memory":  # torchrun: one decode per node, shared
        data, report, node_cache = load_node_cache(cfg, pairing, out, world.local_rank, progress=cfg.train.progress)
    else:
        on_disk = cfg.data.cache == "disk" or (cfg.data.cache == "auto" and
                                               pairs_bytes > free_memory(torch.device("cpu")) // 2)
        cache_file = process_cache(cfg, out, world) if on_disk else None
        if on_disk:
            logger.info("decoded images (%.1f GB) go to a memory-mapped cache: %s", pairs_bytes / 1e9, cache_file)
        data, report = scan(cfg, progress=cfg.train.progress, cache_file=cache_file, pairing=pairing)
    report.raise_errors()  # before the notes: a run that cannot start says why in one line
    for note in report.notes:
        logger.info("%s", note)
    for warning in report.warnings[:5]:
        logger.warning("warning: %s", warning)
    assert data is not None
    adopt(cfg, data, report)
    pairs = data.pairs
    split_path = out / SPLIT_FILE
    if any(p.split == "val" for p in pairs):  # the validation folders are the split, also on resume
        train_idx, val_idx = split_pairs(pairs, cfg.data)
        split = {"train": [pairs[i].image.name for i in train_idx], "val": [pairs[i].image.name for i in val_idx],
                 "val_folders": cfg.data.val_data or cfg.data.val_images}
        if world.is_main:
            split_path.write_text(json.dumps(split, indent=1) + "\n")
    elif resume and split_path.is_file():
        split = json.loads(split_path.read_text())
        by_name = {p.image.name: i for i, p in enumerate(pairs)}
        train_idx = [by_name[n] for n in split["train"] if n in by_name]
        val_idx = [by_name[n] for n in split["val"] if n in by_name]
    else:
        train_idx, val_idx = split_pairs(pairs, cfg.data)
        split = {"train": [pairs[i].image.name for i in train_idx], "val": [pairs[i].image.name for i in val_idx]}
        if world.is_main:
            split_path.write_text(json.dumps(split, indent=1) + "\n")
    enc = data.encoding
    logger.info("data: %d pairs (%s), %d train / %d validation (%s); %d channel(s), mask values %s -> %d classes%s%s",
                len(pairs), report.rule, len(train_idx), len(val_idx), describe_split(pairs, cfg.data),
                cfg.model.in_channels, enc.describe(enc.values), enc.num_labels,
                f" ({', '.join(report.names)})" if cfg.data.class_names else "",
                f", {enc.describe(enc.ignore)} ignored" if enc.ignore else "")
    if cfg.data.train_on_val and val_idx:
        logger.warning("--train-on-val: the %d validation pairs train too, so the validation scores follow the run "
                       "but do not measure it (they are on trained images); the final weights are the model",
                       len(val_idx))
    ceiling = _training_ceiling(cfg, [pairs[i].mask for i in train_idx]) if world.is_main else None
    return RunData(data.subset(train_idx), data.subset(val_idx) if val_idx else None, check=format_report(report),
                 ceiling=ceiling, node_cache=node_cache)


def _training_ceiling(cfg: RunConfig, masks: list[Path]) -> dict[str, Any] | None:
    """The resolution ceiling (Dice per class, the worst) of sampled training masks at the training size, for the
    run's record and report; None where the masks hold no labels."""
    try:
        rows, k = dataset_ceiling(masks, [tuple(cfg.data.image_size)], cfg.data.ignore_index)
    except Exception as err:  # noqa: BLE001 - a record, never a reason to stop
        logger.debug("no resolution ceiling: %s", err)
        return None
    if k == 0:
        return None
    dice = dice_from_iou(rows[0])
    logger.info("resolution ceiling at %dx%d: Dice <= %.3f for the worst class (sampled training masks shrunk to it "
                "and enlarged back)", *cfg.data.image_size, float(np.nanmin(dice)) if not np.isnan(dice).all() else 1.0)
    return {"size": list(cfg.data.image_size), "dice_per_class": [None if np.isnan(v) else round(float(v), 4)
                                                                   for v in dice]}


def _one_size(pairing: Pairing, native: tuple[int, int]) -> bool:
    """Whether every image of the pairing has the size ``native`` (headers only)."""
    try:
        return all(image_info(p.image)[0] == native for p in pairing.pairs)
    except Exception:  # noqa: BLE001 - the checks report unreadable files
        return False



def plan_before_decode(pairing: Pairing, cfg: RunConfig, keep: set[str], budget: float | None, resume: bool,
                        world: World, device: torch.device, dtype: torch.dtype | None,
                        layout: torch.memory_format, started: float, derived: list[tuple[int, int]]) -> None:
    """Before decoding: the budget plan, or a training size that keeps the images' aspect ratio (appended to
    ``derived``, for the log)."""
    if resume or not pairing.pairs or pairing.problems:
        return  # a resumed run keeps its plan and size; files in error are reported first
    try:
        native, _ = image_info(pairing.pairs[0].image)
    except Exception:  # noqa: BLE001 - the checks report unreadable files
        return
    if cfg.data.patch is not None:  # crops of the images at their own resolution, unless a size is given
        if "data.image_size" not in keep:
            sizes = {image_info(p.image)[0] for p in pairing.pairs}  # headers only
            if len(sizes) > 1:
                shown = ", ".join(f"{w}x{h}" for w, h in sorted(sizes)[:4])
                raise ValueError(f"--patch: the images differ in size ({shown}, ...): give --image-size to "
                                 f"resize them to one before cropping")
            cfg.data.image_size = native
            keep.add("data.image_size")
        cfg.data.patch_scale = (cfg.data.image_size[0] / native[0], cfg.data.image_size[1] / native[1])
        if cfg.data.patch[0] > cfg.data.image_size[0] or cfg.data.patch[1] > cfg.data.image_size[1]:
            raise ValueError(f"--patch {cfg.data.patch[0]}x{cfg.data.patch[1]} is larger than the training "
                             f"images ({cfg.data.image_size[0]}x{cfg.data.image_size[1]})")
        logger.info("training on random %dx%d crops of the images at %dx%d (%.3g x %.3g their %dx%d)",
                    *cfg.data.patch, *cfg.data.image_size, *cfg.data.patch_scale, *native)
    if budget is not None:  # a fresh run plans afresh, also from a budget run's config.json
        train_idx, val_idx = split_pairs(pairing.pairs, cfg.data)
        planned_batch(cfg, keep, len(train_idx), device, world.size)  # every process refuses alike, before the plan
        here = encoder_everywhere(world, device)  # every process looks and all agree, before rank 0 plans
        if world.is_main:
            masks = [] if cfg.data.snap_masks else [pairing.pairs[i].mask for i in train_idx]  # JPEG masks:
            try:                                                                                # stray values
                found = dataset_ceiling(masks, [], cfg.data.ignore_index)[1]
            except Exception as err:  # noqa: BLE001 - the checks report unreadable masks
                logger.debug("no resolution ceiling: %s", err)
                found = 0
            uniform = "data.image_size" not in keep and _one_size(pairing, native)
            plan = make_plan(cfg, len(train_idx), len(val_idx), native, device, dtype, layout, keep, started,
                             world.size, lambda sizes: dataset_ceiling(masks, sizes, cfg.data.ignore_index)[0],
                             max(2, found), uniform, here).to_dict()
        planned = RunConfig.from_dict(world.broadcast_object(plan if world.is_main else None))  # one plan for all
        cfg.model, cfg.data, cfg.train = planned.model, planned.data, planned.train
    elif budget is None and "data.image_size" not in keep and native != CARVANA_SIZE:
        cfg.data.image_size = size_for(native[0] / native[1], min(1.0, native[0] * native[1] / SEED_PIXELS),
                                        native, model_stride(cfg))
        derived.append(native)
    crop = cfg.data.crop
    if crop is not None and (crop[0] > cfg.data.image_size[0] or crop[1] > cfg.data.image_size[1]):
        raise ValueError(f"--crop {crop[0]}x{crop[1]} is larger than the training size "
                         f"{cfg.data.image_size[0]}x{cfg.data.image_size[1]}: give a smaller crop or --image-size")
