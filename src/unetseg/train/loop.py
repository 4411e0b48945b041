"""The training loop: ``fit(cfg, out_dir)`` trains a U-Net and writes a run folder.

Every random draw of a step (batch order, rotation angles, flips) comes from a generator seeded by
(seed, epoch, step), so a run resumed at any step sees the batches and augmentations it would have seen.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from unetseg._atomic import atomic_write_text
from unetseg._device import autocast_dtype, device_name, free_memory, memory_format
from unetseg.checkpoint import (BEST_FILE, CONFIG_FILE, METRICS_FILE, RUN_INFO_FILE, SPLIT_FILE, STATE_FILE,
                                WEIGHTS_FILE, CheckpointError, load_training_state, save_training_state, save_weights)
from unetseg.config import RunConfig, parse_duration
from unetseg.data import ArrayDataset
from unetseg.data.ceiling import dataset_ceiling, dice_from_iou
from unetseg.data.classes import class_names
from unetseg.data.check import adopt, format_report, scan
from unetseg.data.io import image_info
from unetseg.data.node_cache import cache_prefix, load_node_cache
from unetseg.data.pairing import Pairing, pair_files
from unetseg.data.split import describe_split, split_pairs
from unetseg.data.transforms import augment, to_float
from unetseg.metrics import (class_scores, confusion_matrix, counts_from_confusion, dice_from_counts, foreground_mean,
                             logits_to_classes)
from unetseg.model import UNet
from unetseg.drawing.curves import CURVES_FILE, CurvesPainter
from unetseg.train._state import (LossLog, Position, StopOnSignal, TrainingInterrupted, restore_rng, rng_state,
                                   truncate_metrics)
from unetseg.train.distributed import World, close_world, init_world
from unetseg.train.losses import SegmentationLoss, resolve_class_weights
from unetseg.train.plan import BN_IMAGES, FORWARD_SHARE, SEED_PIXELS, TARGET, BudgetClock, make_plan, size_for
from unetseg.train.weights import WeightAverage, recalibrate_bn

logger = logging.getLogger(__name__)

CARVANA_SIZE = (1918, 1280)  # the seed's 480x320 is made for these photos


def _generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded from a tuple of integers (e.g. seed, epoch, step)."""
    seed = int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0] >> 1)
    return torch.Generator().manual_seed(seed)


#: Files a run writes before its first last.pt (config, split, log, and the weights and curves of a first validation
#: killed before the state); a folder holding nothing else never started training.
_PRE_START_FILES = {CONFIG_FILE, SPLIT_FILE, "train.log", METRICS_FILE, RUN_INFO_FILE, WEIGHTS_FILE, BEST_FILE,
                    CURVES_FILE}


def _never_started(out: Path) -> bool:
    """True when ``out`` holds only what a run writes before its first saved state (a run that failed early, e.g.
    on a typo in --data), so the corrected command may start afresh there. Its train.log tells it from a folder
    holding only a config.json the user wrote; a folder holding only a run's caches (a process killed while
    decoding) counts too."""
    files = list(out.iterdir())
    caches = [p for p in files if (p.name.startswith(".") and p.suffix in (".tmp", ".npy"))
              or p.name.startswith(".cache-")]
    ours = all(p in caches or p.name in _PRE_START_FILES for p in files)
    return ours and ((out / "train.log").is_file() or len(caches) == len(files))


def resume_or_start(out_dir: str | Path) -> bool:
    """``--resume auto``: True where ``out_dir`` holds a run to resume (its ``last.pt``), False where it is absent or
    empty or holds a run that stopped before its first checkpoint (start afresh). The way to run under
    ``torchrun --max-restarts``, on preemptible machines and in job schedulers that run a command again.

    Raises:
        CheckpointError: when the folder holds anything else.
    """
    out = Path(out_dir)
    if (out / STATE_FILE).is_file():
        return True
    if not out.exists() or not any(out.iterdir()) or _never_started(out):
        return False
    raise CheckpointError(f"{out}: --resume auto: the folder holds files but no {STATE_FILE}, so neither a run to "
                          f"resume nor an empty folder; give another --out, or --overwrite to replace it")


