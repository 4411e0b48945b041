"""Inference: masks at each image's original size, written in the training masks' own encoding."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, nullcontext
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
from PIL import Image
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from unetseg._device import autocast_dtype, memory_format, resolve_device
from unetseg.checkpoint import load_model
from unetseg.config import DataConfig, RunConfig, check_scales
from unetseg.data.check import encoding_of
from unetseg.data.encoding import MaskEncoding
from unetseg.data.errors import DataError, raise_problems
from unetseg.data.io import DECODE_THREADS, read_image, read_image_for, read_mask
from unetseg.data.pairing import IMAGE_EXTENSIONS, find_folders, ignore_masks_for, list_files
from unetseg.data.transforms import to_float
from unetseg.infer.pipeline import (MODEL_AHEAD, WRITE_THREADS, Ahead, DecodeTimes, HostCopy, decoded_batches,
                                    sized_writers)
from unetseg.infer.postprocess import POSTPROCESSING_FILE, Postprocessing
from unetseg.infer.windows import sliding_window_logits
from unetseg.metrics import logits_to_classes, logits_to_probabilities
from unetseg.model import UNet

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: zlib level of the PNGs written: 1 encodes a 1918x1280 mask about 2.8x faster than Pillow's default 6, for files
#: about 1.5x larger (benchmarks/predict_speed.py).
PNG_LEVEL = 1
#: Overlay colour of class k (k >= 1) is OVERLAY_COLOURS[(k - 1) % len].
OVERLAY_COLOURS = np.array([(255, 40, 40), (40, 220, 40), (40, 90, 255), (255, 200, 0), (200, 0, 255),
                            (0, 220, 220)], dtype=np.float32)


#: Writes in flight (each holds one image's mask, and its overlay's image while it is drawn).
WRITE_BOUND = 2 * WRITE_THREADS
#: The most bytes of full-size scores enlarged at once (images of one size are classified together).
RESIZE_BYTES = 1 << 30
#: Bytes per activation element (:func:`unetseg.model.flops.activation_elements`) an inference forward pass may hold
#: at its peak: a bound, a quarter of a training step's (a forward pass frees each activation once the next layer
#: has it; benchmarks/gpu.py prints the measured figure). For the seed U-Net, 24 bytes per pixel and base channel.
INFERENCE_BYTES = 24 * 64 / 1585


def scaled_size(size: tuple[int, int], scale: float, stride: int = 32) -> tuple[int, int]:
    """(height, width) ``size`` times ``scale``, each side rounded to a whole ``stride`` (at least one): the input of
    one scale of multi-scale inference (the encoders pad to strides of 32 anyway)."""
    return tuple(max(stride, round(side * scale / stride) * stride) for side in size)  # type: ignore[return-value]


def scaled_batch(batch: int, device: torch.device, scales: Sequence[float]) -> int:
    """A GPU batch sized for one pass at the input's size, for multi-scale inference: its largest scale holds
    ``max(scales)**2`` times the activations (on the CPU the batch stays: memory is not what bounds it there)."""
    if device.type != "cuda" or max(scales) <= 1.0:
        return batch
    return max(1, int(batch / max(scales) ** 2))


def auto_batch(config: RunConfig, device: torch.device, tile: tuple[int, int] | None = None,
               model: torch.nn.Module | None = None) -> int:
    """Images (or windows) per forward pass: on a GPU as many as take half its free memory (at most 64), estimated
    from ``model``'s activations (else one built from ``config.model``); on the CPU 4, where a larger batch is no
    faster."""
    if device.type != "cuda":
        return 4
    from unetseg._device import free_memory
    from unetseg.model.flops import activation_elements

    width, height = tile or config.data.image_size
    while hasattr(model, "models"):  # an ensemble runs its members (folds, runs) one after another
        model = model.models[0]
    if not config.model.pretrained():  # the plain U-Net's: 24 bytes per pixel and base channel
        elements = 24 * config.model.base_channels / INFERENCE_BYTES
    else:  # counted on the built model (an ONNX graph: the config's network)
        elements = activation_elements(model if isinstance(model, torch.nn.Module) else UNet(config.model),
                                       (config.model.in_channels, 64, 64))
    per_image = INFERENCE_BYTES * elements * width * height
    # the enlargement of the batch before runs beside the forward pass (the pipeline): its bytes are not the model's
    return max(1, min(64, max(0, free_memory(device) - RESIZE_BYTES) // 2 // per_image))


THRESHOLD_FILE = "threshold.json"


def stored_threshold(run_dir: str | Path, weights: str = "final", tta: bool = False) -> float:
    """The binary threshold ``unetseg evaluate --tune-threshold`` stored in the run, else 0.5; a warning when it
    was tuned for other weights or TTA.

    Raises:
        ValueError: when the file is not such a threshold.
    """
    path = Path(run_dir) / THRESHOLD_FILE
    if not path.is_file():
        return 0.5
    try:
        stored = json.loads(path.read_text())
        value = float(stored["threshold"])
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{path}: not a threshold written by unetseg evaluate --tune-threshold") from None
    if not 0.0 < value < 1.0:
        raise ValueError(f"{path}: threshold {value} is not a probability between 0 and 1")
    if stored.get("weights", "final") != weights or bool(stored.get("tta", False)) != tta:
        logger.warning("warning: %s was tuned with --weights %s%s; it is used for --weights %s%s all the same", path,
                       stored.get("weights"), " --tta" if stored.get("tta") else "", weights, " --tta" if tta else "")
    return value


def list_images(path: str | Path) -> list[Path]:
    """The images to predict: a file itself, the images of a folder, or the images folder of a dataset.

    Raises:
        DataError: when ``path`` does not exist or holds no images.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"{path}: no such file or folder")
    images = list_files(path, IMAGE_EXTENSIONS)
    if not images:
        images = list_files(find_folders(path)[0], IMAGE_EXTENSIONS)
    if not images:
        raise DataError(f"{path}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    return images


class Predictor:
    """A trained U-Net with its config, on a device, ready to segment image files.

    Args:
        model: the network (put in eval mode here).
        config: the run's config (input size, normalisation, mask encoding).
        device: "auto", "cpu", "cuda", ...
        batch_size: images per forward pass; 0: :func:`auto_batch` (from the GPU's free memory).
        tta: average the probabilities over flipped copies, for each flip training made at least half the time
            (horizontal, vertical, and both where both): 2 or 4 forward passes per image.
        scales: multi-scale inference: the input resized by each factor (sides in whole strides of 32), the
            probabilities resized back and averaged (with ``tta``, each scale's flips too); (1.0,): one pass.
        threshold: foreground probability above which a pixel of a binary model is foreground.
        tile: (width, height) of sliding windows over each image at the model's input size (Gaussian-blended,
            ``overlap`` shared between neighbours), instead of one forward pass of the whole image.

    Example:
        >>> predictor = Predictor.from_run("runs/carvana")          # doctest: +SKIP
        >>> classes = predictor.predict_image("car.jpg")            # (H, W) uint8 at the photo's size
    """

    def __init__(self, model: UNet | Callable[[torch.Tensor], torch.Tensor], config: RunConfig, device: str = "auto",
                 batch_size: int = 0, amp: str = "auto", tta: bool = False, threshold: float = 0.5,
                 tile: tuple[int, int] | None = None, overlap: float = 0.5, *,
                 scales: Sequence[float] = (1.0,)) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"--threshold {threshold}: a probability between 0 and 1 (exclusive)")
        self.device = resolve_device(device)
        patched = config.data.patch is not None  # a patch run: windows over each image at the training scale
        if tile is None and patched:
            tile = config.data.patch
        elif tile is not None and not patched:  # a window larger than the input would only add black borders
            tile = (min(tile[0], config.data.image_size[0]), min(tile[1], config.data.image_size[1]))
        self.tta, self.threshold, self.tile, self.overlap = tta, threshold, tile, overlap
        self.scales = check_scales(scales)
        if tta or self.scales != (1.0,):  # said once, wherever the settings came from (flags, the run, its members)
            logger.info("inference: %s", ", ".join(["flip TTA"] * tta + [
                f"scales {' '.join(f'{x:g}' for x in self.scales)}"] * (self.scales != (1.0,))))
        self.source = ""  # the run folder and weights file, where loaded from a run
        self.postprocess: Postprocessing | None = None  # rules applied to each class map (postprocessing.json)
        if tta and max(config.data.hflip_p, config.data.vflip_p) < 0.5:
            logger.warning("warning: --tta: training flipped neither way half the time; nothing to average")
        self.config = config
        # a layout the budget plan measured for training says nothing about inference on this device
        planned = config.train.plan is not None and "memory_format" in config.train.plan.get("chosen", [])
        self.layout = memory_format(self.device, "auto" if planned else config.train.memory_format, training=False)
        if isinstance(model, torch.nn.Module):
            model = model.to(self.device, memory_format=self.layout).eval()
        self.model = model
        self.batch_size = batch_size or scaled_batch(auto_batch(config, self.device, tile, model), self.device,
                                                     self.scales)
        self.dtype = autocast_dtype(self.device, amp)  # this device's precision, not the training run's
        self.encoding = encoding_of(config.data) or MaskEncoding((0, 255))
        self._host = HostCopy()  # masks to host memory (on a GPU: pinned, bit-packed for binary models)
        self.decode_times = DecodeTimes()  # what a decode costs here: the writers' pools are sized by it

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str = "auto", batch_size: int = 0,
                 backend: Literal["torch", "onnxruntime"] = "torch",
                 weights: Literal["final", "best"] = "final", amp: str = "auto", tta: bool | None = None,
                 threshold: float | None = None, tile: tuple[int, int] | None = None,
                 overlap: float = 0.5, folds: list[int] | None = None, postprocess: bool = True, *,
                 scales: Sequence[float] | None = None) -> Predictor:
        """Load the run's final weights (``model.safetensors``; ``weights="best"``: ``best.safetensors``, the best
        validation Dice) and config; with ``backend="onnxruntime"`` the run's ``model.onnx`` (written by
        ``unetseg export``) computes the logits. ``amp`` is the precision on this device ("auto": bf16 where it is
        native, fp16 on other GPUs, fp32 on other CPUs), whatever the run was trained with. ``threshold`` None: the
        one ``unetseg evaluate --tune-threshold`` stored in the run (``threshold.json``), else 0.5. A
        cross-validation run (``unetseg train --folds K``) predicts with the mean of its folds' logits (``folds``:
        those folds only), and applies the postprocessing chosen on its out-of-fold predictions
        (``postprocessing.json``; ``postprocess=False``: not). ``tta`` and ``scales`` None: the run's own
        (``predict_tta``, ``predict_scales`` in its config.json; the budget plan's scene recipe sets them)."""
        if backend == "onnxruntime" and weights != "final":
            raise ValueError("--backend onnxruntime runs model.onnx, exported from the final weights; "
                             "--weights best needs the torch backend")
        model, config = load_model(run_dir, weights=weights, folds=folds)
        tta = config.data.predict_tta if tta is None else tta
        scales = config.data.predict_scales if scales is None else tuple(scales)
        if backend == "onnxruntime" and folds is not None:
            raise ValueError("--backend onnxruntime runs model.onnx, exported with every fold; --folds needs the "
                             "torch backend")
        if threshold is None:
            threshold = stored_threshold(run_dir, weights, tta)
        if backend == "onnxruntime":
            from unetseg.infer.export import ONNX_FILE, OnnxModel

            predictor = cls(OnnxModel(Path(run_dir) / ONNX_FILE), config, "cpu", batch_size, "off", tta, threshold,
                            tile, overlap, scales=scales)
        else:
            predictor = cls(model, config, device, batch_size, amp, tta, threshold, tile, overlap, scales=scales)
        rules = Path(run_dir) / POSTPROCESSING_FILE
        if postprocess and rules.is_file():
            predictor.postprocess = Postprocessing.load(rules)
            if predictor.postprocess.active():
                logger.info("postprocessing from %s: %s", rules, predictor.postprocess.describe())
        predictor.source = f"{Path(run_dir).resolve()}:{weights}:{backend}" + (
            f":folds {' '.join(map(str, folds))}" if folds is not None else "")
        return predictor

    @classmethod
    def from_runs(cls, run_dirs: Sequence[str | Path], device: str = "auto", batch_size: int = 0,
                  backend: Literal["torch", "onnxruntime"] = "torch",
                  weights: Literal["final", "best"] = "final", amp: str = "auto", tta: bool | None = None,
                  threshold: float | None = None, tile: tuple[int, int] | None = None,
                  overlap: float = 0.5, folds: list[int] | None = None, postprocess: bool = True, *,
                  scales: Sequence[float] | None = None) -> Predictor:
        """Several runs as one predictor: the mean of their probabilities (:class:`~unetseg.model.ensemble.
        RunEnsemble`; nnU-Net's ensembles of configurations), a cross-validation run among them by the mean of its
        folds' logits first. One run: :meth:`from_run`. The runs must segment alike (the same classes, mask
        encoding and input channels; patch runs the same patch and scale); they may differ in recipe, encoder,
        input size and normalisation: the input is decoded at the largest run's size and resized for the others.
        A stored threshold or postprocessing belongs to its run: the ensemble uses ``threshold`` (default 0.5) and
        no postprocessing (each with a warning where a run has one); ``tta`` and ``scales`` None: the settings
        every run has (``predict_tta``, ``predict_scales``), else none.

        Raises:
            CheckpointError: naming the run that does not segment as the first does.
        """
        from unetseg.checkpoint import CheckpointError
        from unetseg.model.ensemble import RunEnsemble

        if len(run_dirs) == 1:
            return cls.from_run(run_dirs[0], device, batch_size, backend, weights, amp, tta, threshold, tile,
                                overlap, folds, postprocess, scales=scales)
        names = [str(r) for r in run_dirs]
        if len({Path(r).resolve() for r in run_dirs}) < len(run_dirs):
            raise CheckpointError(f"--model {' '.join(names)}: a run is named twice")
        if backend != "torch":
            raise ValueError("--backend onnxruntime runs one run's model.onnx; an ensemble of runs needs the torch "
                             "backend")
        if folds is not None:
            raise ValueError("--folds picks the folds of one cross-validation run; with several --model runs, name "
                             "each run (a fold's folder RUN/fold_N is a run of its own)")
        loaded = [load_model(r, weights=weights) for r in run_dirs]
        first = loaded[0][1]
        for run, (_, cfg) in zip(run_dirs[1:], loaded[1:]):
            for what, a, b in (("classes", first.model.num_classes, cfg.model.num_classes),
                               ("input channels", first.model.in_channels, cfg.model.in_channels),
                               ("mask encoding", encoding_of(first.data), encoding_of(cfg.data)),
                               ("class names", first.data.class_names, cfg.data.class_names),
                               ("patch", (first.data.patch, first.data.patch_scale if first.data.patch else None),
                                (cfg.data.patch, cfg.data.patch_scale if cfg.data.patch else None))):
                if a != b:
                    raise CheckpointError(f"{run}: its {what} ({b}) differ from {run_dirs[0]}'s ({a}): runs that "
                                          f"segment differently cannot be averaged")
        # the input at the largest run's size, resized for the others; a patch run's windows are the patch
        big = max(range(len(loaded)), key=lambda k: loaded[k][1].data.image_size[0] * loaded[k][1].data.image_size[1])
        config = RunConfig.from_dict(loaded[big][1].to_dict())
        config.data.fold = None
        config.data.hflip_p = min(cfg.data.hflip_p for _, cfg in loaded)  # TTA: the flips every run trained with
        config.data.vflip_p = min(cfg.data.vflip_p for _, cfg in loaded)
        width, height = config.data.image_size
        resize = [(1.0, 1.0) if config.data.patch else (cfg.data.image_size[0] / width, cfg.data.image_size[1] / height)
                  for _, cfg in loaded]
        model = RunEnsemble([m for m, _ in loaded], [(cfg.data.mean, cfg.data.std) for _, cfg in loaded], resize,
                            config.data.mean, config.data.std)
        own = [str(r) for r in run_dirs if (Path(r) / THRESHOLD_FILE).is_file()]
        if threshold is None and own and config.model.num_classes == 1:
            logger.warning("warning: the thresholds stored in %s are their own; the ensemble uses 0.5 (--threshold "
                           "to set one)", ", ".join(own))
        rules = [str(r) for r in run_dirs if (Path(r) / POSTPROCESSING_FILE).is_file()
                 and Postprocessing.load(Path(r) / POSTPROCESSING_FILE).active()]
        if rules and postprocess:
            logger.warning("warning: the postprocessing of %s was chosen for that run alone; the ensemble applies "
                           "none", ", ".join(rules))
        if tta is None:  # the runs' own inference settings where they agree
            tta = all(cfg.data.predict_tta for _, cfg in loaded)
        if scales is None:
            scales = first.data.predict_scales if all(cfg.data.predict_scales == first.data.predict_scales
                                                      for _, cfg in loaded) else (1.0,)
        if not batch_size:  # the members run one after another: the batch that fits the most demanding of them
            here = resolve_device(device)
            batch_size = scaled_batch(min(auto_batch(cfg, here, tile or cfg.data.patch, m) for m, cfg in loaded),
                                      here, check_scales(scales))
        predictor = cls(model, config, device, batch_size, amp, tta, 0.5 if threshold is None else threshold, tile,
                        overlap, scales=scales)
        predictor.source = " + ".join(f"{Path(r).resolve()}:{weights}" for r in run_dirs)
        logger.info("ensemble of %d runs (the mean of their probabilities) at %dx%d: %s", len(run_dirs), width,
                    height, ", ".join(f"{r} {c.data.image_size[0]}x{c.data.image_size[1]}" for r, (_, c)
                                      in zip(names, loaded)))
        return predictor

    @torch.inference_mode()
    def logits(self, images: np.ndarray) -> torch.Tensor:
        """Raw scores for images already at the model's input size.

        Shape:
            uint8 (N, H, W, C) -> float32 (N, num_classes, H, W) on the predictor's device
        """
        x = to_float(torch.from_numpy(images).to(self.device), self.config.data.mean, self.config.data.std)
        x = x.contiguous(memory_format=self.layout)
        with torch.autocast(self.device.type, dtype=self.dtype) if self.dtype else nullcontext():
            if not self.tta and self.scales == (1.0,):
                return self.model(x).float().to(self.device)
            # the flips training made at least half the time: the model takes both orientations as equally likely
            # (a car upside down, seen in 10% of the seed's steps, is not: measured, README)
            h, v = self.config.data.hflip_p >= 0.5, self.config.data.vflip_p >= 0.5
            flips = [()] + ([(3,)] * h + [(2,)] * v + [(2, 3)] * (h and v) if self.tta else [])
            height, width = x.shape[-2:]
            probs: torch.Tensor | None = None
            for scale in self.scales:  # each scale's probabilities at the input's size
                xs = x if scale == 1.0 else F.interpolate(
                    x, size=scaled_size((height, width), scale), mode="bilinear", align_corners=False,
                    antialias=scale < 1.0).contiguous(memory_format=self.layout)
                for dims in flips:  # the flipped copy's prediction, flipped back
                    out = self.model(xs.flip(dims).contiguous(memory_format=self.layout) if dims else xs)
                    out = out.float().to(self.device)
                    out = out.flip(dims) if dims else out
                    if scale != 1.0:
                        out = F.interpolate(out, size=(height, width), mode="bilinear", align_corners=False)
                    p = logits_to_probabilities(out)
                    probs = p if probs is None else probs.add_(p)
        probs /= len(self.scales) * len(flips)
        # back to scores with the same decision rule: logit of the mean probability, log of the mean softmax
        return torch.logit(probs, eps=1e-6) if probs.shape[1] == 1 else probs.clamp_min(1e-12).log()

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-class probabilities of ``logits`` (C, H, W): the foreground's sigmoid for a binary model (1, H, W),
        the softmax otherwise."""
        return logits_to_probabilities(logits[None])[0]

    def classes(self, logits: torch.Tensor) -> torch.Tensor:
        """Class index per pixel (H, W) int64 of ``logits`` (C, H, W): a binary model's foreground where its
        probability is above ``threshold``; the argmax otherwise."""
        return logits_to_classes(logits[None], self.threshold)[0]

    def finish(self, classes: np.ndarray) -> np.ndarray:
        """A class map (H, W) at the image's size after the run's postprocessing (as it is without one)."""
        return classes if self.postprocess is None or not self.postprocess.active() else self.postprocess(classes)

    def _load(self, path: Path) -> tuple[np.ndarray, tuple[int, int]]:
        """The model's input and the original (width, height). The input is always decoded as training decoded it
        (a JPEG's draft decode, then the resize): the same image and run give the same mask in ``predict`` with or
        without overlays, ``evaluate`` and ``submit``."""
        def target(size: tuple[int, int]) -> tuple[int, int]:  # of the original size, read by the decode's open
            if self.config.data.patch is None:
                return self.config.data.image_size
            scale_x, scale_y = self.config.data.patch_scale  # each image at the training scale, at its own size
            return max(16, round(size[0] * scale_x)), max(16, round(size[1] * scale_y))

        return read_image_for(path, target, self.config.model.in_channels)

    def _scored(self, paths: Sequence[Path], progress: bool
                ) -> Iterator[tuple[list[Path], list[tuple[int, int]], list[torch.Tensor]]]:
        """Per batch: its paths, original (width, height) sizes and scores (1, K, h, w) at the model's size, on the
        predictor's device. Decoding runs on DECODE_THREADS threads into each batch's staging buffer, the model on
        a thread of its own up to MODEL_AHEAD batches ahead of the caller (:mod:`unetseg.infer.pipeline`)."""
        # by windows, one image at a time (its windows are batched): a batch of whole images of window size would
        # hold as many full-size score maps
        images = 1 if self.tile else self.batch_size

        def forward() -> Iterator[tuple[list[Path], list[tuple[int, int]], list[torch.Tensor]]]:
            done = 0
            for batch, sizes in decoded_batches(paths, self.decode_times.timed(self._load), images,
                                                  DECODE_THREADS):
                if self.tile:  # each image by windows, the windows batched
                    logits = [sliding_window_logits(self.logits, image, self.tile, self.overlap, self.batch_size)[None]
                              for image in batch]
                else:
                    logits = list(self.logits(batch if isinstance(batch, np.ndarray) else np.stack(batch)).split(1))
                yield list(paths[done:done + len(sizes)]), sizes, logits
                done += len(sizes)

        bar = tqdm(total=len(paths), desc="predict", unit="img", disable=None if progress else True, leave=False)
        # windows: whole score maps of each image queue up, so the model runs one image ahead only
        ahead = Ahead(forward(), 1 if self.tile else MODEL_AHEAD)
        for item in ahead:
            yield item
            bar.update(len(item[1]))
            if not bar.disable:
                bar.set_postfix(bound=ahead.bound_by(), refresh=False)
        bar.close()

    def predict_paths(self, paths: Sequence[Path], progress: bool = False) -> Iterator[tuple[Path, torch.Tensor]]:
        """Yield ``(path, logits)`` per image, logits (num_classes, H, W) resized to the image's original size."""
        for batch_paths, sizes, logits in self._scored(paths, progress):
            for path, (width, height), scores in zip(batch_paths, sizes, logits):
                if scores.shape[-2:] != (height, width):
                    scores = F.interpolate(scores, size=(height, width), mode="bilinear", align_corners=False)
                yield path, scores[0]

    def predict_classes(self, paths: Sequence[Path], progress: bool = False) -> Iterator[tuple[Path, np.ndarray]]:
        """Yield ``(path, classes)`` per image: class indices (H, W) uint8 at the image's size, as :meth:`classes`
        of :meth:`predict_paths` gives them. Images of one size are enlarged and classified together, and their
        masks copied to the host at once (on a GPU: one wait per group, not per image)."""
        binary = self.config.model.num_classes == 1
        for batch_paths, sizes, logits in self._scored(paths, progress):
            start = 0
            while start < len(sizes):
                width, height = sizes[start]
                # a group of images of one size whose full-size scores take at most RESIZE_BYTES
                most = max(1, RESIZE_BYTES // (4 * logits[start].shape[1] * width * height))
                stop = start + 1
                while stop < len(sizes) and stop - start < most and sizes[stop] == sizes[start] \
                        and logits[stop].shape == logits[start].shape:
                    stop += 1
                scores = torch.cat(logits[start:stop])
                if scores.shape[-2:] != (height, width):
                    scores = F.interpolate(scores, size=(height, width), mode="bilinear", align_corners=False)
                classes = self._host(logits_to_classes(scores, self.threshold, torch.uint8), binary)
                for i in range(start, stop):
                    yield batch_paths[i], self.finish(classes[i - start])
                start = stop

    def predict_image(self, path: str | Path) -> np.ndarray:
        """Class indices (H, W) uint8 of one image, at its original size."""
        return next(self.predict_classes([Path(path)]))[1]


def overlay(image: np.ndarray, classes: np.ndarray, encoding: MaskEncoding, alpha: float = 0.5,
            colours: Sequence[str] | None = None) -> Image.Image:
    """The image (H, W, C) with each foreground class (H, W) tinted: in its colour in the training masks when that
    colour is not black or white (colour maps, palettes), else in OVERLAY_COLOURS. With ``colours`` (a classes
    file's, ``#rrggbb`` per class) every class is tinted in its own colour, class 0 too (road scenes have no
    background)."""
    rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
    if colours and len(colours) == encoding.num_labels:
        table = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in colours], dtype=np.uint8)
        tinted = np.ones(classes.shape, dtype=bool)
    else:
        table = np.zeros((encoding.num_labels, 3), dtype=np.uint8)
        for k in range(1, encoding.num_labels):
            colour = encoding.colour(k)
            plain = len(set(colour)) == 1  # grey levels say nothing about colour
            table[k] = OVERLAY_COLOURS[(k - 1) % len(OVERLAY_COLOURS)] if plain else colour
        tinted = classes > 0
    # Pillow's composite blends in C: 2x faster than NumPy in float32 at 1918x1280 (benchmarks/predict_speed.py)
    weight = Image.fromarray(tinted.astype(np.uint8) * np.uint8(round(alpha * 255)))  # uint8 throughout
    return Image.composite(Image.fromarray(table[classes]), Image.fromarray(np.ascontiguousarray(rgb)), weight)


