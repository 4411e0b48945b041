"""The training loop: ``fit(cfg, out_dir)`` trains a U-Net and writes a run folder.

Every random draw of a step (batch order, rotation angles, flips) comes from a generator seeded by
(seed, epoch, step), so a run resumed at any step sees the batches and augmentations it would have seen.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import signal
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from unetseg._device import autocast_dtype, free_memory, memory_format, resolve_device
from unetseg.checkpoint import (CONFIG_FILE, STATE_FILE, WEIGHTS_FILE, CheckpointError, load_training_state,
                                save_training_state, save_weights)
from unetseg.config import RunConfig
from unetseg.data import ArrayDataset, split_by_group
from unetseg.data.check import adopt, scan
from unetseg.data.transforms import random_affine, to_float
from unetseg.metrics import confusion_counts, dice_from_counts, foreground_mean, logits_to_classes
from unetseg.model import UNet
from unetseg.train.losses import SegmentationLoss

logger = logging.getLogger(__name__)

SPLIT_FILE = "split.json"
METRICS_FILE = "metrics.jsonl"


def _generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded from a tuple of integers (e.g. seed, epoch, step)."""
    seed = int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0] >> 1)
    return torch.Generator().manual_seed(seed)


def prepare_run_dir(out_dir: str | Path, resume: bool, overwrite: bool) -> Path:
    """Create the run folder; a folder that already holds a run is only reused with resume or overwrite.

    Raises:
        CheckpointError: when ``out_dir`` holds files and neither flag is given.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not resume:
        if not overwrite:
            raise CheckpointError(f"{out}: folder is not empty; pass --resume to continue the run there or "
                                  f"--overwrite to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".*.tmp"):  # left by a kill during an atomic write
        stale.unlink()
    return out


@dataclass
class _Data:
    train: ArrayDataset
    val: ArrayDataset | None


def _load_data(cfg: RunConfig, out: Path, resume: bool) -> _Data:
    """Check, pair, split (saved to ``split.json``) and decode the dataset; writes what the data decides (mask
    encoding, channels, classes) into ``cfg``.

    Raises:
        DataError: listing every problem the checks found, the first in front.
    """
    data, report = scan(cfg, progress=cfg.train.progress)
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
        sl = slice(start, start + (batch_size or cfg.train.batch_size))
        x = to_float(torch.from_numpy(data.images[sl]).to(device), cfg.data.mean, cfg.data.std)
        y = torch.from_numpy(data.masks[sl]).to(device).long()
        x = x.contiguous(memory_format=layout)
        with torch.autocast(device.type, dtype=dtype) if dtype else nullcontext():
            logits = model(x)
        losses.append(loss_fn(logits, y) * len(x))
        dices.append(foreground_mean(dice_from_counts(confusion_counts(logits_to_classes(logits), y, labels))))
    return {"loss": float(torch.stack(losses).sum()) / len(data), "dice": float(torch.cat(dices).mean())}


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the step."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped training after the resume state was saved."""


class _LossLog:
    """Step losses kept on the device and read back in one sync every ``sync_every`` steps (on CPUs every step,
    where reading is free), so a CUDA step never waits for the host; every loss is checked before any save."""

    def __init__(self, out: Path, sync_every: int) -> None:
        self.out, self.sync_every = out, sync_every
        self.pending: list[tuple[int, torch.Tensor, int]] = []
        self.last = math.nan

    def __len__(self) -> int:
        return len(self.pending)

    def append(self, step: int, loss: torch.Tensor, n: int) -> None:
        self.pending.append((step, loss, n))

    def flush(self, epoch: int) -> float:
        """Check the pending losses; return their sum weighted by batch size.

        Raises:
            NonFiniteLossError: naming the first step whose loss is NaN or infinite.
        """
        if not self.pending:
            return 0.0
        values = torch.stack([loss for _, loss, _ in self.pending]).tolist()
        total = 0.0
        for (step, _, n), value in zip(self.pending, values):
            if not math.isfinite(value):
                raise NonFiniteLossError(f"{self.out}: loss is {value} at epoch {epoch + 1}, step {step + 1}; stopped, "
                                         f"{STATE_FILE} keeps the last good state (try a lower --lr)")
            total += value * n
        self.pending.clear()
        self.last = values[-1]
        return total