def prepare_run_dir(out_dir: str | Path, resume: bool, overwrite: bool, world: World = World()) -> Path:
    """Create the run folder; a folder that already holds a run is only reused with resume or overwrite. A folder
    left by a run that failed before saving any state (only its log, config or split) is started afresh.

    Raises:
        CheckpointError: when ``out_dir`` holds files and neither flag is given (on every process alike).
    """
    out = Path(out_dir)
    restart = out.is_dir() and any(out.iterdir()) and not resume and not overwrite and _never_started(out)
    if out.exists() and any(out.iterdir()) and not resume and not overwrite and not restart:
        raise CheckpointError(f"{out}: folder is not empty; pass --resume to continue the run there or "
                              f"--overwrite to replace it")
    if resume and not (out / STATE_FILE).is_file():
        raise CheckpointError(f"{out / STATE_FILE}: not found, nothing to resume"
                              + ("; the run stopped before its first checkpoint: start it again with --out"
                                 if out.is_dir() else ""))
    world.barrier()  # every process has looked before the main one changes anything
    if world.is_main:
        if overwrite and not resume and out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        if restart:  # the log stays, and tells both attempts
            for name in _PRE_START_FILES - {"train.log"}:
                (out / name).unlink(missing_ok=True)
            logger.info("%s: a run that stopped before its first checkpoint; starting afresh", out)
        for stale in out.glob(".*.tmp"):  # left by a kill during an atomic write
            stale.unlink()
    world.barrier()
    return out


@dataclass
class _Data:
    train: ArrayDataset
    val: ArrayDataset | None
    check: str = ""  # the check-data report of the data
    ceiling: dict[str, Any] | None = None  # the resolution ceiling at the training size (data/ceiling.py)
    node_cache: Path | None = None  # the folder of a cache shared by the node's processes


