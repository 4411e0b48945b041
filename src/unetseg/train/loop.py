"""The training loop: ``fit(cfg, out_dir)`` trains a U-Net and writes a run folder.

Every random draw of a step (batch order, rotation angles, flips) comes from a generator seeded by
(seed, epoch, step), so a run resumed at any step sees the batches and augmentations it would have seen.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from unetseg._device import autocast_dtype, free_memory, memory_format
from unetseg.checkpoint import (CONFIG_FILE, STATE_FILE, WEIGHTS_FILE, CheckpointError, load_training_state,
                                save_training_state, save_weights)
from unetseg.config import RunConfig
from unetseg.data import ArrayDataset, split_by_group
from unetseg.data.check import adopt, scan
from unetseg.data.pairing import pair_files
from unetseg.data.transforms import random_affine, to_float
from unetseg.metrics import confusion_counts, dice_from_counts, foreground_mean, logits_to_classes
from unetseg.model import UNet
from unetseg.train._state import (LossLog, Position, StopOnSignal, TrainingInterrupted, restore_rng, rng_state,
                                   truncate_metrics)
from unetseg.train.distributed import World, close_world, init_world
from unetseg.train.losses import SegmentationLoss

logger = logging.getLogger(__name__)

SPLIT_FILE = "split.json"
METRICS_FILE = "metrics.jsonl"


def _generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded from a tuple of integers (e.g. seed, epoch, step)."""
    seed = int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0] >> 1)
    return torch.Generator().manual_seed(seed)


def prepare_run_dir(out_dir: str | Path, resume: bool, overwrite: bool, world: World = World()) -> Path:
    """Create the run folder; a folder that already holds a run is only reused with resume or overwrite.

    Raises:
        CheckpointError: when ``out_dir`` holds files and neither flag is given (on every process alike).
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not resume and not overwrite:
        raise CheckpointError(f"{out}: folder is not empty; pass --resume to continue the run there or "
                              f"--overwrite to replace it")
    world.barrier()  # every process has looked before the main one changes anything
    if world.is_main:
        if overwrite and not resume and out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.glob(".*.tmp"):  # left by a kill during an atomic write
            stale.unlink()
    world.barrier()
    return out


@dataclass
class _Data:
    train: ArrayDataset
    val: ArrayDataset | None


def _load_data(cfg: RunConfig, out: Path, resume: bool, world: World) -> _Data:
    """Check, pair, split (saved to ``split.json``) and decode the dataset; writes what the data decides (mask
    encoding, channels, classes) into ``cfg``.

    Raises:
        DataError: listing every problem the checks found, the first in front.
    """
    width, height = cfg.data.image_size
    pairing = pair_files(cfg.data)
    pairs_bytes = len(pairing.pairs) * width * height * cfg.model.in_channels
    on_disk = cfg.data.cache == "disk" or (cfg.data.cache == "auto" and pairs_bytes > free_memory(torch.device("cpu")) // 2)
    cache_file = out / f".cache-images-{world.rank}.npy" if on_disk else None
    if on_disk:
        logger.info("decoded images (%.1f GB) go to a memory-mapped cache: %s", pairs_bytes / 1e9, cache_file)
    data, report = scan(cfg, progress=cfg.train.progress, cache_file=cache_file, pairing=pairing)
    for note in report.notes:
        logger.info("%s", note)
    for warning in report.warnings[:5]:
        logger.warning("warning: %s", warning)
    report.raise_errors()
    assert data is not None
    adopt(cfg, data, report)
    pairs = data.pairs
    split_path = out / SPLIT_FILE
    if resume and split_path.is_file():
        split = json.loads(split_path.read_text())
        by_name = {p.image.name: i for i, p in enumerate(pairs)}
        train_idx = [by_name[n] for n in split["train"] if n in by_name]
        val_idx = [by_name[n] for n in split["val"] if n in by_name]
    else:
        train_idx, val_idx = split_by_group(pairs, cfg.data.val_fraction, cfg.data.split_seed)
        split = {"train": [pairs[i].image.name for i in train_idx], "val": [pairs[i].image.name for i in val_idx]}
        if world.is_main:
            split_path.write_text(json.dumps(split, indent=1) + "\n")
    enc = data.encoding
    logger.info("data: %d pairs (%s), %d train / %d validation (split by group, seed %d); %d channel(s), mask values "
                "%s -> %d classes", len(pairs), report.rule, len(train_idx), len(val_idx), cfg.data.split_seed,
                cfg.model.in_channels, enc.describe(enc.values), enc.num_labels)
    return _Data(data.subset(train_idx), data.subset(val_idx) if val_idx else None)


@torch.inference_mode()
def evaluate(model: torch.nn.Module, data: ArrayDataset, cfg: RunConfig, device: torch.device,
             batch_size: int | None = None) -> dict[str, float]:
    """Loss and mean per-image Dice (foreground classes) on decoded data at the training size.

    Returns:
        ``{"loss": ..., "dice": ...}``
    """
    model.eval()
    dtype = autocast_dtype(device, cfg.train.amp)
    layout = memory_format(device, cfg.train.memory_format, training=True)  # the training model's layout
    loss_fn, losses, dices = SegmentationLoss(), [], []
    labels = max(2, cfg.model.num_classes)
    for start in range(0, len(data), batch_size or cfg.train.batch_size):
        images, masks = data.take(slice(start, start + (batch_size or cfg.train.batch_size)))
        x = to_float(torch.from_numpy(images).to(device), cfg.data.mean, cfg.data.std)
        y = torch.from_numpy(masks).to(device).long()
        x = x.contiguous(memory_format=layout)
        with torch.autocast(device.type, dtype=dtype) if dtype else nullcontext():
            logits = model(x)
        losses.append(loss_fn(logits, y) * len(x))
        dices.append(foreground_mean(dice_from_counts(confusion_counts(logits_to_classes(logits), y, labels))))
    return {"loss": float(torch.stack(losses).sum()) / len(data), "dice": float(torch.cat(dices).mean())}


def _place_cache(data: ArrayDataset, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The uint8 cache as tensors (images, masks, the training rows): on a GPU itself when it takes under a quarter
    of the free memory (Carvana at 480x320 is 2.3 GB), so steps copy nothing from the host; else on the host
    (pinned when in RAM), where a memory-mapped cache is read batch by batch."""
    images, masks = torch.from_numpy(data.images), torch.from_numpy(data.masks)
    rows = torch.from_numpy(data.row_numbers())
    if device.type == "cuda":
        if images.nbytes + masks.nbytes < free_memory(device) // 4:
            return images.to(device), masks.to(device), rows.to(device)
        if not isinstance(data.images, np.memmap):
            return images.pin_memory(), masks.pin_memory(), rows
    return images, masks, rows


