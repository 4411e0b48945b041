"""Run configuration: plain dataclasses, saved as JSON next to every checkpoint.

This module needs nothing but the standard library (no torch), so the CLI and tools can read a run's
``config.json`` cheaply. The dataclass defaults are the only defaults in the project: the CLI builds its
flags from these fields and never repeats a default.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_type_hints

from unetseg._atomic import atomic_write_text
from unetseg._labels import label_values

__all__ = ["UNetConfig", "DataConfig", "TrainConfig", "RunConfig", "parse_size", "parse_duration", "parse_weights"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Parse a duration such as ``"90s"``, ``"45m"``, ``"2h"``, ``"1h30m"`` or ``"1.5h"`` into seconds.

    Raises:
        ValueError: when the text is not numbers each followed by a unit s, m, h or d, or is not positive.
    """
    parts = re.findall(r"(\d+(?:\.\d*)?|\.\d+)\s*([smhd])", text.strip().lower())
    if not parts or re.sub(r"[\d.\s]+[smhd]", "", text.strip().lower()):
        raise ValueError(f"duration must be numbers with units s, m, h or d, e.g. 90s, 30m, 2h, 1h30m; got {text!r}")
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"duration must be positive, got {text!r}")
    return seconds


def parse_weights(text: str) -> list[float]:
    """Class weights as written: ``"1,4,8"`` or ``"1 4 8"`` -> [1.0, 4.0, 8.0].

    Raises:
        ValueError: when they are not numbers >= 0.
    """
    try:
        values = [float(v) for v in re.split(r"[\s,]+", str(text).strip()) if v]
    except ValueError:
        values = []
    if not values or any(not v >= 0 for v in values):  # NaN fails too
        raise ValueError(f"--class-weights must be none, auto or weights >= 0 such as 1,4,8; got {text!r}")
    return values


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``"480x320"`` (width x height) into ``(480, 320)``.

    Raises:
        ValueError: when the text is not two positive integers joined by ``x``.
    """
    parts = text.lower().replace(",", "x").split("x")
    try:
        width, height = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"size must look like WIDTHxHEIGHT, e.g. 480x320, got {text!r}") from None
    if width <= 0 or height <= 0:
        raise ValueError(f"size must be positive, got {text!r}")
    return width, height


def check_scales(scales: Sequence[float], flag: str = "--scales") -> tuple[float, ...]:
    """``scales`` (given as ``flag``) as a tuple, each between 0.25 and 4, none twice.

    Raises:
        ValueError: one line naming the scale that is not.
    """
    scales = tuple(float(s) for s in scales)
    for s in scales:
        if not 0.25 <= s <= 4.0:
            raise ValueError(f"{flag} {s:g}: a factor between 0.25 and 4 (1 = the run's input size)")
    if not scales or len(set(scales)) < len(scales):
        raise ValueError(f"{flag} {' '.join(f'{s:g}' for s in scales)}: one or more factors, each once")
    return scales


class _Freezable:
    """Dataclasses whose instances can be frozen: once a run's settings are decided, nothing writes them again."""

    def __setattr__(self, name: str, value: Any) -> None:
        if self.__dict__.get("_frozen"):
            raise dataclasses.FrozenInstanceError(f"cannot set {type(self).__name__}.{name}: the run's settings were "
                                                  f"decided before its first step and are read only")
        object.__setattr__(self, name, value)

    def _freeze(self) -> None:
        self.__dict__["_frozen"] = True


class _JsonDataclass(_Freezable):
    """``to_dict`` / ``from_dict`` for flat dataclasses; unknown keys are rejected."""

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown key(s) {unknown}; known keys are {sorted(names)}")
        hints = get_type_hints(cls)
        kwargs = {}
        for key, value in d.items():
            if isinstance(value, list) and str(hints[key]).startswith("tuple"):
                value = tuple(value)
            kwargs[key] = value
        return cls(**kwargs)


