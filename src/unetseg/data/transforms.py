"""Batched augmentation and normalisation on the training device.

Rotation, zoom and both flips are one affine warp: a single ``affine_grid`` + ``grid_sample`` per batch, bilinear
for images and nearest for masks (so mask labels stay exact), reflection at the borders (as the seed's
albumentations ``Rotate`` does by default). On the CPU this costs well under 1% of a training step.

With ``DataConfig.crop`` the same warp also cuts the training sample: a random window of the crop's size from the
zoomed, rotated and flipped frame (the scale-jittered random crops of road-scene recipes: DeepLab, BiSeNet, PIDNet
rescale by 0.5-2.0 and crop). Where the window reaches past the frame (a zoom out), images are black and masks void
(IGNORE), as mmsegmentation pads (``pad_val=0, seg_pad_val=255``), rather than reflected.

Every random draw comes from the step's generator on the images' device and nothing is read back to the host, so on a
GPU the augmentation queues without waiting (no host sync; ``tests/train/test_host_syncs.py`` counts them).
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from unetseg.data.encoding import IGNORE

if TYPE_CHECKING:
    from unetseg.config import DataConfig

#: ITU-R BT.601 luma weights, as PIL's convert("L") uses.
_LUMA = (0.299, 0.587, 0.114)


def to_float(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 images (N, H, W, C) -> normalised float (N, C, H, W): ``(x / 255 - mean) / std``."""
    return normalise(images.permute(0, 3, 1, 2).float().div_(255.0), mean, std)


