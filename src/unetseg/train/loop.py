"""The training loop: ``fit(cfg, out_dir)`` trains a U-Net and writes a run folder.

``fit`` reads as the recipe; each concern has its own room:

- the run folder (made, resumed, restarted; the session records): :mod:`unetseg.train.run_dir`;
- the data and the plan (check, pair, split, decode, budget plan), before step 1: :mod:`unetseg.train.prepare`;
- the settings: decided before step 1 and saved in ``config.json``; the run reads a frozen copy (a budget run's
  corrected step total lives in ``last.pt``);
- the data placement (the cache on the GPU or staged through pinned buffers, batches, crops):
  :mod:`unetseg.train.placement`;
- one training step (micro-batches, gradient scaling, DDP's ``no_sync``): :mod:`unetseg.train.step`;
- the learning-rate schedule (a saved ``LambdaLR``): :mod:`unetseg.train.schedule`;
- validation and the weights to save: :mod:`unetseg.train.validate`;
- the per-step decisions (losses checked, checkpoints, signals, budget re-plans), taken at fixed steps from one
  all-reduced tensor, so that processes never disagree: :mod:`unetseg.train.control`.

Every random draw of a step (batch order, crop corners, rotation angles, flips) comes from seeds made of
(seed, epoch, step), so a run resumed at any step sees the batches and augmentations it would have seen.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from unetseg._device import autocast_dtype, free_memory, memory_format
from unetseg.checkpoint import (BEST_FILE, CONFIG_FILE, METRICS_FILE, STATE_FILE, WEIGHTS_FILE, load_training_state,
                                save_training_state, save_weights)
from unetseg.config import RunConfig, ignored_settings, parse_duration
from unetseg.data.classes import class_names
from unetseg.data.transforms import augment
from unetseg.drawing.curves import CURVES_FILE, CurvesPainter
from unetseg.train.trackers import backends, open_trackers
from unetseg.metrics import check_background
from unetseg.model import UNet
from unetseg.model.flops import activation_elements
from unetseg.model.encoders import normalisation
from unetseg.model.weights import encoder_state
from unetseg.train._state import Position, StopOnSignal, TrainingInterrupted, restore_rng, rng_state
from unetseg.train.control import StepControl, decision_interval
from unetseg.train.distributed import World, check_batches, close_world, init_world
from unetseg.train.losses import SegmentationLoss, resolve_class_weights
from unetseg.train.placement import BatchSource, class_centres, cpu_generator, seed_of
from unetseg.train.plan import BN_IMAGES, TARGET, BudgetClock
from unetseg.train.prepare import RunData, load_data, plan_before_decode
from unetseg.train.run_dir import prepare_run_dir, process_cache, record_session, truncate_metrics
from unetseg.train.schedule import corrected_warmup, make_schedule, run_total, set_total, steps_per_epoch
from unetseg.train.step import TrainStep
from unetseg.train.validate import SavedWeights, evaluate, validation_seconds
from unetseg.train.weights import WeightAverage

logger = logging.getLogger(__name__)

#: Per-GPU batches under which a multi-GPU run suggests --sync-bn (batch norm over so few images is noisy).
SMALL_BN_BATCH = 8

__all__ = ["fit", "evaluate", "whole_batch", "auto_micro_batch", "changed_settings"]


def whole_batch(cfg: RunConfig) -> int:
    """The batch for passes over whole images (validation, BN recalibration): the training batch, or in a patch run
    as many whole images as hold the pixels of the batch's patches (at least one), so memory stays that of a step."""
    if not cfg.data.patch:
        return cfg.train.batch_size
    image, patch = cfg.data.image_size[0] * cfg.data.image_size[1], cfg.data.patch[0] * cfg.data.patch[1]
    return max(1, min(cfg.train.batch_size, cfg.train.batch_size * patch // image))


#: Peak training memory per activation element (:func:`unetseg.model.flops.activation_elements`): a training step
#: of the seed U-Net (base 64, 1,585 elements per input pixel) at 480x320 took 845 MiB more peak memory per image
#: on the CPU (fp32, batch 1 and 2), 5,760 bytes per pixel: batch 16 needs about 13 GiB.
ACTIVATION_BYTES = 5760 / 1585


def auto_micro_batch(cfg: RunConfig, device: torch.device, model: torch.nn.Module | None = None) -> int:
    """The largest micro-batch whose training activations fit in 75% of the device's free memory, estimated from
    the model that is built (``model``, else one built from ``cfg.model``): its activations per pixel, so an
    encoder's width counts, not ``base_channels``."""
    width, height = cfg.data.patch or cfg.data.crop or cfg.data.image_size  # a patch or crop run trains on crops
    if cfg.model.pretrained():  # counted on the built model (a forward pass on a small input)
        elements = activation_elements(model if model is not None else UNet(cfg.model),
                                       (cfg.model.in_channels, 64, 64))
    else:  # the plain U-Net's, measured: 90 bytes per pixel and base channel
        elements = 90 * cfg.model.base_channels / ACTIVATION_BYTES
    per_image = ACTIVATION_BYTES * elements * width * height
    return max(1, min(cfg.train.batch_size, int(0.75 * free_memory(device) // per_image)))


def param_groups(model: UNet, cfg: RunConfig) -> list[dict[str, Any]]:
    """The optimiser's parameter groups: one, or for a pretrained encoder, the encoder's at ``encoder_lr_scale`` x
    the learning rate and the decoder's and head's at the learning rate (the schedule scales both)."""
    if not cfg.model.pretrained():
        return [{"params": list(model.parameters())}]
    encoder = list(model.encoder.parameters())
    ids = {id(p) for p in encoder}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return [{"params": encoder, "lr": cfg.train.lr * cfg.train.encoder_lr_scale}, {"params": rest}]


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

    With ``cfg.data.folds`` K >= 2 it is a cross-validation run (:mod:`unetseg.train.cv`): ``fold_N`` folders of
    runs like the above, one per fold (``cfg.data.fold``: that one only), and ``cv/`` with the out-of-fold scores.

    Returns:
        The run folder.
    """
    keep = set(keep) if keep is not None else changed_settings(cfg)
    if cfg.data.folds > 1:
        from unetseg.train.cv import fit_cv

        return fit_cv(cfg, out_dir, _fit_split, resume=resume, overwrite=overwrite, keep=keep)
    return _fit_split(cfg, out_dir, resume=resume, overwrite=overwrite, keep=keep)


def _fit_split(cfg: RunConfig, out_dir: str | Path, *, resume: bool = False, overwrite: bool = False,
               keep: set[str] | frozenset[str] | None = None) -> Path:
    """:func:`fit` of one split (a run, or a fold of a cross-validation run)."""
    started = time.monotonic()
    keep = set(keep) if keep is not None else changed_settings(cfg)
    backends(cfg.train.log, cfg.train.log_dir)  # a tracker's missing library is one line, before anything is written
    # the encoder's weights are found and checked before the run folder is made: a bad name or file writes nothing
    pretrained = (None, "none") if resume else encoder_state(cfg.model)
    if cfg.model.pretrained() and not cfg.model.encoder_weights:
        cfg.model.encoder_weights = "imagenet"  # the default, stated in config.json
    world, device = init_world(cfg.train.device, cfg.train.dist_timeout_minutes)
    try:
        return _fit(cfg, prepare_run_dir(out_dir, resume, overwrite, world), resume, world, device, keep, started,
                    pretrained)
    finally:
        process_cache(cfg, Path(out_dir), world).unlink(missing_ok=True)
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
         started: float, pretrained: tuple[dict[str, torch.Tensor] | None, str]) -> Path:
    state = load_training_state(out / STATE_FILE) if resume else None
    # what the run's config.json said before this session's flags
    stored = RunConfig.load(out / CONFIG_FILE) if resume and (out / CONFIG_FILE).is_file() else None
    given = set(keep)  # the user's settings (the plan adds to keep what it decides)
    dtype = autocast_dtype(device, cfg.train.amp)
    layout = memory_format(device, cfg.train.memory_format, training=True, encoder=cfg.model.pretrained())
    budget = parse_duration(cfg.train.budget) if cfg.train.budget else None
    derived: list[tuple[int, int]] = []
    data = load_data(cfg, out, resume, world, before_decode=lambda pairing: plan_before_decode(
        pairing, cfg, keep, budget, resume, world, device, dtype, layout, started, derived))
    if derived:  # logged once the data has passed its checks, so a run that cannot start says only why
        logger.info("training size %dx%d: about the seed's 480x320 pixel count (never more than the images'), "
                    "keeping the %dx%d images' aspect ratio (--image-size sets it)", *cfg.data.image_size, *derived[0])
    # the plan may have measured it
    layout = memory_format(device, cfg.train.memory_format, training=True, encoder=cfg.model.pretrained())
    if cfg.model.pretrained() and not resume and pretrained[0] is None and cfg.model.weights_source() != "none":
        pretrained = encoder_state(cfg.model)  # the plan chose an encoder: its weights, found before it chose
    if cfg.model.pretrained() and not resume and not {"data.mean", "data.std"} <= keep:
        # the normalisation the encoder's weights were trained with, for the data's channels; the user's mean or std
        # wins, the other one is the encoder's (a mean alone with std 1 would feed ImageNet weights 4x too little)
        mean, std = normalisation(cfg.model.encoder, cfg.model.in_channels)
        cfg.data.mean = cfg.data.mean if "data.mean" in keep else mean
        cfg.data.std = cfg.data.std if "data.std" in keep else std
        if len(cfg.data.mean) != len(cfg.data.std):
            raise ValueError(f"--mean {len(cfg.data.mean)} value(s) and --std {len(cfg.data.std)}: give one per "
                             f"channel of the images ({cfg.model.in_channels})")
        logger.info("input normalisation of %s: mean %s, std %s%s", cfg.model.encoder, cfg.data.mean, cfg.data.std,
                    " (the one given; the other the encoder's)" if {"data.mean", "data.std"} & keep else "")
    labels = max(2, cfg.model.num_classes)
    check_background(cfg.data.background, labels)
    if not resume or "train.class_weights" in keep or (cfg.train.class_weight_values is None
                                                       and cfg.train.class_weights != "none"):
        # from the training masks at the training size, once, and recorded: a resumed run weighs as before
        cfg.train.class_weight_values = resolve_class_weights(cfg.train.class_weights, data.train.masks, labels,
                                                              data.train.row_numbers())
        if cfg.train.class_weight_values is not None:
            kind = {"auto": "median frequency", "sqrt": "square root of median frequency"}
            logger.info("class weights (%s): %s", kind.get(cfg.train.class_weights, "given"), ", ".join(
                        f"{n} {w:.3g}" for n, w in zip(
                            class_names(cfg.data.class_names, labels), cfg.train.class_weight_values)))
    if not cfg.train.micro_batch:  # chosen once and recorded, so a resumed run accumulates exactly as before; rank
        # 0's choice for all (free memory differs between GPUs, and with --sync-bn every forward pass is a collective)
        cfg.train.micro_batch = world.broadcast_int(auto_micro_batch(cfg, device) if world.is_main else 0, device)
    per_epoch = steps_per_epoch(len(data.train), cfg.train.batch_size, world.size, cfg.train.compile)
    if stored is not None:
        _resumed_length(cfg, stored, per_epoch)
    if cfg.train.sync_bn and world.size > 1 and device.type == "cpu":
        raise ValueError("--sync-bn: SyncBatchNorm runs on GPUs only; leave it out on CPUs")
    check_batches(len(data.train), cfg.train.batch_size, world.size, cfg.train.sync_bn)
    if world.is_main:
        for line in ignored_settings(cfg, given, resume):
            logger.warning("warning: %s", line)
        cfg.save(out / CONFIG_FILE)  # the run's settings, decided: from here on they are only read
    _Training(cfg.frozen(), out, world, device, dtype, layout, data, state, budget, started, pretrained).run()
    world.barrier()
    if data.node_cache is not None and world.local_rank == 0:  # finished: the node's cache goes (a run that failed
        import shutil                                            # keeps it for its restart)

        shutil.rmtree(data.node_cache, ignore_errors=True)
    return out


def _resumed_length(cfg: RunConfig, stored: RunConfig, per_epoch: int) -> None:
    """A resumed run whose ``--epochs`` or ``--max-steps`` (not both) differs from its config.json's trains to that:
    the other no longer caps it (a budget run's config.json holds its planned step total as ``max_steps``). The same
    values again (``--resume auto`` runs the first command line again) change nothing."""
    epochs = cfg.train.epochs != stored.train.epochs
    steps = cfg.train.max_steps != stored.train.max_steps
    if epochs and not steps and cfg.train.max_steps:
        logger.info("resume: --epochs %d replaces the step total of %d in config.json", cfg.train.epochs,
                    cfg.train.max_steps)
        cfg.train.max_steps = 0
    elif steps and not epochs and cfg.train.max_steps:
        cfg.train.epochs = max(cfg.train.epochs, math.ceil(cfg.train.max_steps / per_epoch))
        logger.info("resume: --max-steps %d (was %d): %d epochs", cfg.train.max_steps, stored.train.max_steps,
                    cfg.train.epochs)


class _Training:
    """One training session of a run: the model, its optimiser and schedule, the batches, and the epochs."""

    def __init__(self, cfg: RunConfig, out: Path, world: World, device: torch.device, dtype: torch.dtype | None,
                 layout: torch.memory_format, data: RunData, state: dict[str, Any] | None, budget: float | None,
                 started: float, pretrained: tuple[dict[str, torch.Tensor] | None, str] = (None, "none")) -> None:
        self.cfg, self.out, self.world, self.device, self.dtype, self.layout = cfg, out, world, device, dtype, layout
        self.data, self.budget, self.started = data, budget, started
        self.labels = max(2, cfg.model.num_classes)
        self.names = class_names(cfg.data.class_names, self.labels)
        # cudnn.benchmark stays off: on an H200 it gained nothing in steady state (the loop ran at the bare step's
        # speed without it) and its search per shape (training, last partial and validation batches) made the first
        # epoch 10x slower, 16 s of a 3-minute budget (benchmarks/README.md, "GPU")
        torch.manual_seed(cfg.train.seed)
        self.model = UNet(cfg.model, encoder_state=pretrained[0]).to(device, memory_format=layout)
        self.weights_source, self.resumed = pretrained[1], state is not None
        train_model: torch.nn.Module = self.model
        if world.size > 1 and cfg.train.sync_bn:  # batch statistics over the global batch, not each GPU's share
            train_model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        forward = DistributedDataParallel(train_model) if world.size > 1 else train_model  # saved: the plain module
        self.distributed = world.size > 1
        if cfg.train.compile:
            forward = torch.compile(forward)
        # fused: one kernel for all parameters; nothing read back (the others read each step count with .item(),
        # and under fp16 the scaler's overflow check stays on the GPU); 5x faster than foreach on the CPU too
        self.optimizer = torch.optim.Adam(param_groups(self.model, cfg), lr=cfg.train.lr,
                                          weight_decay=cfg.train.weight_decay, fused=True)
        self.scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        # Several processes drop the last partial batch, so that every process has a share of every step; so does a
        # compiled model, so that every step has one shape.
        self.steps = steps_per_epoch(len(data.train), cfg.train.batch_size, world.size, cfg.train.compile)
        # the step total and warm-up: the config's, or where a budget run corrected them and the config still says
        # what it said then, the corrected ones (they live in last.pt, never in config.json)
        self.configured = {"epochs": cfg.train.epochs, "max_steps": cfg.train.max_steps,
                           "warmup_steps": cfg.train.warmup_steps}
        self.total, self.warmup = run_total(cfg.train.epochs, cfg.train.max_steps, self.steps), cfg.train.warmup_steps
        saved = state.get("schedule") if state is not None else None
        if saved is not None:
            was = saved["configured"]
            if (was["epochs"], was["max_steps"]) == (cfg.train.epochs, cfg.train.max_steps):
                self.total = int(saved["total"])
            if was["warmup_steps"] == cfg.train.warmup_steps:
                self.warmup = int(saved["warmup"])
        self.schedule = make_schedule(self.optimizer, cfg.train, self.total, self.steps)
        set_total(self.schedule, self.total, self.warmup)
        self.pos = Position()
        self._decided = 0  # the position in its epoch of the last decision (checkpoints every N steps count from it)
        if state is not None:
            self._restore(state)
        # made after the weights are loaded: an average switched on at a resume starts from them, not from the init
        self.average = WeightAverage(self.model, cfg.train.ema_decay) if cfg.train.ema_decay else None
        if self.average is not None and state is not None and "average" in state:
            self.average.load_state_dict(state["average"])
        per_process = math.ceil(cfg.train.batch_size / world.size)  # the largest share of a global batch
        micro = min(cfg.train.micro_batch, per_process)
        if cfg.train.compile:  # parts of one size: one compiled graph
            micro = max(d for d in range(1, micro + 1) if per_process % d == 0)
        self._log_model(per_process, micro)
        self.step = TrainStep(forward, self.optimizer, self.scaler,
                              SegmentationLoss(cfg.train.loss, cfg.train.class_weight_values).to(device), micro, dtype,
                              layout, self.distributed)
        centres = class_centres(data.train.masks, data.train.row_numbers(), self.labels) \
            if cfg.data.patch and cfg.data.oversample > 0 else None
        self.source = BatchSource(data.train, device, cfg.data.patch, per_process, centres, cfg.data.oversample)
        logger.debug("training images %s", self.source.where)
        self.weights = SavedWeights(self.model, self.average, cfg.train.bn_recalibrate, data.train, cfg, device, layout,
                                    dtype, whole_batch(cfg), BN_IMAGES)
        self.control = StepControl(world, device, decision_interval(cfg.train.sync_every, device), out)
        self.clock = BudgetClock(budget, started, self.total, self.steps, cfg.train.val_every) \
            if budget and state is None else None
        self.curves = CurvesPainter(out)
        self._augment_generator = torch.Generator(device) if device.type != "cpu" else None
        self.last_save = time.monotonic()
        self.warm = False  # the first timed interval of a session (warm-up, cuDNN's search) is not timed
        self.step_times: list[float] = []
        self.forecast_logged = False

    def _restore(self, state: dict[str, Any]) -> None:
        """Continue from a saved state: weights, optimiser, scaler, position, schedule and RNGs."""
        cfg = self.cfg
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        params = {id(p): p for group in self.optimizer.param_groups for p in group["params"]}
        for group in self.optimizer.param_groups:  # the fused implementation, whatever saved the state
            group["fused"], group["foreach"] = True, None
        for key, values in self.optimizer.state.items():  # fused Adam keeps its step counts beside the weights
            if "step" in values and torch.is_tensor(values["step"]) and id(key) in params:
                values["step"] = values["step"].to(params[id(key)].device, torch.float32)
        self.scaler.load_state_dict(state["scaler"])
        self.pos = Position(int(state["epoch"]), int(state["step"]), float(state["loss_sum"]), float(state["best"]))
        self._decided = self.pos.step
        for group in self.optimizer.param_groups:  # the config's optimiser settings, not those saved with the state
            if group["weight_decay"] != cfg.train.weight_decay:
                logger.info("resume: weight decay %g (was %g)", cfg.train.weight_decay, group["weight_decay"])
                group["weight_decay"] = cfg.train.weight_decay
        # the schedule is the run's config (a resumed run may be given more steps, another --lr or warm-up) at the
        # run's position: the steps done, its only state
        self.schedule.last_epoch = self.pos.epoch * self.steps + self.pos.step
        set_total(self.schedule, self.total, self.warmup)
        restore_rng(state["rng"])
        truncate_metrics(self.out / METRICS_FILE, self.pos.epoch, self.world)
        logger.info("resuming %s at epoch %d, step %d", self.out, self.pos.epoch + 1, self.pos.step)

    def _log_model(self, per_process: int, micro: int) -> None:
        cfg, world = self.cfg, self.world
        n_chunks = math.ceil(per_process / micro)
        if n_chunks > 1:
            logger.info("gradients accumulate over %d micro-batches of %s images per step (split evenly); batch-norm "
                        "statistics come from each micro-batch, not from the batch of %d", n_chunks,
                        "/".join(sorted({str(len(c)) for c in torch.arange(per_process).tensor_split(n_chunks)},
                                        reverse=True)), cfg.train.batch_size)
        if world.size > 1 and not cfg.train.sync_bn and micro < SMALL_BN_BATCH:
            logger.info("batch norm: each of the %d processes normalises over its own %d images; --sync-bn "
                        "normalises over the global batch of %d (slower: an all-reduce per layer)", world.size, micro,
                        cfg.train.batch_size)
        self.n_params = sum(p.numel() for p in self.model.parameters())
        logger.info("model: %s, %.2fM parameters; device %s, precision %s, %s, micro-batch %d of %d%s", cfg.model,
                    self.n_params / 1e6, self.device, self.dtype or torch.float32, str(self.layout).split(".")[-1],
                    micro, cfg.train.batch_size,
                    f", {world.size} processes (torch.distributed{', SyncBatchNorm' if cfg.train.sync_bn else ''})"
                    if world.size > 1 else "")

    # --- the recipe ---------------------------------------------------------------------------------------------

    def run(self) -> None:
        if self.world.is_main:
            encoder = {"name": self.cfg.model.encoder, "weights": self.weights_source} \
                if self.cfg.model.pretrained() and not self.resumed else None  # a resume keeps the first's
            record_session(self.out, self.data.check, self.data.ceiling, self.device, self.dtype, self.layout,
                           self.world.size, self.n_params, self.pos, encoder)
        self.trackers = open_trackers(self.out, self.cfg.train.log, self.cfg.to_dict(), self.resumed,
                                      self.pos.epoch * self.steps + self.pos.step, self.cfg.train.log_dir,
                                      self.world.is_main)
        ok = False
        try:
            with StopOnSignal() as stop:
                while self.pos.epoch < self.epochs_planned():
                    seconds, seen = self._epoch(self.pos.epoch, stop)
                    self._end_epoch(self.pos.epoch, seconds, seen)
            self.trackers.files([self.out / CONFIG_FILE, self.out / CURVES_FILE])
            ok = True
        finally:
            self.trackers.close(ok)  # a run stopped or failed is marked so (a resume continues it)
        if self.clock is not None and self.world.is_main:  # a resumed run's sessions are not one clock
            elapsed = time.monotonic() - self.started
            logger.info("budget %s: ran %s in all (%.1f%% of the budget)", self.cfg.train.budget,
                        _format_duration(elapsed), 100 * elapsed / self.budget)

    def epochs_planned(self) -> int:
        """The epochs of the run's step total (the last may be cut short)."""
        return math.ceil(self.total / self.steps)

    def _epoch_end(self, epoch: int) -> int:
        """The step count of ``epoch`` (the last may be cut short by the run's total)."""
        return min(self.steps, self.total - epoch * self.steps)

    def _epoch(self, epoch: int, stop: StopOnSignal) -> tuple[float, int]:
        """Train the rest of ``epoch``; returns its seconds and the images seen."""
        cfg, world, pos = self.cfg, self.world, self.pos
        self.model.train()
        t0, seen = time.perf_counter(), 0
        batch_size, n = cfg.train.batch_size, len(self.data.train)
        self.source.start_epoch(torch.randperm(n, generator=cpu_generator(cfg.train.seed, epoch)))
        end = self._epoch_end(epoch)
        bar = tqdm(initial=pos.step, total=end, desc=f"epoch {epoch + 1}/{self.epochs_planned()}", unit="batch",
                   leave=False, disable=not (cfg.train.progress and sys.stderr.isatty()))
        for step in itertools.count(pos.step):  # `end` moves when the budget clock corrects the step count
            if step >= end:
                break
            global_step = epoch * self.steps + step
            first, size = step * batch_size, min(batch_size, n - step * batch_size)
            lo, hi = _shard(size, world)
            keys = (cfg.train.seed, epoch, step, *([world.rank] * (world.size > 1)))
            rng = np.random.default_rng(seed_of(*keys, 1)) if cfg.data.patch else None
            images, masks = self.source.batch(first + lo, first + hi, rng)
            x, y = augment(images, masks, cfg.data, self._generator(keys))
            share = (hi - lo) * world.size / size  # DDP averages the processes' gradients: a share weighs its part
            loss = self.step(x, y, share)
            self.schedule.step()
            if self.average is not None:
                self.average.update(global_step)
            self.control.append(step, loss / share, size)
            pos.step, seen = step + 1, seen + size
            bar.update()
            every = cfg.train.checkpoint_steps  # checkpoint steps are decision steps too
            if self.control.due(global_step, pos.step >= end) or (every and pos.step % every == 0):
                end = self._decide(epoch, global_step, end, stop.requested, bar)
            if pos.step >= end:
                break
        bar.close()
        return time.perf_counter() - t0, seen

    def _generator(self, keys: tuple[int, ...]) -> torch.Generator:
        """The step's generator of augmentation draws, on the training device (on the CPU: a fresh CPU generator)."""
        if self._augment_generator is None:
            return cpu_generator(*keys)
        return self._augment_generator.manual_seed(seed_of(*keys))

    def _decide(self, epoch: int, global_step: int, end: int, signal: int, bar: tqdm) -> int:
        """A decision step: every process gets the same decision (losses, checkpoint, stop, re-plan); returns the
        epoch's step count, which a re-plan may change."""
        cfg, pos, main = self.cfg, self.pos, self.world.is_main
        every = cfg.train.checkpoint_steps
        save = pos.step < end and (pos.step // every > self._decided // every if every else
                                   time.monotonic() - self.last_save > 60 * cfg.train.checkpoint_minutes)
        proposal = 0
        if main and self.clock is not None and not self.clock.corrected and self.clock.n_steps >= self.clock.first:
            proposal = self.clock.maybe_correct(global_step + 1, _validation_estimate(self.data, cfg, self.clock),
                                                False) or 0
        decision = self.control.decide(epoch, signal, save, proposal)
        self._decided = pos.step
        pos.loss_sum += decision.loss_sum
        if not bar.disable:
            bar.set_postfix(loss=f"{decision.last_loss:.4f}")
        self._timed(*self.control.interval(), global_step)
        if decision.total:
            self._set_total(max(decision.total, global_step + 1),
                            f"budget: measured {self.clock.t_steps / self.clock.n_steps:.2f} s/step"
                            if self.clock is not None and self.clock.n_steps else "budget: re-planned", True)
            end = self._epoch_end(epoch)
            bar.total = end
        if decision.save or decision.stop:
            self._save_state()
            self.last_save = time.monotonic()
        if decision.stop:
            self.world.barrier()  # no process leaves before rank 0 has written the state
            raise TrainingInterrupted(f"{self.out}: stopped by signal {decision.stop} at epoch {epoch + 1}, step "
                                      f"{pos.step}; continue with: unetseg train --resume {self.out}")
        return end

    def _timed(self, seconds: float, steps: int, global_step: int) -> None:
        """An interval between decisions, timed after the device caught up: the budget clock and the forecast."""
        if not self.warm or steps == 0:
            self.warm = True
            return
        if self.clock is not None:
            self.clock.step_time(seconds, steps)
        self.step_times += [seconds / steps] * min(steps, 8)
        if not self.forecast_logged and len(self.step_times) >= 5:
            self.forecast_logged = True
            _log_forecast(self.step_times, self.total - global_step - 1, self.cfg, self.data, self.steps)

    def _set_total(self, new: int, why: str, loud: bool) -> None:
        """A new step total (a budget correction): the schedule and the clock follow, last.pt records it (the config
        stays as decided); logged."""
        self.total, self.warmup = new, corrected_warmup(self.warmup, new)
        set_total(self.schedule, new, self.warmup)
        if self.clock is not None:
            self.clock.total = new
        ends = time.time() + TARGET * self.clock.budget - (time.monotonic() - self.clock.started) \
            if self.clock is not None else time.time()
        logger.log(logging.INFO if loud else logging.DEBUG, "%s: %d steps in all (%d epochs), ending about %s", why,
                   new, self.epochs_planned(), time.strftime("%H:%M:%S", time.localtime(ends)))

    def _save_state(self) -> None:
        if not self.world.is_main:
            return
        pos = self.pos
        save_training_state({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                             "scaler": self.scaler.state_dict(),
                             "epoch": pos.epoch, "step": pos.step, "loss_sum": pos.loss_sum, "best": pos.best,
                             "rng": rng_state(),
                             "schedule": {"total": self.total, "warmup": self.warmup, "configured": self.configured},
                             **({"average": self.average.state_dict()} if self.average is not None else {})},
                            self.out / STATE_FILE)
        logger.debug("checkpoint saved at epoch %d step %d", pos.epoch + 1, pos.step)

    def _end_epoch(self, epoch: int, seconds: float, seen: int) -> None:
        """Validation, the weights and metrics written, the resume state, and a budget re-plan where the speed
        drifted."""
        cfg, world, pos, data = self.cfg, self.world, self.pos, self.data
        done_steps = pos.step
        train_loss = pos.loss_sum / min(len(data.train), done_steps * cfg.train.batch_size)
        last_epoch = epoch + 1 >= self.epochs_planned()
        validate = data.val is not None and ((epoch + 1) % cfg.train.val_every == 0 or last_epoch)
        val, v0 = None, time.perf_counter()
        if (epoch + 1) % cfg.train.val_every == 0 or last_epoch:
            final = self.weights.compute(world)
            if validate:  # each process scores its share of the validation images, with rank 0's weights
                world.broadcast_module(final)
                val = evaluate(final, data.val, cfg, self.device, batch_size=whole_batch(cfg), world=world)
            if world.is_main:
                save_weights(final, self.out / WEIGHTS_FILE)
            self.model.train()
        val_seconds = time.perf_counter() - v0
        self.control.exclude(val_seconds)  # validation is timed apart from the steps
        if self.clock is not None and validate:
            self.clock.validation_time(val_seconds)
        record = {"epoch": epoch + 1, "step": epoch * self.steps + done_steps, "train_loss": train_loss,
                  "lr": self.optimizer.param_groups[-1]["lr"], "seconds": round(seconds, 2),
                  "images_per_s": round(seen / seconds, 2)}
        if val is not None:
            record.update(val_loss=val["loss"], val_dice=None if math.isnan(val["dice"]) else val["dice"])
            if len(val["dice_per_class"]) > 1:
                record["val_dice_per_class"] = [None if math.isnan(d) else d for d in val["dice_per_class"]]
            score = val["dice"]
            if self.labels > 2:  # multi-class: the field's scores, and the best weights by mean IoU
                record.update(val_miou=_finite(val["miou"]), val_pixel_accuracy=_finite(val["pixel_accuracy"]),
                              val_iou_per_class={n: _finite(v) for n, v in zip(self.names, val["iou_per_class"])})
                score = val["miou"]
            if score > pos.best and world.is_main:  # False for NaN (nothing to find in validation)
                pos.best = score
                save_weights(final, self.out / BEST_FILE)
        if world.is_main:
            with open(self.out / METRICS_FILE, "a") as fh:
                fh.write(json.dumps(record) + "\n")
            self.trackers.log(record)
            self.curves(final=last_epoch)
        pos.epoch, pos.step, pos.loss_sum = epoch + 1, 0, 0.0
        self._decided = 0
        if self.clock is not None and not last_epoch:  # the same call on every process: rank 0 decides
            new = self.clock.maybe_correct(pos.epoch * self.steps, _validation_estimate(data, cfg, self.clock), True) \
                if world.is_main and self.clock.corrected else None
            new = world.broadcast_int(new or 0, self.device)
            if new:
                self._set_total(new, "budget: the speed drifted, re-planned", False)
        self._save_state()  # after a re-plan, so that last.pt holds the new total
        world.barrier()  # the others wait while the main process validates and saves
        self.last_save = time.monotonic()
        logger.info("epoch %d/%d: train loss %.4f%s, %.1f s (%.2f img/s)", epoch + 1, self.epochs_planned(),
                    train_loss, "" if val is None else f", val loss {val['loss']:.4f}, val Dice {val['dice']:.4f}"
                    + (f", val mIoU {val['miou']:.4f}, pixel accuracy {val['pixel_accuracy']:.4f}"
                       if self.labels > 2 else ""), seconds, record["images_per_s"])
        if val is not None and self.labels > 2:
            logger.info("  val IoU per class: %s", ", ".join(
                f"{n} {v:.3f}" for n, v in zip(self.names, val["iou_per_class"])))


def _shard(size: int, world: World) -> tuple[int, int]:
    """This process's contiguous part [lo, hi) of a global batch of ``size``: N processes see the same images per
    batch-norm batch as one process accumulating N micro-batches (``tensor_split``'s parts)."""
    q, r = divmod(size, world.size)
    lo = world.rank * q + min(world.rank, r)
    return lo, lo + q + (world.rank < r)


def _finite(value: float) -> float | None:
    """None for NaN (JSON has no NaN)."""
    return None if value != value else value



def _validation_estimate(data: RunData, cfg: RunConfig, clock: BudgetClock) -> float:
    """Seconds of one validation before any was timed, as the plan estimated it, from the steps timed so far."""
    per_sample = clock.t_steps / max(1, clock.n_steps) / cfg.train.batch_size
    n_val = len(data.val) if data.val is not None else 0
    return validation_seconds(len(data.train), n_val, per_sample, tuple(cfg.data.image_size), cfg.data.patch,
                              cfg.train.batch_size, BN_IMAGES if cfg.train.bn_recalibrate else 0,
                              cfg.data.crop) + 0.5


def _log_forecast(step_seconds: list[float], steps_left: int, cfg: RunConfig, data: RunData, steps: int) -> None:
    """Log the run's expected duration from its first timed steps; hint at --budget when it runs past a day."""
    per_step = sorted(step_seconds)[len(step_seconds) // 2]
    n_val = len(data.val) if data.val is not None else 0
    validations = math.ceil(steps_left / steps / cfg.train.val_every) + 1
    per_validation = validation_seconds(len(data.train), n_val, per_step / cfg.train.batch_size,
                                        tuple(cfg.data.image_size), cfg.data.patch, cfg.train.batch_size,
                                        BN_IMAGES if cfg.train.bn_recalibrate else 0,
                                        cfg.data.crop)  # the plan's estimate
    left = steps_left * per_step + validations * per_validation
    logger.info("expected: %.2f s/step, %d steps left, about %s more (ends about %s)", per_step, steps_left,
                _format_duration(left), time.strftime("%Y-%m-%d %H:%M", time.localtime(time.time() + left)))
    if left > 86400 and not cfg.train.budget:
        logger.warning("warning: this run would take %s on this device; unetseg train --budget 2h (any duration) plans "
                       "a model, size and step count that end in time, or use a GPU", _format_duration(left))