@dataclass
class UNetConfig(_JsonDataclass):
    """The U-Net's architecture. The defaults are the seed's model (31,037,633 parameters).

    Attributes:
        in_channels: image channels (3 for RGB, 1 for greyscale).
        num_classes: output channels; 1 means binary (sigmoid + BCE), K >= 2 means softmax over K classes.
        base_channels: features of the first level; level i has ``base_channels * 2**i``.
        depth: number of 2x down-samplings; the bottleneck has ``base_channels * 2**depth`` features.
        encoder: "unet": the seed's own encoder (base_channels, depth); or an ImageNet-pretrained one under a U-Net
            decoder (skips at strides 2..32): efficientnet-lite0, efficientnet-lite1, efficientnet-lite2, resnet18,
            resnet34, resnet50, or timm:NAME with timm installed. "" (the default, not given): the seed's own, or
            what a budget plan chooses; "unet" given (by a flag, the API or a reused config) is kept by the plan.
        encoder_weights: a pretrained encoder's weights: "imagenet" (the default where an encoder is named: from
            an installed weights package, torch hub's, timm's or Hugging Face's cache, else a download), a .pth
            or .safetensors FILE in the family's layout, or "none" (random weights).
        encoder_bn: the pretrained encoder's batch norm while training: "train" (statistics from each batch),
            "frozen" (ImageNet's statistics kept) or "fold" (kept and folded into the convolutions: faster).
        decoder_channels: a pretrained encoder's decoder: the channels of its five blocks, deepest first.
        decoder_upsample: how the decoder enlarges: "transposed" (the seed's 2x2 transposed convolutions) or
            "nearest" (nearest-neighbour, then the convolutions).
    """

    in_channels: int = 3
    num_classes: int = 1
    base_channels: int = 64
    depth: int = 4
    encoder: str = ""
    encoder_weights: str = ""
    encoder_bn: Literal["train", "frozen", "fold"] = "train"
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)
    decoder_upsample: Literal["transposed", "nearest"] = "transposed"

    def __post_init__(self) -> None:
        for name in ("in_channels", "num_classes", "base_channels", "depth"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"UNetConfig.{name} must be >= 1, got {getattr(self, name)}")
        self.encoder = str(self.encoder).strip()
        self.decoder_channels = tuple(int(c) for c in self.decoder_channels)  # type: ignore[assignment]
        if len(self.decoder_channels) != 5 or min(self.decoder_channels) < 1:
            raise ValueError(f"--decoder-channels: five channel counts >= 1, deepest first (e.g. 256 128 64 32 16), "
                             f"got {list(self.decoder_channels)}")
        if self.encoder_bn not in ("train", "frozen", "fold"):
            raise ValueError(f"UNetConfig.encoder_bn must be train, frozen or fold, got {self.encoder_bn!r}")
        if self.decoder_upsample not in ("transposed", "nearest"):
            raise ValueError(f"UNetConfig.decoder_upsample must be transposed or nearest, got "
                             f"{self.decoder_upsample!r}")
        if not self.pretrained() and self.encoder_weights not in ("", "none"):
            raise ValueError(f"--encoder-weights {self.encoder_weights}: the plain U-Net (--encoder unet) has no "
                             f"pretrained weights; name a pretrained encoder with --encoder")

    def pretrained(self) -> bool:
        """True for an encoder other than the seed's own."""
        return self.encoder not in ("", "unet")

    def weights_source(self) -> str:
        """The encoder weights asked for: "imagenet" where an encoder is named and nothing else is said, "none" for
        the plain U-Net."""
        return self.encoder_weights or ("imagenet" if self.pretrained() else "none")


