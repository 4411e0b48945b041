"""Batched augmentation and normalisation on the training device.

Rotation, zoom and both flips are one affine warp: a single ``affine_grid`` + ``grid_sample`` per batch, bilinear
for images and nearest for masks (so mask labels stay exact), reflection at the borders (as the seed's
albumentations ``Rotate`` does by default). On the CPU this costs well under 1% of a training step.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from unetseg.config import DataConfig

#: ITU-R BT.601 luma weights, as PIL's convert("L") uses.
_LUMA = (0.299, 0.587, 0.114)


def to_float(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 images (N, H, W, C) -> normalised float (N, C, H, W): ``(x / 255 - mean) / std``."""
    return normalise(images.permute(0, 3, 1, 2).float().div_(255.0), mean, std)


def normalise(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Float images (N, C, H, W) in [0, 1] -> ``(x - mean) / std``, in place."""
    mean_t = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return x.sub_(mean_t).div_(std_t)


def augment(images: torch.Tensor, masks: torch.Tensor, cfg: DataConfig,
            generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The training augmentation of a batch: the affine warp, then the photometric transforms, then normalisation.

    Args:
        images: uint8 (N, H, W, C) on the training device.
        masks: class indices (N, H, W).
        generator: the step's CPU generator; every draw comes from it (the affine ones first, so a config without
            photometric transforms draws exactly what it drew before they existed).

    Returns:
        (normalised float images (N, C, H, W), masks (N, H, W)).
    """
    x = to_float(images, (0.0,) * images.shape[-1], (1.0,) * images.shape[-1])
    x, masks = random_affine(x, masks, cfg.rotate_limit, cfg.hflip_p, cfg.vflip_p, generator=generator,
                             scale_limit=cfg.scale_limit)
    if cfg.photometric():
        x = photometric(x, cfg, generator)
    return normalise(x, cfg.mean, cfg.std), masks


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


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
    shuffle = torch.rand(n, generator=generator) < cfg.channel_shuffle_p
    perms = torch.argsort(torch.rand(n, 3, generator=generator), dim=1)
    grey = torch.rand(n, generator=generator) < cfg.grayscale_p
    noise_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    view = (n, 1, 1, 1)
    luma = torch.tensor(_LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1) if rgb else None

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
    if rgb and cfg.channel_shuffle_p and bool(shuffle.any()):
        order = torch.where(shuffle[:, None], perms, torch.arange(3).expand(n, 3)).to(x.device)
        x = torch.gather(x, 1, order.view(n, 3, 1, 1).expand_as(x))
    if rgb and cfg.grayscale_p and bool(grey.any()):
        x = torch.where(grey.to(x.device).view(view), grey_of(x).expand_as(x), x)
    if cfg.gamma:
        x = x.clamp(0, 1).pow(log_gamma.exp().to(x).view(view))
    if cfg.noise_std:
        noise_gen = torch.Generator(device=x.device).manual_seed(noise_seed)
        x = x + cfg.noise_std * torch.randn(x.shape, generator=noise_gen, device=x.device, dtype=x.dtype)
    return x.clamp_(0, 1)


def random_affine(images: torch.Tensor, masks: torch.Tensor, rotate_limit: float, hflip_p: float,
                  vflip_p: float, generator: torch.Generator | None = None,
                  scale_limit: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate each example by a random angle in [-rotate_limit, rotate_limit] degrees, zoom it by a factor drawn
    log-uniformly from [1 / (1 + scale_limit), 1 + scale_limit] and flip it horizontally / vertically with the given
    probabilities; image and mask get the same transform.

    Args:
        images: float (N, C, H, W).
        masks: integer class indices (N, H, W).
        generator: a CPU generator, for reproducible draws.

    Returns:
        (images (N, C, H, W), masks (N, H, W)) with the input dtypes.
    """
    n, _, h, w = images.shape
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(rotate_limit)
    sx = torch.where(torch.rand(n, generator=generator) < hflip_p, -1.0, 1.0)
    sy = torch.where(torch.rand(n, generator=generator) < vflip_p, -1.0, 1.0)
    if scale_limit:  # drawn after the seed recipe's draws, which stay as they were
        zoom = torch.exp(_uniform(n, -math.log1p(scale_limit), math.log1p(scale_limit), generator))
        sx, sy = sx / zoom, sy / zoom  # sampling a smaller area of the input enlarges it
    if rotate_limit == 0 and not scale_limit and bool((sx > 0).all()) and bool((sy > 0).all()):
        return images, masks
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Rotation in pixel space, written in affine_grid's normalised [-1, 1] coordinates (hence the aspect
    # ratio terms), composed with the flips: input_xy = R @ diag(sx, sy) @ output_xy.
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = cos * sx
    theta[:, 0, 1] = -sin * sy * (h / w)
    theta[:, 1, 0] = sin * sx * (w / h)
    theta[:, 1, 1] = cos * sy
    grid = F.affine_grid(theta.to(images.device, images.dtype), [n, 1, h, w], align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    warped = F.grid_sample(masks[:, None].to(images.dtype), grid, mode="nearest", padding_mode="reflection",
                           align_corners=False)
    return images, warped[:, 0].round().to(masks.dtype)
