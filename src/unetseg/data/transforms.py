"""Batched augmentation and normalisation on the training device.

Rotation and both flips are one affine warp: a single ``affine_grid`` + ``grid_sample`` per batch, bilinear
for images and nearest for masks (so mask labels stay exact), reflection at the borders (as the seed's
albumentations ``Rotate`` does by default). On the CPU this costs well under 1% of a training step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def to_float(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 images (N, H, W, C) -> normalised float (N, C, H, W): ``(x / 255 - mean) / std``."""
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    mean_t = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return x.sub_(mean_t).div_(std_t)


def random_affine(images: torch.Tensor, masks: torch.Tensor, rotate_limit: float, hflip_p: float,
                  vflip_p: float, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate each example by a random angle in [-rotate_limit, rotate_limit] degrees and flip it
    horizontally / vertically with the given probabilities; image and mask get the same transform.

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
    if rotate_limit == 0 and bool((sx > 0).all()) and bool((sy > 0).all()):
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