@dataclass
class DataConfig(_JsonDataclass):
    """Where the data is and how it is turned into tensors.

    Attributes:
        data: dataset folder: Carvana's ``train/`` + ``train_masks/``, or ``images/`` (image/, imgs/) + ``masks/``
            (mask/, labels/, label/).
        images, masks: the image and mask folders, named directly (instead of ``data``).
        image_pattern, mask_pattern: file name patterns with an ``{id}`` placeholder for names that differ,
            e.g. ``{id}_training.tif`` and ``{id}_manual1.gif``; without them masks pair by stem or stem + ``_mask``.
        pairs_csv: a CSV with columns ``image,mask`` (paths relative to the CSV) instead of folders.
        ignore_masks: folder of ignore masks (non-zero = pixels that count, e.g. DRIVE's field of view); pixels
            outside count in neither the loss nor the metrics.
        ignore_pattern: file name pattern of the ignore masks, e.g. ``{id}_training_mask.gif`` (default: same stem).
        invert_mask: for binary masks whose foreground is stored as the lower value (membrane: 0 = membrane).
        ignore_index: stored mask values that count in neither the loss nor any metric and are never predicted
            ("void"/"unlabelled": CamVid 11, Pascal VOC and Cityscapes 255; #rrggbb for colour-coded masks).
        classes: a classes file (CSV or JSON: value, name, optional colour; see unetseg.data.classes): the masks'
            labels with their names and colours; colour-coded (RGB) masks are decoded with its colours.
        class_names: the names of the classes in order (without a classes file), e.g. sky building pole ...
        background: a class (its index, 0..K-1) that mean Dice leaves out, as Pascal VOC users choose; None: binary
            masks score their foreground, multi-class masks every class (as mIoU does, which always counts all).
        class_colours: the classes' display colours (#rrggbb), from the classes file (found from the data).
        val_data, val_images, val_masks: a validation set of its own (the dataset's own split), with the same
            folder rules as data / images / masks, instead of holding out part of the training pairs.
        val_ignore_masks: the validation set's ignore masks (with ignore_masks: required, since a validation image
            must not borrow a training image's field of view); ignore_pattern applies to both.
        train_on_val: the validation pairs train too, once the choices are made (the literature's protocol for a
            final model: train on train + val); validation still runs on them to follow the run, but its scores are
            then on trained images, not a held-out measure (the log and the report say so). The final weights are
            the model to use.
        folds: K-fold cross-validation (2 or more): the training pairs are split, seeded and by group or block as
            ``split`` says, into K folds; each fold is a run of its own (RUN/fold_N) that validates on its fold and
            trains on the others, then predicts its fold (the out-of-fold predictions and the CV scores in RUN/cv);
            predict, evaluate and submit average the folds. 1: one split (val_fraction).
        fold: with folds: train this fold only (0..K-1), e.g. one fold per process or machine; None: every fold.
            In a fold's own config.json: which fold it is.
        split: how the training pairs are split when no validation folders are given: "groups" (seeded, by group,
            as Carvana's cars or --group-pattern say, else each image alone), or "blocks" (contiguous runs of frames
            in name order, 10 blocks) for video frames whose neighbours look alike.
        oversample: patch runs: the share of crops centred on a pixel of a foreground class present in the image,
            the class drawn uniformly (nnU-Net oversamples foreground in a third of its patches), so rare classes
            are seen.
        cache: where the decoded uint8 images live during training: "memory", "disk" (a memory-mapped file in the
            run folder, deleted at the end) or "auto" (disk when they would take over half the free RAM). Under
            torchrun with several processes on a node, "auto" and "disk" decode once per node into memory-mapped
            files that the node's processes share (see unetseg.data.node_cache); "memory" gives each its own copy.
        cache_dir: the folder for the on-disk caches (e.g. a node-local disk); empty: the run folder.
        snap_masks: snap mask values that fit no encoding (JPEG-compressed masks) to the nearest label, and log it,
            instead of refusing the files.
        image_size: (width, height) the images are resized to for training and inference.
        patch: (width, height) of random crops to train on (None: whole images). Without a given image_size the
            crops come from the images at their own resolution; prediction then slides windows of this size over
            each image at the training scale (Gaussian-blended), whatever the image's size.
        patch_scale: (width, height) of the training size / the images' own size in a patch run, per axis (found
            from the data); prediction scales each image so.
        crop: (width, height) of a random window of each training frame (at ``image_size``, after the zoom, rotation
            and flips) to train on: the scale-jittered random crops of road-scene recipes, with ``scale_limit`` the
            zoom (1.0: 0.5-2.0). Unlike ``patch``, validation and prediction see whole frames at ``image_size``.
            None ("none" on the command line): whole frames.
        predict_scales: the run's multi-scale inference (predict, evaluate, submit; their --scales wins): the input
            at each factor of ``image_size`` (sides in whole strides of 32), the probabilities averaged; (1.0,): one
            pass. The budget plan's scene recipe predicts at 1, 1.5 and 2.
        predict_tta: the run's flip TTA at inference (predict, evaluate, submit; --tta / --no-tta win): the mean
            probability over the flips training made at least half the time. The scene recipe turns it on.
        val_fraction: share of groups held out for validation (Carvana: cars; else images, or group_pattern's).
        group_pattern: a regular expression whose first group (or whole match) in an image's file stem names its
            split group, e.g. "^(scan\\d+)_" keeps all slices of a scan on one side; default: Carvana's car id for
            Carvana's names (<12 hex digits>_<NN>), else each image is its own group.
        split_seed: seed of the train/validation split.
        mean, std: per-channel normalisation of images scaled to [0, 1] (the seed: mean 0, std 1).
        rotate_limit: random rotation in degrees, drawn uniformly from [-limit, limit] (0 turns it off).
        hflip_p, vflip_p: probabilities of horizontal and vertical flips.
        scale_limit: random zoom, a factor drawn log-uniformly from [1 / (1 + limit), 1 + limit] (0 turns it off).
        brightness: multiply each image by a factor drawn from [1 - b, 1 + b] (0 turns it off).
        contrast: scale each image's deviations from its mean grey by a factor from [1 - c, 1 + c].
        saturation: scale each pixel's deviation from its grey by a factor from [1 - s, 1 + s] (RGB only).
        gamma: raise each image to a power drawn log-uniformly from [1 / (1 + g), 1 + g].
        channel_shuffle_p: probability of a random permutation of the RGB channels (hue changes, e.g. a red car
            turns blue; RGB only).
        grayscale_p: probability of turning an RGB image grey (kept as 3 channels).
        noise_std: standard deviation of Gaussian noise added to images in [0, 1].
        mask_values: stored mask value of each class index, found in the data (e.g. [0, 1] for Carvana GIFs,
            [0, 255] for greyscale PNGs); used in reverse when predictions are written.
        mask_palette: the training masks' palette (flat RGB list) when they are palette images, else None.
        mask_mode: the training masks' kind: "L" (grey levels), "P" (palette indices) or "RGB" (colour map,
            mask_values then hold 0xRRGGBB colours); found in the data.
        follow_channels, follow_classes: the model's in_channels / num_classes follow the data (1 channel for
            greyscale images; 1 output for two labels, K for K > 2); the CLI turns them off when
            --in-channels / --num-classes are given.
    """

    data: str = ""
    images: str = ""
    masks: str = ""
    image_pattern: str = ""
    mask_pattern: str = ""
    pairs_csv: str = ""
    ignore_masks: str = ""
    ignore_pattern: str = ""
    invert_mask: bool = False
    ignore_index: tuple[int, ...] = ()
    classes: str = ""
    class_names: list[str] | None = None
    background: int | None = None
    class_colours: list[str] | None = None
    val_data: str = ""
    val_images: str = ""
    val_masks: str = ""
    val_ignore_masks: str = ""
    train_on_val: bool = False
    folds: int = 1
    fold: int | None = None
    split: Literal["groups", "blocks"] = "groups"
    oversample: float = 0.33
    snap_masks: bool = False
    cache: Literal["auto", "memory", "disk"] = "auto"
    cache_dir: str = ""
    image_size: tuple[int, int] = (480, 320)
    patch: tuple[int, int] | None = None
    patch_scale: tuple[float, float] = (1.0, 1.0)
    crop: tuple[int, int] | None = None
    predict_scales: tuple[float, ...] = (1.0,)
    predict_tta: bool = False
    val_fraction: float = 0.1
    group_pattern: str = ""
    split_seed: int = 0
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    rotate_limit: float = 35.0
    hflip_p: float = 0.5
    vflip_p: float = 0.1
    scale_limit: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    gamma: float = 0.0
    channel_shuffle_p: float = 0.0
    grayscale_p: float = 0.0
    noise_std: float = 0.0
    mask_values: list[int] | None = None
    mask_palette: list[int] | None = None
    mask_mode: str | None = None
    follow_channels: bool = True
    follow_classes: bool = True

    def __post_init__(self) -> None:
        for name in ("image_size", "patch", "crop"):  # "WxH" or (width, height); patch and crop may be None
            value = getattr(self, name)
            if value is None:
                continue
            value = tuple(int(v) for v in (parse_size(value) if isinstance(value, str) else value))
            if len(value) != 2 or min(value) < 16:
                raise ValueError(f"DataConfig.{name} must be (width, height), each >= 16, got {value}")
            setattr(self, name, value)
        self.predict_scales = check_scales(self.predict_scales, "--predict-scales")
        if self.crop is not None:
            if self.patch is not None:
                raise ValueError("--crop and --patch exclude each other: --crop cuts windows of whole frames (which "
                                 "prediction sees whole), --patch trains and predicts on windows")
        self.ignore_index = tuple(sorted(set(label_values(self.ignore_index))))  # type: ignore[assignment]
        if self.class_names is not None:  # "sky,building" or ["sky", "building"]
            items = [self.class_names] if isinstance(self.class_names, str) else self.class_names
            names = [n.strip() for item in items for n in str(item).split(",") if n.strip()]
            if len({n.lower() for n in names}) != len(names):
                raise ValueError(f"DataConfig.class_names: a name is repeated in {names}")
            self.class_names = names or None
        if self.split not in ("groups", "blocks"):
            raise ValueError(f"DataConfig.split must be groups or blocks, got {self.split!r}")
        if (self.val_images or self.val_masks) and not (self.val_images and self.val_masks):
            raise ValueError("--val-images and --val-masks go together: name both folders")
        if self.folds < 1:
            raise ValueError(f"--folds {self.folds}: 2 or more for cross-validation, 1 for one split")
        if self.fold is not None and (self.folds < 2 or not 0 <= self.fold < self.folds):
            raise ValueError(f"--fold {self.fold}: " + (f"0 to {self.folds - 1} (--folds {self.folds})"
                                                        if self.folds > 1 else "only with --folds K"))
        if self.folds > 1 and self.train_on_val:
            raise ValueError(f"--folds {self.folds} with --train-on-val: each fold's held-out fold would train too, "
                             f"and the out-of-fold scores would be on trained images")
        if self.folds > 1 and self.has_val_folders():
            raise ValueError(f"--folds {self.folds} with --val-data: cross-validation folds split the training pairs; "
                             f"give one or the other (the validation folder can train too: --train-on-val)")
        if not 0.0 <= self.oversample <= 1.0:
            raise ValueError(f"DataConfig.oversample must be in [0, 1], got {self.oversample}")
        if self.cache not in ("auto", "memory", "disk"):
            raise ValueError(f"DataConfig.cache must be auto, memory or disk, got {self.cache!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"DataConfig.val_fraction must be in [0, 1), got {self.val_fraction}")
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise ValueError(f"DataConfig.mean and std need the same length and std > 0, got {self.mean}, {self.std}")
        for name in ("hflip_p", "vflip_p", "channel_shuffle_p", "grayscale_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"DataConfig.{name} must be a probability, got {getattr(self, name)}")
        for name in ("scale_limit", "gamma", "noise_std", "rotate_limit"):
            if getattr(self, name) < 0:
                raise ValueError(f"DataConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("brightness", "contrast", "saturation"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"DataConfig.{name} must be in [0, 1), got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataConfig:
        """As for every section; a config.json written by a run before crop oversampling existed (it has mask_values
        but no oversample) keeps plain random crops, so that run resumes exactly."""
        if "mask_values" in d and "oversample" not in d:
            d = {**d, "oversample": 0.0}
        if isinstance(d.get("patch_scale"), (int, float)):  # one scale for both axes, as runs before wrote it
            d = {**d, "patch_scale": (float(d["patch_scale"]),) * 2}
        return super().from_dict(d)

    def has_val_folders(self) -> bool:
        """True when the validation pairs come from folders of their own (--val-data or --val-images/--val-masks)."""
        return bool(self.val_data or self.val_images)

    def photometric(self) -> bool:
        """True when any colour / lighting augmentation is on."""
        return any(getattr(self, n) > 0 for n in ("brightness", "contrast", "saturation", "gamma", "channel_shuffle_p",
                                                   "grayscale_p", "noise_std"))


@dataclass
class TrainConfig(_JsonDataclass):
    """The optimisation recipe. The defaults are the seed's: batch 16, Adam 1e-4, 20 epochs, BCE,
    cosine annealing with warm restarts and mixed precision with gradient scaling on CUDA.

    Attributes:
        epochs: passes over the training split.
        batch_size: images per optimiser step.
        lr: Adam learning rate.
        encoder_lr_scale: a pretrained encoder's learning rate as a share of ``lr`` (the decoder's).
        weight_decay: Adam weight decay.
        budget: train to a wall-clock budget, e.g. "90s", "30m", "2h": the run plans its steps (and, where not
            given, model width, image size, batch, learning rate and augmentation) to end within it on this
            device, decoding and validation included; see unetseg.train.plan. Empty: train for ``epochs``.
        max_steps: stop after this many optimiser steps in all (0: epochs x steps per epoch); a budget sets it.
        schedule: "restarts": the seed's cosine annealing with warm restarts (restart_epochs, restart_mult);
            "cosine": linear warm-up for warmup_steps, then one cosine decay to min_lr at the last step.
        warmup_steps: the warm-up steps of the "cosine" schedule.
        loss: "ce": the seed's BCE (binary) or cross-entropy (multi-class); "dice": soft Dice over the batch;
            "dice_ce": Dice + cross-entropy 1:1 (nnU-Net's default). Pixels of ignored values count in none.
        class_weights: "none", "auto" (median-frequency balancing over the training masks, as SegNet trained
            CamVid), "sqrt" (the square roots of those: a milder balance) or one weight per class, e.g. "1,4,8";
            they weigh the cross-entropy per pixel and the Dice per class.
        class_weight_values: the weights in use (found from the data for "auto"; read-only).
        ema_decay: keep an exponential moving average of the weights with this decay (e.g. 0.999) and save it as
            the final weights; 0 turns it off.
        bn_recalibrate: before each validation and the final save, recompute the batch-norm statistics of the
            weights to be saved on the training images (un-augmented), as PreciseBN does.
        val_every: validate every this many epochs (and after the last).
        restart_epochs: epochs of the first cosine cycle (``T_0`` of CosineAnnealingWarmRestarts);
            the scheduler is stepped every batch with a fractional epoch.
        restart_mult: growth of each following cycle (``T_mult``).
        min_lr: the learning rate at the bottom of each cycle (``eta_min``).
        amp: mixed precision. "auto": on CUDA bf16 autocast where the GPU has it natively, else fp16 with gradient
            scaling; on CPUs bf16 only with native support (amx_bf16 / avx512_bf16), else fp32. "fp16" forces the
            seed's fp16 + gradient scaling (CUDA only), "bf16" forces bf16, "off" trains in fp32.
        device: "auto" (CUDA when present, else CPU), or a torch device string such as "cuda:1" or "cpu".
        seed: seed of weights, augmentation and batch order.
        memory_format: activation layout. "auto": channels_last (NHWC) on CUDA and for CPU inference, contiguous
            (NCHW) for CPU training, the faster ones measured by benchmarks/ceiling.py.
        micro_batch: the most images per forward/backward; gradients are accumulated to the full batch_size over
            parts of even size (16 by at most 3: 3,3,3,3,2,2). 0 picks the largest that fits in the device's free
            memory when the run starts and records it in config.json (a resumed run reuses it).
        compile: wrap the model in torch.compile.
        progress: show a tqdm bar per epoch (only when stderr is a terminal).
        checkpoint_steps: write ``last.pt`` every this many steps of an epoch (a decision step each, also where
            sync_every is longer); 0 means every ``checkpoint_minutes``.
            It is also written at every epoch end and on SIGINT / SIGTERM.
        checkpoint_minutes: the time between ``last.pt`` writes within an epoch when checkpoint_steps is 0.
        sync_every: the steps between the run's decisions (the step losses read back and checked, a checkpoint, a
            stop on a signal, a budget re-plan), taken together on every process; 0: every step on CPUs, every 16 on
            GPUs (the only time the host waits for the GPU).
        sync_bn: under torchrun on GPUs, batch-norm statistics over the global batch (SyncBatchNorm) instead of each
            process's share.
        dist_timeout_minutes: under torchrun, how long a process waits for the others in a collective before it
            gives up (a lost peer stops the job instead of hanging it; torchrun --max-restarts then restarts it).
        log: experiment trackers that get the run's config, metrics and curves: tensorboard, mlflow, wandb
            (optional extras, pip install 'unetseg[tensorboard]' and so on); a tracker that fails costs a
            warning, never the training.
        log_dir: TensorBoard's event folder (default: RUN/tensorboard).
        plan: what a budget run chose and measured (written by the plan; read-only).
    """

    epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-4
    encoder_lr_scale: float = 1.0
    weight_decay: float = 0.0
    budget: str = ""
    max_steps: int = 0
    schedule: Literal["restarts", "cosine"] = "restarts"
    warmup_steps: int = 0
    loss: Literal["ce", "dice", "dice_ce"] = "ce"
    class_weights: str = "none"
    class_weight_values: list[float] | None = None
    ema_decay: float = 0.0
    bn_recalibrate: bool = False
    val_every: int = 1
    restart_epochs: int = 10
    restart_mult: int = 1
    min_lr: float = 0.0
    amp: Literal["auto", "fp16", "bf16", "off"] = "auto"
    device: str = "auto"
    seed: int = 0
    memory_format: Literal["auto", "channels_last", "contiguous"] = "auto"
    micro_batch: int = 0
    compile: bool = False
    progress: bool = True
    checkpoint_steps: int = 0
    checkpoint_minutes: float = 5.0
    sync_every: int = 0
    sync_bn: bool = False
    dist_timeout_minutes: float = 30.0
    log: tuple[str, ...] = ()
    log_dir: str = ""
    plan: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.budget:
            parse_duration(self.budget)
        if self.schedule not in ("restarts", "cosine"):
            raise ValueError(f"TrainConfig.schedule must be restarts or cosine, got {self.schedule!r}")
        unknown = [name for name in self.log if name not in ("tensorboard", "mlflow", "wandb")]
        if unknown:
            raise ValueError(f"--log {' '.join(unknown)}: tensorboard, mlflow or wandb")
        if self.loss not in ("ce", "dice", "dice_ce"):
            raise ValueError(f"TrainConfig.loss must be ce, dice or dice_ce, got {self.loss!r}")
        if isinstance(self.class_weights, (list, tuple)):  # [1, 4, 8] in a config.json
            self.class_weights = ",".join(str(v) for v in self.class_weights)
        self.class_weights = str(self.class_weights).strip().lower()
        if self.class_weights not in ("none", "auto", "sqrt"):
            parse_weights(self.class_weights)
        if self.class_weight_values is not None and any(v < 0 for v in self.class_weight_values):
            raise ValueError("TrainConfig.class_weight_values must be >= 0")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"TrainConfig.ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.max_steps < 0 or self.warmup_steps < 0:
            raise ValueError("TrainConfig.max_steps and warmup_steps must be >= 0")
        for name in ("epochs", "batch_size", "restart_epochs", "restart_mult", "val_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr}")
        if self.encoder_lr_scale < 0:
            raise ValueError(f"TrainConfig.encoder_lr_scale must be >= 0, got {self.encoder_lr_scale}")
        if self.amp not in ("auto", "fp16", "bf16", "off"):
            raise ValueError(f"TrainConfig.amp must be auto, fp16, bf16 or off, got {self.amp!r}")
        if self.memory_format not in ("auto", "channels_last", "contiguous"):
            raise ValueError(f"TrainConfig.memory_format must be auto, channels_last or contiguous, got {self.memory_format!r}")
        if self.sync_every < 0:
            raise ValueError(f"TrainConfig.sync_every must be >= 0 (0 = automatic), got {self.sync_every}")
        if self.micro_batch < 0:
            raise ValueError(f"TrainConfig.micro_batch must be >= 0 (0 = automatic), got {self.micro_batch}")


@dataclass
class RunConfig(_Freezable):
    """Everything a run needs; saved as ``config.json`` in the run folder before the first step."""

    model: UNetConfig = field(default_factory=UNetConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.to_dict(), "data": self.data.to_dict(), "train": self.train.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        unknown = sorted(set(d) - {"model", "data", "train"})
        if unknown:
            raise ValueError(f"RunConfig: unknown key(s) {unknown}; known keys are ['data', 'model', 'train']")
        return cls(
            model=UNetConfig.from_dict(d.get("model", {})),
            data=DataConfig.from_dict(d.get("data", {})),
            train=TrainConfig.from_dict(d.get("train", {})),
        )

    def frozen(self) -> RunConfig:
        """A copy that refuses every write (``dataclasses.FrozenInstanceError``): the settings of a run that has
        started, decided once (the plan's and the data's included) and then only read."""
        copy = RunConfig.from_dict(self.to_dict())
        for part in (copy.model, copy.data, copy.train, copy):
            part._freeze()
        return copy

    def save(self, path: str | Path) -> None:
        """Write the config as indented JSON."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        """Read a config written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))


#: Fields a run writes into its config.json from its data or its machine: a new run finds them afresh.
DERIVED = frozenset({"data.mask_values", "data.mask_palette", "data.mask_mode", "data.patch_scale",
                     "train.micro_batch", "train.class_weight_values", "train.plan"})
#: Fields a budget plan sets besides those it names as chosen: the step counts.
PLANNED_STEPS = frozenset({"train.epochs", "train.max_steps"})


def _encoders_normalisation(model: dict[str, Any], data: dict[str, Any]) -> set[str]:
    """Of ``data.mean`` and ``data.std`` in a pretrained encoder's config.json, those that are the encoder's own (found
    again for the new run's encoder); a value the user chose stays, and counts as given."""
    encoder = model.get("encoder", "")
    if encoder in ("", "unet"):
        return set()
    from unetseg.model.encoders import normalisation  # the model's package imports this module

    try:
        own = normalisation(encoder, int(model.get("in_channels", 3)))
    except Exception:  # noqa: BLE001 - an encoder that cannot be built here: its build reports it; reset both
        return {"data.mean", "data.std"}
    return {f"data.{name}" for name, values in zip(("mean", "std"), own)
            if name not in data or [round(float(v), 6) for v in data[name]] == [round(v, 6) for v in values]}


def settings_for_new_run(d: dict[str, Any], replan: bool) -> tuple[dict[str, Any], set[str]]:
    """A config.json (``RunConfig.to_dict`` form) as the start of a new run, and the settings it gives.

    A run's config.json also holds what the run found (mask encoding, a micro-batch sized on its machine, class
    weights from its masks) and, after a budget run, what its plan chose. A new run on other data or another machine
    finds the derived fields afresh: they return to their defaults. With ``replan`` (the new run has a budget) so do
    the old plan's choices, which the new plan makes again; without, they stay as the recipe to train. The settings
    given are the remaining ones that differ from the defaults (``"section.name"``).
    """
    defaults = RunConfig().to_dict()
    out = {section: dict(values) for section, values in d.items()}
    plan = out.get("train", {}).get("plan") or {}
    fields = {name: section for section, values in defaults.items() for name in values}
    planned: set[str] = set()
    if replan and plan:
        planned = {f"{fields[name]}.{name}" for name in plan.get("chosen", []) if name in fields}
        planned |= {f"data.{name}" for name in plan.get("augmentation", {})}
        planned |= PLANNED_STEPS | ({"data.image_size"} if "patch" in plan.get("chosen", []) else set())
    follows = {"model.in_channels": "follow_channels", "model.num_classes": "follow_classes"}
    for key, flag in follows.items():  # the model's channels and classes follow the data unless they were given
        if out.get("data", {}).get(flag, True):
            planned.add(key)
    planned |= _encoders_normalisation(out.get("model", {}), out.get("data", {}))
    for key in DERIVED | planned:
        section, name = key.split(".")
        if section in out and name in out[section]:
            out[section][name] = defaults[section][name]
    data = out.get("data", {})
    for one, other, neutral in (("mean", "std", 1.0), ("std", "mean", 0.0)):  # one reset, the other kept: as many
        if f"data.{other}" in planned and f"data.{one}" not in planned and one in data and other in data \
                and len(data[one]) != len(data[other]):
            data[other] = [neutral] * len(data[one])
    given = {f"{section}.{name}" for section, values in out.items() if section in defaults
             for name, value in values.items() if name in defaults[section] and value != defaults[section][name]
             and f"{section}.{name}" not in planned}
    return out, given


def ignored_settings(cfg: RunConfig, given: set[str] | frozenset[str], resume: bool = False) -> list[str]:
    """One line for each setting the user gave (``"section.name"``) that another setting of ``cfg`` makes void, for
    the run to warn with at its start."""
    lines = []

    def flags(*names: str) -> list[str]:
        return [f"--{n.split('.')[1].replace('_', '-')}" for n in names if n in given]

    if cfg.model.pretrained() and flags("model.base_channels", "model.depth"):
        lines.append(f"{' and '.join(flags('model.base_channels', 'model.depth'))} ignored by --encoder "
                     f"{cfg.model.encoder}: its stages set the widths and the depth (5, strides 2 to 32)")
    plain_void = flags("model.encoder_bn", "train.encoder_lr_scale", "model.decoder_channels", "model.decoder_upsample")
    if not cfg.model.pretrained() and plain_void:
        lines.append(f"{', '.join(plain_void)} ignored by the plain U-Net (they shape a U-Net on a pretrained encoder: "
                     f"--encoder NAME)")
    steps = flags("train.epochs", "train.max_steps")
    if cfg.train.budget and steps and not resume:  # a resumed budget run trains to the --epochs given
        lines.append(f"{' and '.join(steps)} set by --budget: the value given is replaced by the plan's")
    if cfg.train.schedule == "restarts" and flags("train.warmup_steps"):
        lines.append("--warmup-steps is ignored by the restarts schedule (only --schedule cosine warms up)")
    restart = flags("train.restart_epochs", "train.restart_mult")
    if cfg.train.schedule == "cosine" and restart:
        lines.append(f"{' and '.join(restart)} ignored by the cosine schedule (they shape --schedule restarts)")
    split = flags("data.val_fraction", "data.split", "data.group_pattern", "data.split_seed")
    if cfg.data.has_val_folders() and split:
        lines.append(f"{', '.join(split)} ignored: the validation folders are the split")
    if cfg.data.patch is not None and "data.image_size" in given:
        lines.append(f"--image-size under --patch: the images are resized to {cfg.data.image_size[0]}x"
                     f"{cfg.data.image_size[1]} and the {cfg.data.patch[0]}x{cfg.data.patch[1]} crops taken from "
                     f"them (prediction scales each image so); leave it out to crop at the images' own resolution")
    return lines