@functools.lru_cache(maxsize=32)
def _constant(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A small constant (1, C, 1, 1) on ``device``, copied there once (a copy per step would wait for the GPU)."""
    return torch.tensor(values, dtype=dtype).view(1, -1, 1, 1).to(device)


def normalise(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Float images (N, C, H, W) in [0, 1] -> ``(x - mean) / std``, in place."""
    return x.sub_(_constant(tuple(mean), x.device, x.dtype)).div_(_constant(tuple(std), x.device, x.dtype))


def augment(images: torch.Tensor, masks: torch.Tensor, cfg: DataConfig,
            generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The training augmentation of a batch: the affine warp, then the photometric transforms, then normalisation.

    Args:
        images: uint8 (N, H, W, C) on the training device.
        masks: class indices (N, H, W).
        generator: the step's generator, on the images' device; every draw comes from it (the affine ones first, so a
            config without photometric transforms draws exactly what it drew before they existed).

    Returns:
        (normalised float images (N, C, H, W), masks (N, H, W)).
    """
    x = to_float(images, (0.0,) * images.shape[-1], (1.0,) * images.shape[-1])
    x, masks = random_affine(x, masks, cfg.rotate_limit, cfg.hflip_p, cfg.vflip_p, generator=generator,
                             scale_limit=cfg.scale_limit, out_size=cfg.crop)
    if cfg.photometric():
        x = photometric(x, cfg, generator)
    return normalise(x, cfg.mean, cfg.std), masks


def _rand(*shape: int, generator: torch.Generator | None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Uniform draws in [0, 1) on the generator's device (the CPU without one)."""
    return torch.rand(*shape, generator=generator, dtype=dtype,
                      device=generator.device if generator is not None else None)


def _on(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``: itself where the draws were made there (no copy)."""
    return t if t.device == device else t.to(device)


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * _rand(n, generator=generator)


def photometric(x: torch.Tensor, cfg: DataConfig, generator: torch.Generator) -> torch.Tensor:
    """Colour and lighting changes of float images (N, C, H, W) in [0, 1], one draw per image: brightness, contrast,
    saturation, channel permutation, greyscale, gamma, noise (each only when its DataConfig field is non-zero; all
    draws are made whatever the settings, so changing one strength does not shift the others' draws)."""
    n, c = x.shape[:2]
    rgb = c == 3
    brightness = _uniform(n, 1 - cfg.brightness, 1 + cfg.brightness, generator)
    contrast = _uniform(n, 1 - cfg.contrast, 1 + cfg.contrast, generator)
    saturation = _uniform(n, 1 - cfg.saturation, 1 + cfg.saturation, generator)
    log_gamma = _uniform(n, -math.log1p(cfg.gamma), math.log1p(cfg.gamma), generator)
    shuffle = _rand(n, generator=generator) < cfg.channel_shuffle_p
    perms = torch.argsort(_rand(n, 3, generator=generator), dim=1)
    grey = _rand(n, generator=generator) < cfg.grayscale_p
    view = (n, 1, 1, 1)
    luma = _constant(_LUMA, x.device, x.dtype) if rgb else None

    def grey_of(t: torch.Tensor) -> torch.Tensor:
        return (t * luma).sum(1, keepdim=True) if rgb else t

    if cfg.brightness:
        x = x * brightness.to(x).view(view)
    if cfg.contrast:
        mean = grey_of(x).mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * contrast.to(x).view(view) + mean
    if rgb and cfg.saturation:
        g = grey_of(x)
        x = (x - g) * saturation.to(x).view(view) + g
    if rgb and cfg.channel_shuffle_p:  # no test of whether any image was drawn: that would wait for the GPU
        order = torch.where(_on(shuffle, x.device)[:, None], _on(perms, x.device),
                            torch.arange(3, device=x.device).expand(n, 3))
        x = torch.gather(x, 1, order.view(n, 3, 1, 1).expand_as(x))
    if rgb and cfg.grayscale_p:
        x = torch.where(_on(grey, x.device).view(view), grey_of(x).expand_as(x), x)
    if cfg.gamma:
        x = x.clamp(0, 1).pow(log_gamma.exp().to(x).view(view))
    if cfg.noise_std:
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float32,
                            device=generator.device if generator is not None else None)
        x = x + cfg.noise_std * noise.to(x)
    return x.clamp_(0, 1)


def _whole_pixels(t: torch.Tensor, size: int, out: int) -> torch.Tensor:
    """A window's normalised centre offset ``t``, moved to the nearest one whose pixels fall on the input's (so an
    unzoomed, unrotated crop copies pixels exactly): the window's first pixel is then input pixel
    ``t * size / 2 + (size - out) / 2``, made whole."""
    first = torch.round(t * size / 2 + (size - out) / 2)
    return (2 * first - (size - out)) / size


def random_affine(images: torch.Tensor, masks: torch.Tensor, rotate_limit: float, hflip_p: float,
                  vflip_p: float, generator: torch.Generator | None = None,
                  scale_limit: float = 0.0, out_size: tuple[int, int] | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate each example by a random angle in [-rotate_limit, rotate_limit] degrees, zoom it by a factor drawn
    log-uniformly from [1 / (1 + scale_limit), 1 + scale_limit] and flip it horizontally / vertically with the given
    probabilities; image and mask get the same transform.

    Args:
        images: float (N, C, H, W).
        masks: integer class indices (N, H, W).
        generator: the generator of the draws (on the images' device, so that nothing is copied from the host),
            for reproducible draws.
        out_size: (width, height) of a random window of the warped frame to return (:attr:`DataConfig.crop`),
            placed uniformly where it fits inside the zoomed frame (else the frame lies uniformly inside it, the rest
            black with void masks); None: the whole frame.

    Returns:
        (images (N, C, H', W'), masks (N, H', W')) with the input dtypes; (H', W') is ``out_size``'s, else (H, W).
    """
    n, _, h, w = images.shape
    angle = (_rand(n, generator=generator) * 2 - 1) * math.radians(rotate_limit)
    sx = torch.where(_rand(n, generator=generator) < hflip_p, -1.0, 1.0)
    sy = torch.where(_rand(n, generator=generator) < vflip_p, -1.0, 1.0)
    zoom = torch.ones_like(angle)
    if scale_limit:  # drawn after the seed recipe's draws, which stay as they were
        zoom = torch.exp(_uniform(n, -math.log1p(scale_limit), math.log1p(scale_limit), generator))
        sx, sy = sx / zoom, sy / zoom  # sampling a smaller area of the input enlarges it
    if out_size is None:
        if rotate_limit == 0 and not scale_limit and hflip_p == 0 and vflip_p == 0:  # decided by the settings alone:
            return images, masks                                                      # no read-back of the draws
        ow, oh, tx, ty = w, h, torch.zeros_like(angle), torch.zeros_like(angle)
    else:  # the window's centre: uniform over the places where the window (of ow/zoom x oh/zoom input pixels)
        ow, oh = out_size                          # fits in the frame, or the frame in the window
        tx = _whole_pixels((_rand(n, generator=generator) * 2 - 1) * (1 - ow / (w * zoom)).abs(), w, ow)
        ty = _whole_pixels((_rand(n, generator=generator) * 2 - 1) * (1 - oh / (h * zoom)).abs(), h, oh)
        sx, sy = sx * (ow / w), sy * (oh / h)  # the window's extent in the input's normalised units
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Rotation in pixel space, written in affine_grid's normalised [-1, 1] coordinates (hence the aspect
    # ratio terms), composed with the flips: input_xy = R @ diag(sx, sy) @ output_xy + t.
    theta = torch.stack([torch.stack([cos * sx, -sin * sy * (h / w), tx], 1),
                         torch.stack([sin * sx * (w / h), cos * sy, ty], 1)], 1)
    grid = F.affine_grid(_on(theta, images.device).to(images.dtype), [n, 1, oh, ow], align_corners=False)
    if out_size is None:
        images = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        warped = F.grid_sample(masks[:, None].to(images.dtype), grid, mode="nearest", padding_mode="reflection",
                               align_corners=False)
        return images, warped[:, 0].round().to(masks.dtype)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # labels + 1, so that 0 marks the pixels outside the frame (void); exact in float32 for labels up to 255
    warped = F.grid_sample(masks[:, None].float() + 1, grid.float(), mode="nearest", padding_mode="zeros",
                           align_corners=False)[:, 0].round()
    return images, torch.where(warped == 0, IGNORE, warped - 1).to(masks.dtype)