def auto_micro_batch(cfg: RunConfig, device: torch.device) -> int:
    """The largest micro-batch whose training activations fit in 75% of the device's free memory.

    A training step of the seed U-Net (base 64) at 480x320 took 845 MiB more peak memory per image on the CPU
    (fp32, batch 1 and 2), 90 bytes per pixel per base channel: batch 16 needs about 13 GiB.
    """
    width, height = cfg.data.image_size
    per_image = 90 * cfg.model.base_channels * width * height
    return max(1, min(cfg.train.batch_size, int(0.75 * free_memory(device) // per_image)))


@dataclass
class _Position:
    """Where training is: the next (epoch, step) to run, the loss sum of the epoch so far, the best score."""

    epoch: int = 0
    step: int = 0
    loss_sum: float = 0.0
    best: float = -math.inf


class _StopOnSignal:
    """Records SIGINT / SIGTERM instead of dying, so the loop can save its state first (main thread only)."""

    def __init__(self) -> None:
        self.requested: int = 0
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = signum

    def __enter__(self) -> _StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _rng_state() -> dict:
    """The global RNG states (Python, NumPy, torch, CUDA) as plain values ``torch.load(weights_only=True)`` reads."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": [name, keys.tolist(), pos, has_gauss, cached],
             "python": list(random.getstate())}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict) -> None:
    """Restore the global RNGs saved by :func:`_rng_state`."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _truncate_metrics(path: Path, epochs_done: int) -> None:
    """Keep the metrics lines of finished epochs only (a kill may have come after a line, before the save)."""
    if path.is_file():
        lines = [line for line in path.read_text().splitlines() if json.loads(line)["epoch"] <= epochs_done]
        path.write_text("".join(line + "\n" for line in lines))


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
    out = prepare_run_dir(out_dir, resume, overwrite)
    state = None
    if resume:
        state = load_training_state(out / STATE_FILE)
    device = resolve_device(cfg.train.device)
    data = _load_data(cfg, out, resume)
    cfg.save(out / CONFIG_FILE)

    torch.manual_seed(cfg.train.seed)
    layout = memory_format(device, cfg.train.memory_format, training=True)
    model = UNet(cfg.model).to(device, memory_format=layout)
    forward = torch.compile(model) if cfg.train.compile else model  # weights are saved from the plain module
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=cfg.train.restart_epochs, T_mult=cfg.train.restart_mult, eta_min=cfg.train.min_lr)
    dtype = autocast_dtype(device, cfg.train.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    pos = _Position()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        pos = _Position(int(state["epoch"]), int(state["step"]), float(state["loss_sum"]), float(state["best"]))
        _restore_rng(state["rng"])
        _truncate_metrics(out / METRICS_FILE, pos.epoch)
        logger.info("resuming %s at epoch %d, step %d", out, pos.epoch + 1, pos.step)
    n_params = sum(p.numel() for p in model.parameters())
    micro = cfg.train.micro_batch or auto_micro_batch(cfg, device)
    logger.info("model: %s, %.2fM parameters; device %s, precision %s, %s, micro-batch %d of %d", cfg.model,
                n_params / 1e6, device, dtype or torch.float32, str(layout).split(".")[-1], micro, cfg.train.batch_size)

    def save_state() -> None:
        save_training_state({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "scaler": scaler.state_dict(), "epoch": pos.epoch, "step": pos.step,
                             "loss_sum": pos.loss_sum, "best": pos.best, "rng": _rng_state()}, out / STATE_FILE)
        logger.debug("checkpoint saved at epoch %d step %d", pos.epoch + 1, pos.step)

    images = torch.from_numpy(data.train.images)
    masks = torch.from_numpy(data.train.masks)
    steps = math.ceil(len(data.train) / cfg.train.batch_size)
    loss_fn = SegmentationLoss()
    losses = _LossLog(out, sync_every=1 if device.type == "cpu" else 16)
    last_save = time.monotonic()
    with _StopOnSignal() as stop:
        while pos.epoch < cfg.train.epochs:
            epoch = pos.epoch
            model.train()
            t0, seen = time.perf_counter(), 0
            batches = torch.randperm(len(data.train), generator=_generator(cfg.train.seed, epoch)).split(
                cfg.train.batch_size)
            bar = tqdm(range(pos.step, steps), initial=pos.step, total=steps, desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
                       unit="batch", leave=False, disable=not (cfg.train.progress and sys.stderr.isatty()))
            for step in bar:
                idx = batches[step]
                x = to_float(images[idx].to(device, non_blocking=True), cfg.data.mean, cfg.data.std)
                y = masks[idx].to(device, non_blocking=True)
                x, y = random_affine(x, y, cfg.data.rotate_limit, cfg.data.hflip_p, cfg.data.vflip_p,
                                     generator=_generator(cfg.train.seed, epoch, step))
                optimizer.zero_grad(set_to_none=True)
                loss = torch.zeros((), device=device)
                for xm, ym in zip(x.split(micro), y.split(micro)):  # gradient accumulation over micro-batches
                    with torch.autocast(device.type, dtype=dtype) if dtype else nullcontext():
                        part = loss_fn(forward(xm.contiguous(memory_format=layout)), ym) * (len(xm) / len(x))
                    scaler.scale(part).backward()
                    loss += part.detach()
                scaler.step(optimizer)  # skipped by the scaler itself when fp16 gradients overflowed
                scaler.update()
                scheduler.step(epoch + (step + 1) / steps)
                losses.append(step, loss, len(idx))
                pos.step, seen = step + 1, seen + len(idx)
                every = cfg.train.checkpoint_steps
                due = step + 1 < steps and (pos.step % every == 0 if every else
                                            time.monotonic() - last_save > 60 * cfg.train.checkpoint_minutes)
                if due or stop.requested or len(losses) >= losses.sync_every or not bar.disable and step % 4 == 0:
                    pos.loss_sum += losses.flush(epoch)  # the device sync: checks every loss before any save
                    bar.set_postfix(loss=f"{losses.last:.4f}")
                if due or stop.requested:
                    save_state()
                    last_save = time.monotonic()
                if stop.requested:
                    raise TrainingInterrupted(f"{out}: stopped by signal {stop.requested} at epoch {epoch + 1}, "
                                              f"step {pos.step}; continue with: unetseg train --resume {out}")
            bar.close()
            pos.loss_sum += losses.flush(epoch)
            train_loss = pos.loss_sum / len(data.train)
            seconds = time.perf_counter() - t0
            val = evaluate(model, data.val, cfg, device) if data.val is not None else None
            record = {"epoch": epoch + 1, "train_loss": train_loss, "lr": optimizer.param_groups[0]["lr"],
                      "seconds": round(seconds, 2), "images_per_s": round(seen / seconds, 2)}
            if val is not None:
                record.update(val_loss=val["loss"], val_dice=val["dice"])
            score = val["dice"] if val is not None else -train_loss
            if score > pos.best:
                pos.best = score
                save_weights(model, out / WEIGHTS_FILE)
            with open(out / METRICS_FILE, "a") as fh:
                fh.write(json.dumps(record) + "\n")
            pos.epoch, pos.step, pos.loss_sum = epoch + 1, 0, 0.0
            save_state()
            last_save = time.monotonic()
            logger.info("epoch %d/%d: train loss %.4f%s, %.1f s (%.2f img/s)", epoch + 1, cfg.train.epochs,
                        train_loss, f", val loss {val['loss']:.4f}, val Dice {val['dice']:.4f}" if val else "",
                        seconds, record["images_per_s"])
    return out