def predict_folder(predictor: Predictor, inputs: str | Path, out_dir: str | Path, overlays: bool = True,
                   progress: bool = False, ignore: DataConfig | None = None, probs: bool = False,
                   fmt: Literal["masks", "coco", "cvat"] = "masks") -> list[Path]:
    """Segment an image file or a folder of images; write ``out_dir/masks/<stem>.png`` in the training masks'
    encoding (palette PNG for palette masks), with ``overlays`` ``out_dir/overlays/<stem>.jpg``, and with
    ``probs`` the probabilities at the image's size as 8-bit PNGs (0-255 for 0-1): ``out_dir/probs/<stem>.png``
    (the foreground's) for a binary model, ``out_dir/probs/<stem>_class<k>.png`` per class otherwise.

    Args:
        ignore: a DataConfig whose ``ignore_masks`` (and ``ignore_pattern`` / ``image_pattern``) name an ignore mask
            per image (DRIVE's field of view): pixels outside it are written as background.
        fmt: "masks"; "coco": instead of the masks one COCO file ``out_dir/predictions.coco.json`` (compressed RLE
            per image and class, ``score`` the class's mean probability); "cvat": instead of the masks CVAT's
            "Segmentation mask 1.1" layout in ``out_dir`` (:mod:`unetseg.labels.export`), for correcting in a
            labelling tool.

    Returns:
        The mask files written (the COCO file; CVAT's class masks).
    """
    from unetseg.data.classes import class_names
    from unetseg.labels.export import COCO_FILE, CVAT_MASKS, CocoWriter, CvatWriter, has_background

    if fmt not in ("masks", "coco", "cvat"):
        raise ValueError(f"--format {fmt}: masks, coco or cvat")
    config = predictor.config
    names = class_names(config.data.class_names, max(2, config.model.num_classes))
    background = has_background(config.model.num_classes, config.data.background, names)
    coco = CocoWriter(names, background) if fmt == "coco" else None
    cvat = CvatWriter(Path(out_dir), names, background, config.data.class_colours) if fmt == "cvat" else None
    paths = list_images(inputs)
    ignores: dict[Path, Path | None] = {}
    if ignore is not None and ignore.ignore_masks:
        problems: list[str] = []
        ignores = dict(zip(paths, ignore_masks_for(paths, ignore, problems)))
        raise_problems(problems)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for folder, wanted in (("masks", fmt == "masks"), ("overlays", overlays), ("probs", probs)):
        if wanted:
            (out / folder).mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    logger.info("predict: %d images; decoding on %d threads, the model %d batches of %d ahead", len(paths),
                DECODE_THREADS, MODEL_AHEAD, predictor.batch_size)

    def write(path: Path, classes: np.ndarray, maps: np.ndarray | None, scores: dict[int, float] | None) -> None:
        """Encode and write one image's files (on a thread, beside the model); an overlay decodes the image whole."""
        if maps is not None:
            for k, plane in enumerate(maps):
                name = f"{path.stem}.png" if len(maps) == 1 else f"{path.stem}_class{k}.png"
                Image.fromarray(plane).save(out / "probs" / name, compress_level=PNG_LEVEL)
        if coco is not None:
            coco.add(path, classes, scores or {})
        elif cvat is not None:
            cvat.add(path, classes)
        else:
            predictor.encoding.to_image(classes).save(out / "masks" / f"{path.stem}.png", compress_level=PNG_LEVEL)
        if overlays:
            image = read_image(path, None, predictor.config.model.in_channels)
            overlay(image, classes, predictor.encoding, colours=predictor.config.data.class_colours).save(
                out / "overlays" / f"{path.stem}.jpg", quality=90)

    what = {"masks": "mask", "coco": "COCO RLE", "cvat": "CVAT masks"}[fmt] + " + probabilities" * probs + \
        " + overlay" * overlays
    with sized_writers(predictor.decode_times.median, DECODE_THREADS, WRITE_BOUND, "predict", what) as writers:
        if probs or coco is not None:  # the scores at full size are needed too: one image at a time
            results = ((path, predictor.finish(predictor.classes(logits).to(torch.uint8).cpu().numpy()), logits)
                       for path, logits in predictor.predict_paths(paths, progress))
        else:
            results = ((path, classes, None) for path, classes in predictor.predict_classes(paths, progress))
        with closing(results):  # an error here stops the model's thread at once
            for path, classes, logits in results:
                keep = None
                if ignores.get(path) is not None:  # outside the field of view: background (the model never learnt it)
                    keep = read_mask(ignores[path]).values
                    if keep.shape != classes.shape:
                        raise DataError(f"{ignores[path]}: ignore mask is {keep.shape[1]}x{keep.shape[0]} but the "
                                        f"image {path.name} is {classes.shape[1]}x{classes.shape[0]}")
                    classes[keep == 0] = 0
                maps = scores = None
                if probs:
                    maps = (predictor.probabilities(logits) * 255).round().to(torch.uint8).cpu().numpy()
                    if keep is not None:  # outside the field of view: certain background, as the mask says
                        maps[:, keep == 0] = 0
                        if len(maps) > 1:
                            maps[0, keep == 0] = 255
                if coco is not None:  # each present class's mean probability over its pixels
                    scores = class_scores(predictor.probabilities(logits), classes)
                writers.submit(write, path, classes, maps, scores)  # bounded: a few in flight, whatever the folder
                written.append(out / (CVAT_MASKS if cvat else "masks") / f"{path.stem}.png")
    if coco is not None:
        written = [coco.write(out / COCO_FILE, predictor.source or "a unetseg run")]
        logger.info("wrote %d annotations of %d images to %s (COCO, compressed RLE)", len(coco.annotations),
                    len(coco.images), written[0])
    elif cvat is not None:
        cvat.write()
        logger.info("wrote %d masks in CVAT's Segmentation mask 1.1 layout to %s", len(written), out)
    else:
        logger.info("wrote %d masks to %s", len(written), out / "masks")
    return written


def class_scores(probabilities: torch.Tensor, classes: np.ndarray) -> dict[int, float]:
    """Each present class's mean probability over the pixels it was given: a binary model's foreground (class 1)
    from its one plane, a multi-class model's class k from plane k."""
    index = torch.from_numpy(classes.astype(np.int64)).to(probabilities.device)
    scores = {}
    for k in torch.unique(index).tolist():
        if probabilities.shape[0] == 1:
            if k == 0:
                continue
            plane = probabilities[0]
        else:
            plane = probabilities[k]
        scores[int(k)] = float(plane[index == k].float().mean())
    return scores