def _load_data(cfg: RunConfig, out: Path, resume: bool, world: World,
               before_decode: Callable[[Pairing], None] | None = None) -> _Data:
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
        cache_file = _process_cache(cfg, out, world) if on_disk else None
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
    ceiling = _training_ceiling(cfg, [pairs[i].mask for i in train_idx]) if world.is_main else None
    return _Data(data.subset(train_idx), data.subset(val_idx) if val_idx else None, check=format_report(report),
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


def _process_cache(cfg: RunConfig, out: Path, world: World) -> Path:
    """The memory-mapped image cache of one process (``--cache disk``), named after the run and the rank."""
    return (Path(cfg.data.cache_dir) if cfg.data.cache_dir else out) / f"{cache_prefix(out)}-images-{world.rank}.npy"


@torch.inference_mode()
def evaluate(model: torch.nn.Module, data: ArrayDataset, cfg: RunConfig, device: torch.device,
             batch_size: int | None = None, world: World = World()) -> dict[str, Any]:
    """Loss, mean per-image Dice (foreground classes) and the pooled confusion matrix's scores on decoded data at
    the training size.

    Under torchrun each process scores a contiguous share of the images, and the sums (losses, per-image Dice,
    the number of images scored, the confusion matrix) are added over the processes before dividing: the same
    figures as one process.

    Returns:
        ``{"loss": ..., "dice": ..., "dice_per_class": [...], "miou": ..., "iou_per_class": [...],
        "pixel_accuracy": ...}``: the per-image mean Dice of each foreground class (one entry for binary data; NaN
        for a class never present nor predicted); IoU of every class and their mean over the scored classes, and
        global pixel accuracy, from the confusion matrix pooled over the images (the CamVid protocol).
    """
    model.eval()
    dtype = autocast_dtype(device, cfg.train.amp)
    layout = memory_format(device, cfg.train.memory_format, training=True)  # the training model's layout
    loss_fn = SegmentationLoss(cfg.train.loss, cfg.train.class_weight_values)
    labels = max(2, cfg.model.num_classes)
    share = np.array_split(np.arange(len(data)), world.size)[world.rank]
    batch = batch_size or cfg.train.batch_size
    # sums over the images: (loss x images, images), and per column (foreground mean, then each foreground class)
    # the Dice and the number of images it is defined for
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    dice_sum = torch.zeros(labels, dtype=torch.float64, device=device)
    dice_n = torch.zeros(labels, dtype=torch.float64, device=device)
    matrix = torch.zeros(labels, labels, dtype=torch.float64, device=device)
    for start in range(0, len(share), batch):
        images, masks = data.take(share[start:start + batch])
        x = to_float(torch.from_numpy(images).to(device), cfg.data.mean, cfg.data.std)
        y = torch.from_numpy(masks).to(device).long()
        x = x.contiguous(memory_format=layout)
        with torch.autocast(device.type, dtype=dtype) if dtype else nullcontext():
            logits = model(x)
        confusion = confusion_matrix(logits_to_classes(logits), y, labels)  # (images, labels, labels)
        matrix += confusion.sum(0)
        dice = dice_from_counts(counts_from_confusion(confusion))  # (images, labels)
        columns = torch.cat([foreground_mean(dice)[:, None], dice[:, 1:]], dim=1)
        totals += torch.stack([loss_fn(logits, y).double() * len(x), torch.tensor(len(x), device=device)])
        dice_sum += columns.nan_to_num().sum(0)
        dice_n += (~columns.isnan()).sum(0)
    totals, dice_sum, dice_n, matrix = world.sum(torch.cat([totals, dice_sum, dice_n, matrix.flatten()])).split(
        [2, labels, labels, labels * labels])
    dice = (dice_sum / dice_n.clamp_min(1)).masked_fill(dice_n == 0, float("nan")).tolist()
    scores = class_scores(matrix.reshape(labels, labels).round().long().cpu())
    return {"loss": float(totals[0] / totals[1]) if totals[1] else float("nan"), "dice": dice[0],
            "dice_per_class": dice[1:], "miou": scores["miou"], "iou_per_class": scores["iou"],
            "pixel_accuracy": scores["pixel_accuracy"]}


def cosine_lr(step: int, total: int, warmup: int, lr: float, min_lr: float) -> float:
    """The "cosine" schedule's learning rate for the 0-based optimiser ``step`` of ``total``: linear warm-up over
    ``warmup`` steps, then one cosine decay that reaches ``min_lr`` at the last step."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup - 1))
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


#: Pixels kept per class and image as centres of oversampled crops.
CENTRES_PER_CLASS = 64


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


def _crops(images: torch.Tensor, masks: torch.Tensor, idx: torch.Tensor, patch: tuple[int, int],
           generator: torch.Generator, centres: dict[int, list[np.ndarray]] | None = None,
           oversample: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ``patch`` (width, height) crops of the cached images ``idx``, their corners drawn from the step's
    generator (before the augmentation's draws: exact resume holds). With ``oversample`` > 0, that share of the crops
    (drawn per crop) is centred on a pixel of a class present in the image, the class drawn uniformly among them
    (nnU-Net's foreground oversampling, which makes rare classes seen). Only the crops are read, so a memory-mapped
    cache of large images is touched a patch at a time."""
    pw, ph = patch
    height, width = images.shape[1:3]
    n = len(idx)
    ys = torch.randint(0, height - ph + 1, (n,), generator=generator).tolist()
    xs = torch.randint(0, width - pw + 1, (n,), generator=generator).tolist()
    rows = idx.tolist()
    if oversample > 0 and centres is not None:
        u, v, w = torch.rand(3, n, generator=generator, dtype=torch.float64).tolist()
        for i, r in enumerate(rows):
            present = [pts for pts in centres.get(r, []) if len(pts)]
            if u[i] < oversample and present:
                pts = present[min(len(present) - 1, int(v[i] * len(present)))]
                cy, cx = pts[min(len(pts) - 1, int(w[i] * len(pts)))].tolist()
                ys[i] = min(max(0, cy - ph // 2), height - ph)
                xs[i] = min(max(0, cx - pw // 2), width - pw)
    return (torch.stack([images[r, y:y + ph, x:x + pw] for r, y, x in zip(rows, ys, xs)]),
            torch.stack([masks[r, y:y + ph, x:x + pw] for r, y, x in zip(rows, ys, xs)]))


def _place_cache(data: ArrayDataset, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The uint8 cache as tensors (images, masks, the training rows): on a GPU itself when it takes under a quarter
    of the free memory (Carvana at 480x320 is 2.3 GB), so steps copy nothing from the host; else on the host
    (pinned when in RAM), where a memory-mapped cache is read batch by batch."""
    with warnings.catch_warnings():  # a node cache is mapped read-only; steps only read it
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        images, masks = torch.from_numpy(data.images), torch.from_numpy(data.masks)
    rows = torch.from_numpy(data.row_numbers())
    if device.type == "cuda":
        if images.nbytes + masks.nbytes < free_memory(device) // 4:
            return images.to(device), masks.to(device), rows.to(device)
        if not isinstance(data.images, np.memmap):
            return images.pin_memory(), masks.pin_memory(), rows
    return images, masks, rows


def whole_batch(cfg: RunConfig) -> int:
    """The batch for passes over whole images (validation, BN recalibration): the training batch, or in a patch run
    as many whole images as hold the pixels of the batch's patches (at least one), so memory stays that of a step."""
    if not cfg.data.patch:
        return cfg.train.batch_size
    image, patch = cfg.data.image_size[0] * cfg.data.image_size[1], cfg.data.patch[0] * cfg.data.patch[1]
    return max(1, min(cfg.train.batch_size, cfg.train.batch_size * patch // image))


def auto_micro_batch(cfg: RunConfig, device: torch.device) -> int:
    """The largest micro-batch whose training activations fit in 75% of the device's free memory.

    A training step of the seed U-Net (base 64) at 480x320 took 845 MiB more peak memory per image on the CPU
    (fp32, batch 1 and 2), 90 bytes per pixel per base channel: batch 16 needs about 13 GiB.
    """
    width, height = cfg.data.patch or cfg.data.image_size  # a patch run trains on crops
    per_image = 90 * cfg.model.base_channels * width * height
    return max(1, min(cfg.train.batch_size, int(0.75 * free_memory(device) // per_image)))


def fit(cfg: RunConfig, out_dir: str | Path, *, resume: bool = False, overwrite: bool = False,
        keep: set[str] | frozenset[str] | None = None) -> Path:
    """Train a U-Net as ``cfg`` says and write the run folder.

    The folder gets ``config.json`` (before the first step), ``split.json``, ``model.safetensors`` (the weights of
    the latest validation; at the end the final weights), ``best.safetensors`` (the best validation Dice),
    ``last.pt`` (resume state) and ``metrics.jsonl`` (a line per epoch).

    Args:
        cfg: the run's configuration; its mask encoding is filled in from the data, and with ``cfg.train.budget``
            the plan fills in what it chooses.
        out_dir: the run folder.
        resume: continue the run in ``out_dir`` from ``last.pt``; ``cfg`` is normally that run's config.json
            (``RunConfig.load``), with changes such as more epochs.
        overwrite: replace a non-empty ``out_dir``.
        keep: the settings the user gave (dotted names such as ``"model.base_channels"``, ``"data.image_size"``):
            a budget plan leaves them as they are and chooses all others, and without ``data.image_size`` the
            training size follows the images' aspect ratio. None (the default): the settings that differ from the
            defaults.

    Returns:
        The run folder.
    """
    started = time.monotonic()
    keep = set(keep) if keep is not None else changed_settings(cfg)
    world, device = init_world(cfg.train.device, cfg.train.dist_timeout_minutes)
    try:
        return _fit(cfg, prepare_run_dir(out_dir, resume, overwrite, world), resume, world, device, keep, started)
    finally:
        _process_cache(cfg, Path(out_dir), world).unlink(missing_ok=True)
        close_world(world)


def changed_settings(cfg: RunConfig) -> set[str]:
    """The settings of ``cfg`` that differ from the defaults, as ``"section.name"``."""
    ours, defaults = cfg.to_dict(), RunConfig().to_dict()
    return {f"{section}.{name}" for section, values in ours.items() for name, value in values.items()
            if value != defaults[section][name]}


def _format_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _fit(cfg: RunConfig, out: Path, resume: bool, world: World, device: torch.device, keep: set[str],
         started: float) -> Path:
    state = load_training_state(out / STATE_FILE) if resume else None
    dtype = autocast_dtype(device, cfg.train.amp)
    layout = memory_format(device, cfg.train.memory_format, training=True)
    budget = parse_duration(cfg.train.budget) if cfg.train.budget else None

    def plan(pairing: Pairing) -> None:
        """Before decoding: the budget plan, or a training size that keeps the images' aspect ratio."""
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
            cfg.data.patch_scale = cfg.data.image_size[0] / native[0]
            if cfg.data.patch[0] > cfg.data.image_size[0] or cfg.data.patch[1] > cfg.data.image_size[1]:
                raise ValueError(f"--patch {cfg.data.patch[0]}x{cfg.data.patch[1]} is larger than the training "
                                 f"images ({cfg.data.image_size[0]}x{cfg.data.image_size[1]})")
            logger.info("training on random %dx%d crops of the images at %dx%d (%.3g x their %dx%d)",
                        *cfg.data.patch, *cfg.data.image_size, cfg.data.patch_scale, *native)
        if budget is not None:  # a fresh run plans afresh, also from a budget run's config.json
            train_idx, val_idx = split_pairs(pairing.pairs, cfg.data)
            if world.is_main:
                masks = [] if cfg.data.snap_masks else [pairing.pairs[i].mask for i in train_idx]  # JPEG masks:
                try:                                                                                # stray values
                    found = dataset_ceiling(masks, [], cfg.data.ignore_index)[1]
                except Exception as err:  # noqa: BLE001 - the checks report unreadable masks
                    logger.debug("no resolution ceiling: %s", err)
                    found = 0
                uniform = "data.image_size" not in keep and _one_size(pairing, native)
                make_plan(cfg, len(train_idx), len(val_idx), native, device, dtype, layout, keep, started,
                          world.size, lambda sizes: dataset_ceiling(masks, sizes, cfg.data.ignore_index)[0],
                          max(2, found), uniform)
            planned = RunConfig.from_dict(world.broadcast_object(cfg.to_dict()))  # one plan for every process
            cfg.model, cfg.data, cfg.train = planned.model, planned.data, planned.train
        elif budget is None and "data.image_size" not in keep and native != CARVANA_SIZE:
            cfg.data.image_size = size_for(native[0] / native[1], min(1.0, native[0] * native[1] / SEED_PIXELS),
                                            native)
            derived.append(native)

    derived: list[tuple[int, int]] = []
    data = _load_data(cfg, out, resume, world, before_decode=plan)
    if derived:  # logged once the data has passed its checks, so a run that cannot start says only why
        logger.info("training size %dx%d: about the seed's 480x320 pixel count (never more than the images'), "
                    "keeping the %dx%d images' aspect ratio (--image-size sets it)", *cfg.data.image_size, *derived[0])
    layout = memory_format(device, cfg.train.memory_format, training=True)  # the plan may have measured it
    labels = max(2, cfg.model.num_classes)
    names = class_names(cfg.data.class_names, labels)
    if not resume or "train.class_weights" in keep or (cfg.train.class_weight_values is None
                                                       and cfg.train.class_weights != "none"):
        # from the training masks at the training size, once, and recorded: a resumed run weighs as before
        cfg.train.class_weight_values = resolve_class_weights(cfg.train.class_weights, data.train.masks, labels,
                                                              data.train.row_numbers())
        if cfg.train.class_weight_values is not None:
            logger.info("class weights (%s): %s", "median frequency" if cfg.train.class_weights == "auto" else
                        "given", ", ".join(f"{n} {w:.3g}" for n, w in zip(names, cfg.train.class_weight_values)))
    if not cfg.train.micro_batch:  # chosen once and recorded, so a resumed run accumulates exactly as before
        cfg.train.micro_batch = auto_micro_batch(cfg, device)
    if world.is_main:
        cfg.save(out / CONFIG_FILE)
    if cfg.train.batch_size < world.size:
        raise ValueError(f"--batch-size {cfg.train.batch_size} is the global batch; it needs at least one image for "
                         f"each of the {world.size} processes")

    torch.manual_seed(cfg.train.seed)
    model = UNet(cfg.model).to(device, memory_format=layout)
    forward = DistributedDataParallel(model) if world.size > 1 else model  # weights are saved from the plain module
    forward = torch.compile(forward) if cfg.train.compile else forward
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=cfg.train.restart_epochs, T_mult=cfg.train.restart_mult, eta_min=cfg.train.min_lr)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    # Several processes drop the last partial batch, so that every process has a share of every step.
    steps = math.ceil(len(data.train) / cfg.train.batch_size) if world.size == 1 else max(
        1, len(data.train) // cfg.train.batch_size)
    total = min(cfg.train.max_steps, cfg.train.epochs * steps) if cfg.train.max_steps else cfg.train.epochs * steps
    pos = Position()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        pos = Position(int(state["epoch"]), int(state["step"]), float(state["loss_sum"]), float(state["best"]))
        restore_rng(state["rng"])
        truncate_metrics(out / METRICS_FILE, pos.epoch)
        logger.info("resuming %s at epoch %d, step %d", out, pos.epoch + 1, pos.step)
    # made after the weights are loaded: an average switched on at a resume starts from them, not from the init
    average = WeightAverage(model, cfg.train.ema_decay) if cfg.train.ema_decay else None
    if average is not None and state is not None and "average" in state:
        average.load_state_dict(state["average"])
    n_params = sum(p.numel() for p in model.parameters())
    per_process = max(1, cfg.train.batch_size // world.size)
    micro = min(cfg.train.micro_batch, per_process)
    n_chunks = math.ceil(per_process / micro)
    if n_chunks > 1:
        logger.info("gradients accumulate over %d micro-batches of %s images per step (split evenly); batch-norm "
                    "statistics come from each micro-batch, not from the batch of %d", n_chunks,
                    "/".join(sorted({str(len(c)) for c in torch.arange(per_process).tensor_split(n_chunks)},
                                    reverse=True)), cfg.train.batch_size)
    logger.info("model: %s, %.2fM parameters; device %s, precision %s, %s, micro-batch %d of %d%s", cfg.model,
                n_params / 1e6, device, dtype or torch.float32, str(layout).split(".")[-1], micro, cfg.train.batch_size,
                f", {world.size} processes (torch.distributed)" if world.size > 1 else "")
    if world.is_main:
        _record_session(out, data, device, dtype, layout, world.size, n_params, pos)
    curves = CurvesPainter(out)
    clock = BudgetClock(budget, started, total, steps, cfg.train.val_every) if budget and state is None else None
    shadow = UNet(cfg.model).to(device, memory_format=layout) if average is not None or cfg.train.bn_recalibrate \
        else None

    def epochs_planned() -> int:
        return math.ceil(total / steps)

    def save_state() -> None:
        if not world.is_main:
            return
        save_training_state({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "scaler": scaler.state_dict(), "epoch": pos.epoch, "step": pos.step,
                             "loss_sum": pos.loss_sum, "best": pos.best, "rng": rng_state(),
                             **({"average": average.state_dict()} if average is not None else {})}, out / STATE_FILE)
        logger.debug("checkpoint saved at epoch %d step %d", pos.epoch + 1, pos.step)

    def weights_to_save() -> torch.nn.Module:
        """The weights validated and saved: the average (or the training weights), BN statistics recomputed."""
        if shadow is None:
            return model
        shadow.load_state_dict(average.state_dict() if average is not None else model.state_dict())
        if cfg.train.bn_recalibrate:
            recalibrate_bn(shadow, data.train, cfg.data.mean, cfg.data.std, device, whole_batch(cfg), BN_IMAGES,
                           layout, dtype)
        return shadow

    def set_total(new: int, why: str, loud: bool) -> None:
        nonlocal total
        total = new
        cfg.train.max_steps = total
        cfg.train.warmup_steps = min(cfg.train.warmup_steps, max(1, total // 10))  # the decay keeps most steps
        cfg.train.epochs = math.ceil(total / steps)
        clock.total = total
        if cfg.train.plan is not None:
            cfg.train.plan["corrected_steps"] = total
        if world.is_main:
            cfg.save(out / CONFIG_FILE)
        ends = time.time() + TARGET * clock.budget - (time.monotonic() - clock.started)
        logger.log(logging.INFO if loud else logging.DEBUG, "%s: %d steps in all (%d epochs), ending about %s", why,
                   total, cfg.train.epochs, time.strftime("%H:%M:%S", time.localtime(ends)))

    images, masks, rows = _place_cache(data.train, device)
    centres = class_centres(data.train.masks, data.train.row_numbers(), labels) \
        if cfg.data.patch and cfg.data.oversample > 0 else None
    loss_fn = SegmentationLoss(cfg.train.loss, cfg.train.class_weight_values)
    losses = LossLog(out, sync_every=1 if device.type == "cpu" else 16, reduce=world.mean)
    last_save = time.monotonic()
    step_clock: list[float] = []  # seconds of the steps timed so far in this process (the first one is warm-up)
    forecast_logged = False
    with StopOnSignal() as stop:
        while pos.epoch < epochs_planned():
            epoch = pos.epoch
            model.train()
            t0, seen = time.perf_counter(), 0
            timed_by_epoch = clock is not None and clock.corrected  # else its steps were timed one by one
            batches = torch.randperm(len(data.train), generator=_generator(cfg.train.seed, epoch)).split(
                cfg.train.batch_size)
            end = min(steps, total - epoch * steps)
            bar = tqdm(initial=pos.step, total=end, desc=f"epoch {epoch + 1}/{epochs_planned()}", unit="batch",
                       leave=False, disable=not (cfg.train.progress and sys.stderr.isatty()))
            step_start, start_step = time.perf_counter(), pos.step
            for step in itertools.count(pos.step):  # `end` moves when the budget clock corrects the step count
                if step >= end:
                    break
                global_step = epoch * steps + step
                if cfg.train.schedule == "cosine":
                    for group in optimizer.param_groups:
                        group["lr"] = cosine_lr(global_step, total, cfg.train.warmup_steps, cfg.train.lr,
                                                cfg.train.min_lr)
                idx = rows[world.shard(batches[step]).to(rows.device)]
                # DDP averages the processes' gradients: a shard's loss weighs by its share of the global batch
                share = len(idx) * world.size / len(batches[step])
                generator = _generator(cfg.train.seed, epoch, step, *([world.rank] * (world.size > 1)))
                batch_images, batch_masks = _crops(images, masks, idx, cfg.data.patch, generator, centres,
                                                   cfg.data.oversample) \
                    if cfg.data.patch else (images[idx], masks[idx])
                x, y = augment(batch_images.to(device, non_blocking=True), batch_masks.to(device, non_blocking=True),
                               cfg.data, generator)
                optimizer.zero_grad(set_to_none=True)
                loss = torch.zeros((), device=device)
                parts = math.ceil(len(x) / micro)  # even parts: 16 by at most 3 is 3,3,3,3,2,2, never a part of 1
                chunks = list(zip(x.tensor_split(parts), y.tensor_split(parts)))
                for i, (xm, ym) in enumerate(chunks):  # gradient accumulation over micro-batches
                    sync = i == len(chunks) - 1 or world.size == 1  # DDP all-reduces on the last backward only
                    with nullcontext() if sync else forward.no_sync():
                        with torch.autocast(device.type, dtype=dtype) if dtype else nullcontext():
                            part = loss_fn(forward(xm.contiguous(memory_format=layout)), ym) * (
                                len(xm) / len(x) * share)
                        scaler.scale(part).backward()
                    loss += part.detach()
                scaler.step(optimizer)  # skipped by the scaler itself when fp16 gradients overflowed
                scaler.update()
                if cfg.train.schedule == "restarts":
                    scheduler.step(epoch + (step + 1) / steps)
                if average is not None:
                    average.update(global_step)
                losses.append(step, loss / share, len(batches[step]))
                pos.step, seen = step + 1, seen + len(batches[step])
                bar.update()
                stopping = world.any(stop.requested, device) if world.size > 1 else stop.requested
                every = cfg.train.checkpoint_steps
                due = step + 1 < end and (pos.step % every == 0 if every else
                                          time.monotonic() - last_save > 60 * cfg.train.checkpoint_minutes)
                timing = len(step_clock) < 12  # steps are timed one by one at the start, then by the epoch
                if due or stopping or len(losses) >= losses.sync_every or not bar.disable and step % 4 == 0 or timing:
                    pos.loss_sum += losses.flush(epoch)  # the device sync: checks every loss before any save
                    bar.set_postfix(loss=f"{losses.last:.4f}")
                if timing:
                    now = time.perf_counter()
                    step_clock.append(now - step_start)
                    if clock is not None and len(step_clock) > 1:
                        clock.step_time(now - step_start)
                    step_start = now
                if clock is not None and not clock.corrected and clock.n_steps >= clock.first:
                    # the same step on every process: rank 0's measurement decides for all
                    new = clock.maybe_correct(global_step + 1, _validation_estimate(data, cfg, clock), False)
                    new = world.broadcast_int(new or 0, device)
                    if new:
                        set_total(new, f"budget: measured {clock.t_steps / clock.n_steps:.2f} s/step", True)
                        end = min(steps, total - epoch * steps)
                        bar.total = end
                if not forecast_logged and len(step_clock) >= 6:
                    forecast_logged = True
                    _log_forecast(step_clock[1:], total - global_step - 1, cfg, data, steps)
                if due or stopping:
                    save_state()
                    last_save = time.monotonic()
                if stopping:
                    raise TrainingInterrupted(f"{out}: stopped by signal {stopping} at epoch {epoch + 1}, "
                                              f"step {pos.step}; continue with: unetseg train --resume {out}")
                if pos.step >= end:
                    break
            bar.close()
            pos.loss_sum += losses.flush(epoch)
            done_steps = pos.step
            train_loss = pos.loss_sum / (min(len(data.train), done_steps * cfg.train.batch_size) if world.size == 1
                                         else done_steps * cfg.train.batch_size)
            seconds = time.perf_counter() - t0
            last_epoch = epoch + 1 >= epochs_planned()
            validate = data.val is not None and ((epoch + 1) % cfg.train.val_every == 0 or last_epoch)
            val, v0 = None, time.perf_counter()
            if (epoch + 1) % cfg.train.val_every == 0 or last_epoch:
                final = weights_to_save() if validate or world.is_main else model
                if validate:  # each process scores its share of the validation images, with rank 0's weights
                    world.broadcast_module(final)
                    val = evaluate(final, data.val, cfg, device, batch_size=whole_batch(cfg), world=world)
                if world.is_main:
                    save_weights(final, out / WEIGHTS_FILE)
                model.train()
            val_seconds = time.perf_counter() - v0
            if clock is not None and validate:
                clock.validation_time(val_seconds)
            record = {"epoch": epoch + 1, "step": epoch * steps + done_steps, "train_loss": train_loss,
                      "lr": optimizer.param_groups[0]["lr"], "seconds": round(seconds, 2),
                      "images_per_s": round(seen / seconds, 2)}
            if val is not None:
                record.update(val_loss=val["loss"], val_dice=None if math.isnan(val["dice"]) else val["dice"])
                if len(val["dice_per_class"]) > 1:
                    record["val_dice_per_class"] = [None if math.isnan(d) else d for d in val["dice_per_class"]]
                score = val["dice"]
                if labels > 2:  # multi-class: the field's scores, and the best weights by mean IoU
                    record.update(val_miou=_finite(val["miou"]), val_pixel_accuracy=_finite(val["pixel_accuracy"]),
                                  val_iou_per_class={n: _finite(v) for n, v in zip(names, val["iou_per_class"])})
                    score = val["miou"]
                if score > pos.best and world.is_main:  # False for NaN (nothing to find in validation)
                    pos.best = score
                    save_weights(final, out / BEST_FILE)
            if world.is_main:
                with open(out / METRICS_FILE, "a") as fh:
                    fh.write(json.dumps(record) + "\n")
                curves(final=last_epoch)
            pos.epoch, pos.step, pos.loss_sum = epoch + 1, 0, 0.0
            save_state()
            if timed_by_epoch:  # the epoch's steps and its checkpoint write, not its validation
                clock.step_time(time.perf_counter() - t0 - val_seconds, done_steps - start_step)
            if clock is not None and clock.corrected and not last_epoch:
                new = clock.maybe_correct(pos.epoch * steps, _validation_estimate(data, cfg, clock), True) \
                    if world.is_main else None
                new = world.broadcast_int(new or 0, device)
                if new:
                    set_total(new, "budget: the speed drifted, re-planned", False)
            world.barrier()  # the others wait while the main process validates and saves
            last_save = time.monotonic()
            logger.info("epoch %d/%d: train loss %.4f%s, %.1f s (%.2f img/s)", epoch + 1, epochs_planned(),
                        train_loss, "" if val is None else f", val loss {val['loss']:.4f}, val Dice {val['dice']:.4f}"
                        + (f", val mIoU {val['miou']:.4f}, pixel accuracy {val['pixel_accuracy']:.4f}"
                           if labels > 2 else ""), seconds, record["images_per_s"])
            if val is not None and labels > 2:
                logger.info("  val IoU per class: %s", ", ".join(
                    f"{n} {v:.3f}" for n, v in zip(names, val["iou_per_class"])))
    if budget is not None and world.is_main and state is None:  # a resumed run's sessions are not one clock
        logger.info("budget %s: ran %s in all (%.1f%% of the budget)", cfg.train.budget,
                    _format_duration(time.monotonic() - started), 100 * (time.monotonic() - started) / budget)
    world.barrier()
    if data.node_cache is not None and world.local_rank == 0:  # finished: the node's cache goes (a run that failed
        shutil.rmtree(data.node_cache, ignore_errors=True)      # keeps it for its restart)
    return out


def _finite(value: float) -> float | None:
    """None for NaN (JSON has no NaN)."""
    return None if value != value else value


def _record_session(out: Path, data: _Data, device: torch.device, dtype: torch.dtype | None,
                    layout: torch.memory_format, processes: int, n_params: int, pos: Position) -> None:
    """Add this session (the first, or a resume) to ``RUN/run_info.json``: where and how it ran, and the data check.
    A failure is logged, never raised: the record must not stop a run."""
    from unetseg import __version__

    path = out / RUN_INFO_FILE
    try:
        try:
            info = json.loads(path.read_text()) if path.is_file() else {}
        except json.JSONDecodeError:
            info = {}
        here = [pos.epoch, pos.step]  # sessions that started later than this resume point were rolled back
        sessions = [s for s in info.get("sessions", []) if [s.get("from_epoch", 0), s.get("from_step", 0)] < here]
        sessions.append({"started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "from_epoch": pos.epoch,
                         "from_step": pos.step, "device": device_name(device),
                         "precision": str(dtype or torch.float32).removeprefix("torch."),
                         "memory_format": str(layout).removeprefix("torch."), "processes": processes,
                         "parameters": n_params, "torch": torch.__version__, "unetseg": __version__})
        record = {"sessions": sessions, "data_check": data.check}
        if data.ceiling is not None or "resolution_ceiling" in info:
            record["resolution_ceiling"] = data.ceiling or info["resolution_ceiling"]  # kept when not recomputed
        atomic_write_text(path, json.dumps(record, indent=1) + "\n")
    except (OSError, TypeError, ValueError) as err:
        logger.warning("warning: %s not written: %s", path, err)


def _validation_estimate(data: _Data, cfg: RunConfig, clock: BudgetClock) -> float:
    """Seconds of one validation before any was timed: the BN pass and the validation forward passes."""
    per_image = clock.t_steps / max(1, clock.n_steps) / cfg.train.batch_size
    n_val = len(data.val) if data.val is not None else 0
    bn = min(len(data.train), BN_IMAGES) if cfg.train.bn_recalibrate else 0
    if cfg.data.patch:  # validation and the BN pass run whole images, the steps crops
        per_image *= cfg.data.image_size[0] * cfg.data.image_size[1] / (cfg.data.patch[0] * cfg.data.patch[1])
    return FORWARD_SHARE * per_image * (n_val + bn) + 0.5


def _log_forecast(step_seconds: list[float], steps_left: int, cfg: RunConfig, data: _Data, steps: int) -> None:
    """Log the run's expected duration from its first timed steps; hint at --budget when it runs past a day."""
    per_step = sorted(step_seconds)[len(step_seconds) // 2]
    n_val = len(data.val) if data.val is not None else 0
    validations = math.ceil(steps_left / steps / cfg.train.val_every) + 1
    left = steps_left * per_step + validations * FORWARD_SHARE * per_step / cfg.train.batch_size * n_val
    logger.info("expected: %.2f s/step, %d steps left, about %s more (ends about %s)", per_step, steps_left,
                _format_duration(left), time.strftime("%Y-%m-%d %H:%M", time.localtime(time.time() + left)))
    if left > 86400 and not cfg.train.budget:
        logger.warning("warning: this run would take %s on this device; unetseg train --budget 2h (any duration) plans "
                       "a model, size and step count that end in time, or use a GPU", _format_duration(left))