def auto_micro_batch(cfg: RunConfig, device: torch.device) -> int:
    """The largest micro-batch whose training activations fit in 75% of the device's free memory.

    A training step of the seed U-Net (base 64) at 480x320 took 845 MiB more peak memory per image on the CPU
    (fp32, batch 1 and 2), 90 bytes per pixel per base channel: batch 16 needs about 13 GiB.
    """
    width, height = cfg.data.image_size
    per_image = 90 * cfg.model.base_channels * width * height
    return max(1, min(cfg.train.batch_size, int(0.75 * free_memory(device) // per_image)))


def fit(cfg: RunConfig, out_dir: str | Path, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Train a U-Net as ``cfg`` says and write the run folder.

    The folder gets ``config.json`` (before the first step), ``split.json``, ``model.safetensors`` (best
    validation Dice; every epoch when there is no validation split), ``last.pt`` (resume state, every
    epoch) and ``metrics.jsonl`` (a line per epoch).

    Args:
        cfg: the run's configuration; its mask encoding is filled in from the data.
        out_dir: the run folder.
        resume: continue the run in ``out_dir`` from ``last.pt``; ``cfg`` is normally that run's config.json
            (``RunConfig.load``), with changes such as more epochs.
        overwrite: replace a non-empty ``out_dir``.

    Returns:
        The run folder.
    """
    world, device = init_world(cfg.train.device)
    try:
        return _fit(cfg, prepare_run_dir(out_dir, resume, overwrite, world), resume, world, device)
    finally:
        Path(out_dir, f".cache-images-{world.rank}.npy").unlink(missing_ok=True)
        close_world(world)


def _fit(cfg: RunConfig, out: Path, resume: bool, world: World, device: torch.device) -> Path:
    state = load_training_state(out / STATE_FILE) if resume else None
    data = _load_data(cfg, out, resume, world)
    if world.is_main:
        cfg.save(out / CONFIG_FILE)
    if cfg.train.batch_size < world.size:
        raise ValueError(f"--batch-size {cfg.train.batch_size} is the global batch; it needs at least one image for "
                         f"each of the {world.size} processes")

    torch.manual_seed(cfg.train.seed)
    layout = memory_format(device, cfg.train.memory_format, training=True)
    model = UNet(cfg.model).to(device, memory_format=layout)
    forward = DistributedDataParallel(model) if world.size > 1 else model  # weights are saved from the plain module
    forward = torch.compile(forward) if cfg.train.compile else forward
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=cfg.train.restart_epochs, T_mult=cfg.train.restart_mult, eta_min=cfg.train.min_lr)
    dtype = autocast_dtype(device, cfg.train.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    pos = Position()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        pos = Position(int(state["epoch"]), int(state["step"]), float(state["loss_sum"]), float(state["best"]))
        restore_rng(state["rng"])
        truncate_metrics(out / METRICS_FILE, pos.epoch)
        logger.info("resuming %s at epoch %d, step %d", out, pos.epoch + 1, pos.step)
    n_params = sum(p.numel() for p in model.parameters())
    micro = cfg.train.micro_batch or auto_micro_batch(cfg, device)
    logger.info("model: %s, %.2fM parameters; device %s, precision %s, %s, micro-batch %d of %d%s", cfg.model,
                n_params / 1e6, device, dtype or torch.float32, str(layout).split(".")[-1], micro, cfg.train.batch_size,
                f", {world.size} processes (torch.distributed)" if world.size > 1 else "")

    def save_state() -> None:
        if not world.is_main:
            return
        save_training_state({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "scaler": scaler.state_dict(), "epoch": pos.epoch, "step": pos.step,
                             "loss_sum": pos.loss_sum, "best": pos.best, "rng": rng_state()}, out / STATE_FILE)
        logger.debug("checkpoint saved at epoch %d step %d", pos.epoch + 1, pos.step)

    images, masks, rows = _place_cache(data.train, device)
    # Several processes drop the last partial batch, so that every process has a share of every step.
    steps = math.ceil(len(data.train) / cfg.train.batch_size) if world.size == 1 else max(
        1, len(data.train) // cfg.train.batch_size)
    loss_fn = SegmentationLoss()
    losses = LossLog(out, sync_every=1 if device.type == "cpu" else 16, reduce=world.mean)
    last_save = time.monotonic()
    with StopOnSignal() as stop:
        while pos.epoch < cfg.train.epochs:
            epoch = pos.epoch
            model.train()
            t0, seen = time.perf_counter(), 0
            batches = torch.randperm(len(data.train), generator=_generator(cfg.train.seed, epoch)).split(
                cfg.train.batch_size)
            bar = tqdm(range(pos.step, steps), initial=pos.step, total=steps, desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
                       unit="batch", leave=False, disable=not (cfg.train.progress and sys.stderr.isatty()))
            for step in bar:
                idx = rows[world.shard(batches[step]).to(rows.device)]
                x = to_float(images[idx].to(device, non_blocking=True), cfg.data.mean, cfg.data.std)
                y = masks[idx].to(device, non_blocking=True)
                x, y = random_affine(x, y, cfg.data.rotate_limit, cfg.data.hflip_p, cfg.data.vflip_p,
                                     generator=_generator(cfg.train.seed, epoch, step, *([world.rank] * (world.size > 1))))
                optimizer.zero_grad(set_to_none=True)
                loss = torch.zeros((), device=device)
                chunks = list(zip(x.split(micro), y.split(micro)))
                for i, (xm, ym) in enumerate(chunks):  # gradient accumulation over micro-batches
                    sync = i == len(chunks) - 1 or world.size == 1  # DDP all-reduces on the last backward only
                    with nullcontext() if sync else forward.no_sync():
                        with torch.autocast(device.type, dtype=dtype) if dtype else nullcontext():
                            part = loss_fn(forward(xm.contiguous(memory_format=layout)), ym) * (len(xm) / len(x))
                        scaler.scale(part).backward()
                    loss += part.detach()
                scaler.step(optimizer)  # skipped by the scaler itself when fp16 gradients overflowed
                scaler.update()
                scheduler.step(epoch + (step + 1) / steps)
                losses.append(step, loss, len(idx) * world.size)
                pos.step, seen = step + 1, seen + len(idx) * world.size
                stopping = world.any(stop.requested, device) if world.size > 1 else stop.requested
                every = cfg.train.checkpoint_steps
                due = step + 1 < steps and (pos.step % every == 0 if every else
                                            time.monotonic() - last_save > 60 * cfg.train.checkpoint_minutes)
                if due or stopping or len(losses) >= losses.sync_every or not bar.disable and step % 4 == 0:
                    pos.loss_sum += losses.flush(epoch)  # the device sync: checks every loss before any save
                    bar.set_postfix(loss=f"{losses.last:.4f}")
                if due or stopping:
                    save_state()
                    last_save = time.monotonic()
                if stopping:
                    raise TrainingInterrupted(f"{out}: stopped by signal {stopping} at epoch {epoch + 1}, "
                                              f"step {pos.step}; continue with: unetseg train --resume {out}")
            bar.close()
            pos.loss_sum += losses.flush(epoch)
            train_loss = pos.loss_sum / (len(data.train) if world.size == 1 else steps * cfg.train.batch_size)
            seconds = time.perf_counter() - t0
            val = evaluate(model, data.val, cfg, device) if data.val is not None and world.is_main else None
            record = {"epoch": epoch + 1, "train_loss": train_loss, "lr": optimizer.param_groups[0]["lr"],
                      "seconds": round(seconds, 2), "images_per_s": round(seen / seconds, 2)}
            if val is not None:
                record.update(val_loss=val["loss"], val_dice=val["dice"])
            score = val["dice"] if val is not None else -train_loss
            if score > pos.best and world.is_main:
                pos.best = score
                save_weights(model, out / WEIGHTS_FILE)
            if world.is_main:
                with open(out / METRICS_FILE, "a") as fh:
                    fh.write(json.dumps(record) + "\n")
            pos.epoch, pos.step, pos.loss_sum = epoch + 1, 0, 0.0
            save_state()
            world.barrier()  # the others wait while the main process validates and saves
            last_save = time.monotonic()
            logger.info("epoch %d/%d: train loss %.4f%s, %.1f s (%.2f img/s)", epoch + 1, cfg.train.epochs,
                        train_loss, f", val loss {val['loss']:.4f}, val Dice {val['dice']:.4f}" if val else "",
                        seconds, record["images_per_s"])
    return out
