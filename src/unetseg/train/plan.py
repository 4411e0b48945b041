"""Training to a wall-clock budget (``unetseg train --budget 30m``).

Before decoding, the plan measures a few training steps of candidate models on this device and picks, among the
settings the user did not give, the model width, training size, batch, learning rate, schedule and augmentation
that serve the budget best; it then sets the number of optimiser steps so the run ends within the budget, decoding,
validation and the final batch-norm pass included. Once the run's own first steps are timed, the step count is
corrected (:class:`BudgetClock`); the learning-rate schedule is over the planned steps, so it always completes.

The rule (measured on a 2-core CPU, benchmarks/README.md "Training to a budget" and "What shrinking destroys"):
held-out Dice depends more on how many training images the model sees than on its size, up to about ``MIN_IMAGES``;
and it cannot pass the **resolution ceiling** of the training size (:mod:`unetseg.data.ceiling`: DRIVE's vessels
keep a Dice of 0.80 at a third of their size, and the run scored 0.73 there, 0.77 where the ceiling was 0.85). So:

1. candidates that see ``MIN_IMAGES`` training images (or patches) in the budget are the pool (none: the cheapest);
2. the ceiling read is that of the score the run is judged by: the foreground's Dice for binary masks, the mean Dice
   over classes for multi-class ones (a class lost costs 1/K of it). Where every size of ``LADDER`` keeps at least
   ``CEILING_FLOOR`` (Carvana 0.99, CamVid 0.95 at 160x112), all of them; where some size does not (DRIVE's vessels,
   membrane), full-resolution patches (ceiling 1, windows at prediction: DRIVE 0.801 against 0.795 for whole images
   at 560x576 in 30 minutes); where the images cannot be cropped at one scale (several sizes, or smaller than two
   patches), the sizes that keep the floor; else the highest ceiling;
3. the costliest of what is left.

On multi-class data where shrinking destroys nothing, and where its weights are on the machine, the model is the U-Net
on the ImageNet-pretrained ``PLAN_ENCODER`` (only the size is then chosen, and ``PRETRAINED_MIN_IMAGES`` suffice);
binary masks keep the plain U-Net, which scored as well or better on them (benchmarks/pretrained.py).

Such data (scenes: CamVid's streets) trains on scale-jittered random crops (``SCENE_CROP_SIDE``, ``SCENE_SCALE_LIMIT``)
of the frames at the candidate's size, and each candidate is timed at its crop; the rule counts crops by their share
of a frame's pixels (about half: counted whole, 2,904 crops of 448x352 frames scored 0.274 mIoU on a held-out
street beside 0.403 for 12,648 of 288x224, one machine, 30 minutes); validation sees whole frames at the chosen
size in one pass, prediction at several scales of it with flips.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from typing import Any
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from unetseg.config import RunConfig, parse_duration
from unetseg.data.ceiling import dice_from_iou, worst_class
from unetseg.metrics import scored_classes
from unetseg.model import UNet
from unetseg.model.unet import ENCODER_STRIDE
from unetseg.model.weights import WeightsError, find_imagenet
from unetseg.train.distributed import World, batch_for, check_batches
from unetseg.train.losses import SegmentationLoss
from unetseg.train.schedule import steps_per_epoch
from unetseg.train.validate import validation_seconds

logger = logging.getLogger(__name__)

#: Candidate (base channels, pixel count relative to the seed's 480x320), in order of cost.
LADDER: tuple[tuple[int, float], ...] = ((8, 0.12), (8, 0.25), (16, 0.25), (16, 0.44), (32, 0.44), (32, 1.0),
                                         (64, 1.0))
SEED_PIXELS = 480 * 320
#: Training images (passes) the chosen candidate must see within the budget.
MIN_IMAGES = 5000
#: The augmentation a budget run adds to the seed's rotation and flips: colour and lighting changes, so a model
#: trained on a few dark cars also finds white ones (benchmarks/README.md).
STRONG_AUGMENTATION = {"brightness": 0.3, "contrast": 0.3, "saturation": 0.5, "gamma": 0.25,
                       "channel_shuffle_p": 0.5, "grayscale_p": 0.1, "scale_limit": 0.1}
#: The share of the budget the plan aims at, leaving room for the machine's noise.
TARGET = 0.96
#: Budget runs validate about this many times before the final validation ...
VALIDATIONS = 8
#: ... fewer where they would take more than this share of the budget: a validation of CamVid's 101 whole frames at
#: 448x352 with its batch-norm pass took 59 s on a 2-core AVX2 EPYC in fp32, and 8 of them 26% of 30 minutes.
VALIDATION_SHARE = 0.1
#: Images used to recompute batch-norm statistics.
BN_IMAGES = 256
#: Where a size of LADDER leaves the score a resolution ceiling (Dice) under this, the data has structures that
#: shrinking destroys: DRIVE's held-out Dice was about 0.9 x the ceiling at two sizes (0.73 at 0.80, 0.77 at 0.85), so
#: a size must keep 0.9 for the vessels to reach 0.8. Carvana keeps 0.99 at 160x112: its plan is the ladder's.
CEILING_FLOOR = 0.90
#: Narrow models at the larger sizes (up to the images' own, 2.25 x the seed's pixels), for such data when it cannot
#: be cropped at one scale.
FINE_LADDER: tuple[tuple[int, float], ...] = ((8, 0.44), (8, 1.0), (16, 1.0), (8, 2.25), (16, 2.25))
#: Full-resolution patch candidates (base channels, patch side), for images at least twice the patch.
PATCH_LADDER: tuple[tuple[int, int], ...] = ((8, 256), (16, 256), (32, 256), (64, 256))
#: Budget runs train with Dice + cross-entropy, multi-class ones with median-frequency class weights too
#: (benchmarks/losses.py: CamVid mIoU 0.434 -> 0.735, DRIVE Dice 0.747 -> 0.772; Carvana 0.9822 -> 0.9820, the same).
BUDGET_LOSS = "dice_ce"
MULTICLASS_WEIGHTS = "sqrt"  # milder than median frequency: CamVid 0006R0 held out, 30m: 0.392 -> 0.431 mIoU
#: The ImageNet encoder a budget run on multi-class data takes where its weights are on the machine and shrinking
#: destroys nothing (benchmarks/README.md, "Pretrained encoders"), and the training images it must see: fewer than
#: from scratch (CamVid, 5 minutes: 160x112 seeing 8,664 frames 0.541 mIoU, 224x176 seeing 4,768 0.583, 304x224
#: seeing 1,920 0.532).
PLAN_ENCODER = "efficientnet-lite0"
#: Scene data (multi-class, where shrinking destroys nothing) trains on random crops of about half a frame's pixels
#: (each side x SCENE_CROP_SIDE) from frames zoomed by 0.5-2.0 (SCENE_SCALE_LIMIT; DeepLab, BiSeNet and PIDNet
#: rescale road scenes by 0.5-2.0 and crop) and predicts whole frames at the training size: a sample costs half a
#: frame, so twice as many are seen, each at one of many scales. CamVid, a held-out street (0006R0), 30 minutes on the
#: 2-core EPYC: mIoU and worst class in benchmarks/README.md, "Scene recipe".
SCENE_CROP_SIDE = 0.71
SCENE_SCALE_LIMIT = 1.0
#: Scene runs predict at several scales of the training size, each with its horizontal flip, the probabilities
#: averaged (DeepLab's and mmsegmentation's multi-scale flip inference): CamVid 0006R0 held out, 30 minutes, a run at
#: 288x224: 0.403 mIoU at 1, 0.420 at 1, 1.5 and 2 with flips (benchmarks/README.md, "Scene recipe").
SCENE_PREDICT_SCALES = (1.0, 1.5, 2.0)
SCENE_PREDICT_TTA = True
PRETRAINED_MIN_IMAGES = 3000
#: A pretrained encoder's learning rate as a share of the decoder's in budget runs.
PLAN_ENCODER_LR_SCALE = 0.1


def encoder_available(name: str) -> bool:
    """Whether the ImageNet weights of encoder ``name`` are on this machine (no download is tried)."""
    try:
        find_imagenet(name, download=False)
    except WeightsError:
        return False
    return True


def encoder_everywhere(world: World, device: torch.device) -> bool:
    """Whether the plan's encoder's ImageNet weights are on the machine of every process (each looks on its own
    disk, and all agree), so that a node without them never leaves the others waiting in a collective: then no
    process takes the encoder, and the log says why."""
    here = encoder_available(PLAN_ENCODER)
    if world.size == 1:
        return here
    missing = int(world.sum(torch.tensor([0 if here else 1], device=device)).item())
    if missing:
        logger.warning("warning: the %s weights are missing on %d of %d processes' machines: the plan keeps the "
                       "plain U-Net (pip install 'unetseg[pretrained]' on every node to have them)", PLAN_ENCODER,
                       missing, world.size)
    return missing == 0


def size_for(aspect: float, scale: float, native: tuple[int, int] | None = None,
             multiple: int = 16) -> tuple[int, int]:
    """(width, height), multiples of ``multiple`` (the model's stride: 16 for the seed's U-Net, 32 for an encoder,
    so that no pixel is padding), with about ``scale`` x 480x320 pixels and the given width/height ratio; never larger
    than ``native`` (the images' own size) where given."""
    height = math.sqrt(scale * SEED_PIXELS / aspect)
    width = aspect * height
    low = max(32, multiple)
    width, height = max(low, multiple * round(width / multiple)), max(low, multiple * round(height / multiple))
    if native is not None:
        width = min(width, max(low, native[0] // multiple * multiple))
        height = min(height, max(low, native[1] // multiple * multiple))
    return width, height


def model_stride(cfg: RunConfig) -> int:
    """The factor every side of the model's input is padded to: an encoder's 32, the plain U-Net's 2 ** depth."""
    return ENCODER_STRIDE if cfg.model.pretrained() else 2 ** cfg.model.depth


def crop_for(size: tuple[int, int], multiple: int = 16) -> tuple[int, int]:
    """The scene recipe's crop of frames at ``size``: each side x SCENE_CROP_SIDE, in multiples of ``multiple`` (the
    model's stride, so that no pixel of a crop is padding: 448x336 -> 320x240 at 16, 320x224 at 32)."""
    return tuple(max(2 * multiple, multiple * round(v * SCENE_CROP_SIDE / multiple))  # type: ignore[return-value]
                 for v in size)


def measure_step(cfg: RunConfig, device: torch.device, dtype: torch.dtype | None, layout: torch.memory_format,
                 batch: int, steps: int = 2) -> float:
    """Seconds per training image of ``cfg.model`` at ``cfg.data.image_size`` on ``device``: one warm-up step, then
    the mean of ``steps`` timed ones (random data, a throwaway model)."""
    width, height = cfg.data.image_size
    model = UNet(cfg.model).to(device, memory_format=layout)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    x = torch.randn(batch, cfg.model.in_channels, height, width, device=device).contiguous(memory_format=layout)
    classes = max(2, cfg.model.num_classes)
    y = torch.randint(0, classes, (batch, height, width), device=device)
    loss_fn = SegmentationLoss()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype) if dtype else nullcontext():
            loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - t0) / (steps * batch)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _flops(base: int, size: tuple[int, int]) -> float:
    """Relative cost of a candidate: convolution FLOPs scale with base^2 x pixels."""
    return base * base * size[0] * size[1]


@dataclass
class Choice:
    """A candidate: U-Net width, training size (the images' own for patches), patch or None; measured speed."""

    base: int
    size: tuple[int, int]
    seconds_per_image: float
    measured: bool
    layout: torch.memory_format = torch.contiguous_format
    patch: tuple[int, int] | None = None
    crop: tuple[int, int] | None = None

    @property
    def sample(self) -> tuple[int, int]:
        """(width, height) of one training sample: the patch, the crop or the whole frame."""
        return self.patch or self.crop or self.size

    @property
    def frame_share(self) -> float:
        """The share of a frame's pixels one sample holds: 1, or a crop's (about half): the rule counts frames' worth
        (CamVid 0006R0 held out, 30 minutes, one machine: 2,904 crops of 448x352 frames 0.274 mIoU, 12,648 of
        288x224 0.403; crops had been counted whole)."""
        return 1.0 if self.crop is None else self.crop[0] * self.crop[1] / (self.size[0] * self.size[1])

    @property
    def cost(self) -> float:
        """Relative FLOPs of one training sample (an image, a patch or a crop)."""
        return _flops(self.base, self.sample)


Ladder = list[tuple[int, tuple[int, int], "tuple[int, int] | None"]]  # (base channels, size, patch) to measure
Scores = dict[tuple[int, int], float]  # training size -> the score's resolution ceiling (Dice)
Worst = dict[tuple[int, int], tuple[float, int]]  # training size -> (Dice, class) of the worst class


def make_plan(cfg: RunConfig, n_train: int, n_val: int, native: tuple[int, int], device: torch.device,
              dtype: torch.dtype | None, layout: torch.memory_format, keep: set[str], started: float,
              processes: int = 1, ceiling: Callable[[list[tuple[int, int]]], np.ndarray] | None = None,
              num_labels: int = 2, uniform: bool = False, encoder_here: bool | None = None) -> RunConfig:
    """The run's settings for a budget run (``cfg.train.budget``): a copy of ``cfg`` in which every setting not named
    in ``keep`` (dotted names such as ``"model.base_channels"``) may be chosen; the choices, measurements and
    reasons go to its ``train.plan``. The steps, each a function of its own: the batch, the candidates
    (:func:`candidates`), their speed (:func:`measure`), the choice (:func:`choose`) and the record
    (:func:`record`).

    Args:
        n_train, n_val: training and validation images.
        native: the images' (width, height): the training size keeps its aspect ratio and is never larger.
        started: ``time.monotonic()`` when the run started (the budget's clock).
        processes: torch.distributed processes sharing each step (each times its share of the batch).
        ceiling: the resolution ceiling (IoU per class) of the masks at each of a list of sizes
            (:func:`unetseg.data.ceiling.dataset_ceiling`); None: sizes are chosen by speed alone.
        num_labels: the number of classes (2 for binary masks).
        uniform: the images all have the size ``native``: full-resolution patches are candidates too.
        encoder_here: whether the plan's encoder's weights are on every process's machine
            (:func:`encoder_everywhere`); None: on this one.
    """
    cfg = RunConfig.from_dict(cfg.to_dict())
    budget = parse_duration(cfg.train.budget)
    t, m = cfg.train, cfg.model
    chosen: list[str] = []
    if "train.batch_size" not in keep:
        t.batch_size = planned_batch(cfg, keep, n_train, device, processes)
        chosen.append("batch_size")
    given_patch = "data.patch" in keep and cfg.data.patch is not None
    score, worst = ({}, {}) if ceiling is None or given_patch else \
        ceiling_scores(ceiling, sorted({_resized(cfg, keep, native, scale, k) for _, scale in LADDER + FINE_LADDER
                                        for k in {model_stride(cfg), ENCODER_STRIDE}} - {native}),
                       native, num_labels, cfg.data.background)  # both strides: the encoder is chosen below
    # where the ladder's sizes destroy the structures scored, full-resolution patches (and finer sizes) join it
    thin = "data.image_size" not in keep and bool(score) and any(
        score[_resized(cfg, keep, native, scale)] < CEILING_FLOOR for _, scale in LADDER)
    # ImageNet features for multi-class scenes where shrinking destroys nothing (CamVid: +0.07 to +0.11 mIoU at
    # 5 minutes); binary masks keep the plain U-Net (Carvana, DRIVE, membrane: 0.003-0.012 Dice below it at 3 minutes)
    # the encoder is the plan's only where nobody named one (a "unet" given by any route is kept)
    if m.encoder == "" and "model.encoder" not in keep and not {"model.base_channels", "model.encoder_weights"} & keep:
        if num_labels > 2 and not thin and (encoder_available(PLAN_ENCODER) if encoder_here is None
                                            else encoder_here):
            m.encoder, m.encoder_weights = PLAN_ENCODER, "imagenet"
            chosen += ["encoder", "encoder_weights"]
        else:
            m.encoder = "unet"
            chosen.append("encoder")
    # scenes: scale-jittered crops of the frames, whole frames at prediction
    scene = num_labels > 2 and not thin and not given_patch and "data.patch" not in keep
    given_crop = tuple(cfg.data.crop) if "data.crop" in keep and cfg.data.crop is not None else None
    ladder = [c for c in candidates(cfg, keep, native, thin, uniform)
              if given_crop is None or (c[1][0] >= given_crop[0] and c[1][1] >= given_crop[1])] or \
        candidates(cfg, keep, native, thin, uniform)[-1:]
    stride = model_stride(cfg)  # a crop of whole strides: no padding in the model
    crop_of = (lambda size: given_crop) if given_crop else (lambda size: crop_for(size, stride)) \
        if scene and "data.crop" not in keep else (lambda size: None)  # --crop none: whole frames
    choices, probe_spent = measure(ladder, cfg, device, dtype, layout, keep, processes, 0.03 * budget, crop_of)
    available = TARGET * budget - (time.monotonic() - started)
    need = PRETRAINED_MIN_IMAGES if m.pretrained() else MIN_IMAGES
    best, why = choose(choices, available, n_train, n_val, t.batch_size, need, thin, score)
    if best.crop is not None and "data.crop" not in keep:
        zoom = 1 + (cfg.data.scale_limit if "data.scale_limit" in keep else SCENE_SCALE_LIMIT)
        why += (f" (scenes: random crops of about half a frame, {best.crop[0]}x{best.crop[1]} of {best.size[0]}x"
                f"{best.size[1]}, zoomed {1 / zoom:.2g}-{zoom:.2g}, counted by their share of a frame; whole frames at validation "
                f"and prediction)")
    augmentation = record(cfg, best, keep, chosen, available, n_train, n_val, processes, num_labels, given_patch,
                          scene)
    if scene:
        d = cfg.data
        why += (f"; prediction at {' '.join(f'{x:g}' for x in d.predict_scales)} x {d.image_size[0]}x"
                f"{d.image_size[1]}{' with flips' if d.predict_tta else ''}")
    t.plan = {
        "budget_s": budget, "device": str(device), "precision": str(dtype or torch.float32).removeprefix("torch."),
        "chosen": chosen, "encoder": m.encoder,
        "augmentation": augmentation,
        "train_images": n_train, "val_images": n_val,
        "candidates": [{"base_channels": c.base, "image_size": list(c.size),
                        **({"patch": list(c.patch)} if c.patch else {}),
                        **({"crop": list(c.crop)} if c.crop else {}),
                        "s_per_image": round(c.seconds_per_image, 5), "measured": c.measured,
                        "memory_format": str(c.layout).split(".")[-1],
                        **({"ceiling_dice": round(score[c.size], 4), "ceiling_worst_dice": round(worst[c.size][0], 4),
                            "ceiling_worst_class": worst[c.size][1]} if c.size in score else {})} for c in choices],
        "probe_s": round(probe_spent, 2),
        "rule": why,
        "planned_steps": t.max_steps,
    }
    _log_plan(cfg, best, started, device, score, worst, choices, num_labels, why)
    return cfg


def planned_batch(cfg: RunConfig, keep: set[str], n_train: int, device: torch.device, processes: int) -> int:
    """The budget run's global batch: the one given, else 16 on a GPU, 8 elsewhere, at most a quarter of the training
    images (at least 2), a multiple of the processes. Checked (:func:`check_batches`, every process alike) before
    the probes spend the budget.

    Raises:
        ValueError: one line, where the job cannot train at that batch.
    """
    batch = cfg.train.batch_size if "train.batch_size" in keep else \
        batch_for(max(2, min(16 if device.type == "cuda" else 8, n_train // 4 or 2)), n_train, processes)
    check_batches(n_train, batch, processes, cfg.train.sync_bn)
    return batch


def _resized(cfg: RunConfig, keep: set[str], native: tuple[int, int], scale: float,
             multiple: int | None = None) -> tuple[int, int]:
    """The training size at ``scale`` x the seed's pixels (never more than the images'), in multiples of the model's
    stride (or ``multiple``), or the size given."""
    if "data.image_size" in keep:
        return tuple(cfg.data.image_size)  # type: ignore[return-value]
    return size_for(native[0] / native[1], min(scale, native[0] * native[1] / SEED_PIXELS), native,
                    multiple or model_stride(cfg))


def ceiling_scores(ceiling: Callable[[list[tuple[int, int]]], np.ndarray], sizes: list[tuple[int, int]],
                   native: tuple[int, int], num_labels: int, background: int | None = None) -> tuple[Scores, Worst]:
    """At each size, the ceiling (Dice) of the score the run is judged by (binary: the foreground's, taken as the worse
    of the two classes; multi-class: the mean over classes) and the worst class; the images' own size loses nothing.
    Empty where the ceiling cannot be read (the plan then chooses by speed alone)."""
    try:
        rows = ceiling(sizes)
    except Exception as err:  # noqa: BLE001 - the ceiling informs the plan; without it, speed alone decides
        logger.warning("warning: no resolution ceiling (%s): the plan chooses by speed alone", err)
        return {}, {}
    if not rows.size:
        return {}, {}
    dice = dice_from_iou(rows)
    worst = {size: worst_class(dice[i]) for i, size in enumerate(sizes)}
    scored = [k for k in scored_classes(num_labels, background) if k < dice.shape[1]]  # as mean Dice averages
    score = {size: worst[size][0] if num_labels <= 2 else float(np.nanmean(dice[i][scored]))
             for i, size in enumerate(sizes)}
    worst[native], score[native] = (1.0, -1), 1.0
    return score, worst


def candidates(cfg: RunConfig, keep: set[str], native: tuple[int, int], thin: bool, uniform: bool) -> Ladder:
    """The (base channels, size, patch) to measure, cheapest first: the ladder of sizes; for ``thin`` data (shrinking
    destroys what is scored) finer sizes and, for images of one size, full-resolution patches; the user's patches
    where given. A width given, or a pretrained encoder (it has no width), is kept in every candidate."""
    m, d = cfg.model, cfg.data
    ladder: Ladder = []

    def add(b: int, s: tuple[int, int], patch: tuple[int, int] | None) -> None:
        b = m.base_channels if "model.base_channels" in keep or m.pretrained() else b
        if (b, s, patch) not in ladder:
            ladder.append((b, s, patch))

    if "data.patch" in keep and d.patch is not None:  # the user's crops, of the images at the given (or own) size
        for base, _ in LADDER:
            add(base, tuple(d.image_size), tuple(d.patch))  # type: ignore[arg-type]
    else:
        for base, scale in LADDER + (FINE_LADDER if thin else ()):
            add(base, _resized(cfg, keep, native, scale), None)
        if thin and uniform:
            for base, side in PATCH_LADDER:
                k = model_stride(cfg)
                patch = (min(side, native[0] // k * k), min(side, native[1] // k * k))
                if native[0] * native[1] >= 2 * patch[0] * patch[1]:
                    add(base, native, patch)
    ladder.sort(key=lambda c: _flops(c[0], c[2] or c[1]))
    return ladder


def measure(ladder: Ladder, cfg: RunConfig, device: torch.device, dtype: torch.dtype | None,
            layout: torch.memory_format, keep: set[str], processes: int, probe_limit: float,
            crop_of: Callable[[tuple[int, int]], tuple[int, int] | None] = lambda size: None
            ) -> tuple[list[Choice], float]:
    """Each candidate's seconds per image of the global batch, timed in both memory layouts where ``probe_limit``
    seconds allow (which one is faster depends on the model, the device and the precision: benchmarks/plan_speed.py;
    the "auto" layout first), else estimated from a measured one of its width, by pixels (FLOPs across widths are not
    comparable: a base-8 step ran 4x slower than base 16's per FLOP on the Xeon with AMX). A candidate trains on
    ``crop_of(size)`` crops where that is not None (and is timed at the crop's size). Returns the choices and the
    seconds the probes took."""
    batch = cfg.train.batch_size

    def probe(trial: RunConfig, lay: torch.memory_format) -> float:
        """Infinite where one process's share does not fit the device."""
        try:
            return measure_step(trial, device, dtype, lay, max(1, batch // processes)) / processes
        except torch.OutOfMemoryError:
            return math.inf
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()  # the probes' memory goes back before the run sizes its micro-batch

    choices: list[Choice] = []
    spent = 0.0
    other = torch.channels_last if layout == torch.contiguous_format else torch.contiguous_format
    layouts = [layout] if "train.memory_format" in keep else [layout, other]
    for b, s, patch in ladder:
        crop = None if patch else crop_of(s)
        measured = [c for c in choices if c.measured]
        like = [c for c in measured if c.base == b] or measured
        est = like[-1].seconds_per_image * _flops(b, patch or crop or s) / like[-1].cost if like else None
        trial = RunConfig.from_dict(cfg.to_dict())
        trial.model.base_channels, trial.data.image_size = b, patch or crop or s  # a sample is timed at its size
        trial.data.patch = trial.data.crop = None
        timed: dict[torch.memory_format, float] = {}
        for lay in layouts:
            guess = min(timed.values()) if timed else est
            if guess is not None and spent + 3 * batch * guess >= probe_limit:
                break
            t0 = time.perf_counter()
            timed[lay] = probe(trial, lay)
            spent += time.perf_counter() - t0
        if timed:
            fastest = min(timed, key=timed.get)  # type: ignore[arg-type]
            choices.append(Choice(b, s, timed[fastest], True, fastest, patch, crop))
        else:
            choices.append(Choice(b, s, est, False, measured[-1].layout, patch, crop))  # type: ignore[arg-type]
    return choices, spent


def validations(c: Choice, available: float, n_train: int, n_val: int, batch: int) -> int:
    """The validations a run of candidate ``c`` makes before its final one: ``VALIDATIONS``, or as many as keep all of
    them, the final one included, within ``VALIDATION_SHARE`` of the ``available`` seconds (none: the final one
    only)."""
    per = validation_seconds(n_train, n_val, c.seconds_per_image, c.size, c.patch, batch, BN_IMAGES, c.crop)
    return max(0, min(VALIDATIONS, int(VALIDATION_SHARE * available / per) - 1)) if per > 0 else VALIDATIONS


def _train_seconds(c: Choice, available: float, n_train: int, n_val: int, batch: int) -> float:
    """The seconds left for training steps with candidate ``c``: the budget's less validations and decoding."""
    return available - reserve_seconds(validations(c, available, n_train, n_val, batch), validation_seconds(
        n_train, n_val, c.seconds_per_image, c.size, c.patch, batch, BN_IMAGES, c.crop)) \
        - decode_seconds(n_train + n_val)


def choose(choices: list[Choice], available: float, n_train: int, n_val: int, batch: int, need: int, thin: bool,
           score: Scores) -> tuple[Choice, str]:
    """The rule: the costliest candidate that sees ``need`` training images (crops by their share of a frame) in the
    ``available`` seconds; for thin
    data, among the full-resolution patch candidates, else the sizes that keep a ceiling of CEILING_FLOOR, else the
    highest ceiling. Returns the choice and why."""
    enough = [c for c in choices if _train_seconds(c, available, n_train, n_val, batch) / c.seconds_per_image
              * c.frame_share >= need]
    if not enough:
        pool, why = choices[:1], f"no candidate sees {need} training images: the cheapest"
    elif not thin:
        pool, why = enough, f"the costliest candidate seeing >= {need} training images"
    else:
        patches = [c for c in enough if c.patch is not None]
        fine = [c for c in enough if c.patch is None and score[c.size] >= CEILING_FLOOR]
        if patches:
            pool, why = patches, (f"the score's resolution ceiling is under {CEILING_FLOOR} Dice at some size: the "
                                  f"costliest full-resolution patch candidate seeing >= {need} training patches")
        elif fine:
            pool, why = fine, (f"the score's resolution ceiling is under {CEILING_FLOOR} Dice at some size, and the "
                               f"images cannot be cropped at one scale: the costliest candidate seeing >= "
                               f"{need} training images at a size that keeps {CEILING_FLOOR}")
        else:
            top = max(score[c.size] for c in enough)
            pool = [c for c in enough if score[c.size] >= top - 1e-9]
            why = (f"no size that keeps a resolution ceiling >= {CEILING_FLOOR} Dice sees {need} images in time: "
                   f"the highest ceiling among the candidates that do, the costliest there")
    return max(pool, key=lambda c: c.cost), why


def record(cfg: RunConfig, best: Choice, keep: set[str], chosen: list[str], available: float, n_train: int,
           n_val: int, processes: int, num_labels: int, given_patch: bool, scene: bool = False) -> dict[str, float]:
    """Write the choice and the recipe of budget runs into ``cfg`` (the settings not in ``keep``; each name set
    appended to ``chosen``): width, size, patch or crop, layout, lr, schedule, BN recalibration, loss, class weights,
    augmentation (for ``scene`` data the scene recipe's zoom), and the step total that fills the ``available``
    seconds. Returns the augmentation set."""
    t, d, m = cfg.train, cfg.data, cfg.model
    m.base_channels, d.image_size = best.base, best.size
    if best.patch is not None and not given_patch:  # crops of the images at their own size, windows at prediction
        d.patch, d.patch_scale = best.patch, (1.0, 1.0)
        chosen.append("patch")
    if best.crop is not None and "data.crop" not in keep:  # scale-jittered crops, whole frames at prediction
        d.crop = best.crop
        chosen.append("crop")
    if scene:  # whole frames at several scales, flipped too
        for name, value in (("predict_scales", SCENE_PREDICT_SCALES), ("predict_tta", SCENE_PREDICT_TTA)):
            if f"data.{name}" not in keep:
                setattr(d, name, value)
                chosen.append(name)
    if "train.memory_format" not in keep:  # the faster layout for this model on this device
        t.memory_format = "channels_last" if best.layout == torch.channels_last else "contiguous"
        chosen.append("memory_format")
    if "model.base_channels" not in keep and not m.pretrained():
        chosen.append("base_channels")
    if "data.image_size" not in keep:
        chosen.append("image_size")
    recipe: dict[str, Any] = {"lr": 1e-3, **({"encoder_lr_scale": PLAN_ENCODER_LR_SCALE} if m.pretrained() else {}),
                              "schedule": "cosine", "bn_recalibrate": True, "loss": BUDGET_LOSS,
                              # rare classes are found only when weighed
                              **({"class_weights": MULTICLASS_WEIGHTS} if num_labels > 2 else {})}
    for name, value in recipe.items():
        if f"train.{name}" not in keep:
            setattr(t, name, value)
            chosen.append(name)
    # multi-class scenes: colour tells classes apart (sky, vegetation, road), so no channel shuffles or grey images
    strong = {**STRONG_AUGMENTATION, **({"scale_limit": SCENE_SCALE_LIMIT} if scene else {})}
    augmentation = {k: v for k, v in strong.items() if f"data.{k}" not in keep
                    and (num_labels <= 2 or k not in ("channel_shuffle_p", "grayscale_p"))}
    for name, value in augmentation.items():
        setattr(d, name, value)
    per_epoch = steps_per_epoch(n_train, t.batch_size, processes, t.compile)  # as the loop counts them
    t.max_steps = max(1, int(_train_seconds(best, available, n_train, n_val, t.batch_size)
                             / (best.seconds_per_image * t.batch_size)))
    t.epochs = math.ceil(t.max_steps / per_epoch)
    if "train.val_every" not in keep:
        t.val_every = max(1, math.ceil(t.epochs / max(1, validations(best, available, n_train, n_val,
                                                                      t.batch_size))))
        chosen.append("val_every")
    if "train.warmup_steps" not in keep:
        t.warmup_steps = max(5, min(200, t.max_steps // 30))
        chosen.append("warmup_steps")
    return augmentation


def _log_plan(cfg: RunConfig, best: Choice, started: float, device: torch.device, score: Scores, worst: Worst,
              choices: list[Choice], num_labels: int, why: str) -> None:
    t, d, m = cfg.train, cfg.data, cfg.model
    budget = parse_duration(t.budget)
    ends = time.strftime("%H:%M:%S", time.localtime(time.time() + TARGET * budget - (time.monotonic() - started)))
    augmentation = t.plan["augmentation"]
    logger.info("budget %s: plan on %s (%s): %s at %dx%d%s, batch %d, lr %g, %s schedule over %d steps "
                "(%d epochs of %d images, %d images seen, warm-up %d), validation every %d epoch(s)%s, loss %s%s, "
                "ending about %s; measured %.3f s/image (%s); augmentation %s; chosen: %s", t.budget, device,
                t.plan["precision"], f"U-Net on {m.encoder} ({_weights_text(m.weights_source())})" if m.pretrained() else
                f"U-Net base {m.base_channels}", *d.image_size,
                f" on {d.patch[0]}x{d.patch[1]} patches" if d.patch else
                f" on random {d.crop[0]}x{d.crop[1]} crops" if d.crop else "", t.batch_size, t.lr, t.schedule,
                t.max_steps, t.epochs, t.plan["train_images"], t.max_steps * t.batch_size, t.warmup_steps,
                t.val_every, ", BN recalibrated" if t.bn_recalibrate else "", t.loss,
                "" if t.class_weights == "none" else f" with class weights {t.class_weights}", ends,
                best.seconds_per_image, t.memory_format,
                ", ".join(f"{k} {v}" for k, v in augmentation.items()) or "as given",
                ", ".join(t.plan["chosen"]) or "nothing")
    if score:
        logger.info("budget: candidates (base, size: s/image, resolution ceiling as Dice of the %s, and of the worst "
                    "class): %s", "foreground" if num_labels <= 2 else "mean over classes", "; ".join(
                        f"{c.base}, {_describe(c)}: {c.seconds_per_image:.4f}{'' if c.measured else ' (est.)'}, "
                        f"{score[c.size]:.3f}" + (f", {worst[c.size][0]:.3f} (class {worst[c.size][1]})"
                                                  if num_labels > 2 and worst[c.size][1] >= 0 else "")
                        for c in choices))
    logger.info("budget: chose %s", why)


def _weights_text(source: str) -> str:
    """How the plan log names an encoder's weights: ImageNet, random, or the file's name."""
    return {"imagenet": "ImageNet", "none": "random weights"}.get(source, f"weights from {source}")


def _describe(c: Choice) -> str:
    if c.crop is not None:
        return f"{c.crop[0]}x{c.crop[1]} crops of {c.size[0]}x{c.size[1]}"
    return f"{c.size[0]}x{c.size[1]}" if c.patch is None else \
        f"{c.patch[0]}x{c.patch[1]} patches of {c.size[0]}x{c.size[1]}"


def decode_seconds(n: int) -> float:
    """A generous estimate of decoding ``n`` images into the cache (about 10 ms each on 2 threads)."""
    return 0.01 * n


def reserve_seconds(validations: int, per_validation: float) -> float:
    """Time outside training steps: each validation (``validation_seconds``), the final one included, plus
    checkpoint writes."""
    return (validations + 1) * per_validation + 2.0


class BudgetClock:
    """Corrects a budget run's step count from its own measured speed: once after ``first`` timed steps, and again
    at an epoch end when the projected end has drifted by more than ``drift`` of the budget.

    Args:
        budget: seconds.
        started: ``time.monotonic()`` when the run started.
        total: the planned number of steps.
    """

    def __init__(self, budget: float, started: float, total: int, steps_per_epoch: int, val_every: int,
                 first: int = 8, drift: float = 0.02) -> None:
        self.budget, self.started, self.total = budget, started, total
        self.steps_per_epoch, self.val_every, self.first, self.drift = steps_per_epoch, val_every, first, drift
        self.t_steps, self.n_steps = 0.0, 0
        self.t_val, self.n_val = 0.0, 0
        self.corrected = False

    def step_time(self, seconds: float, steps: int = 1) -> None:
        self.t_steps += seconds
        self.n_steps += steps

    def validation_time(self, seconds: float) -> None:
        self.t_val += seconds
        self.n_val += 1

    def projected_total(self, done: int, val_estimate: float) -> int:
        """The step count that ends at TARGET x budget, given ``done`` steps so far."""
        per_step = self.t_steps / self.n_steps
        per_val = self.t_val / self.n_val if self.n_val else val_estimate
        left = TARGET * self.budget - (time.monotonic() - self.started) - 2.0
        # validations left: about one every val_every epochs, the last one included
        steps_left = max(0.0, (left - per_val) / (per_step + per_val / (self.val_every * self.steps_per_epoch)))
        return max(done + 1, done + int(steps_left))

    def maybe_correct(self, done: int, val_estimate: float, at_epoch_end: bool) -> int | None:
        """A new total when a correction is due, else None."""
        if self.n_steps == 0:
            return None
        if not self.corrected and self.n_steps >= self.first:
            self.corrected = True
            new = self.projected_total(done, val_estimate)
        elif at_epoch_end and self.corrected:
            new = self.projected_total(done, val_estimate)
            per_step = self.t_steps / self.n_steps
            if abs(new - self.total) * per_step < self.drift * self.budget:
                return None
        else:
            return None
        if new == self.total:
            return None
        self.total = new
        return new
