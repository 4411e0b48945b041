"""The U-Net of the seed: batch norm, same padding, transposed convolutions, skip connections."""

from __future__ import annotations

import torch
from torch import nn

from unetseg.config import UNetConfig
from unetseg.model.blocks import ConvBlock, Down, Up

#: Named sizes. "seed" is the model of the spec (31,037,633 parameters with 3 channels in, 1 class out).
PRESETS: dict[str, UNetConfig] = {
    "seed": UNetConfig(),
    "small": UNetConfig(base_channels=16),
    "tiny": UNetConfig(base_channels=8),
}


class UNet(nn.Module):
    """U-Net (Ronneberger et al. 2015) with batch norm and same padding; any input of at least
    ``2**depth`` pixels a side gives an output of the input's own height and width.

    Args:
        config: the architecture; ``UNetConfig()`` is the seed's model.

    Shape:
        (N, in_channels, H, W) -> logits (N, num_classes, H, W)

    Example:
        >>> model = UNet(UNetConfig(base_channels=8))
        >>> model(torch.zeros(1, 3, 317, 479)).shape
        torch.Size([1, 1, 317, 479])
    """

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or UNetConfig()
        widths = [config.base_channels * 2**i for i in range(config.depth + 1)]
        self.stem = ConvBlock(config.in_channels, widths[0])
        self.downs = nn.ModuleList(Down(widths[i], widths[i + 1]) for i in range(config.depth))
        self.ups = nn.ModuleList(Up(widths[i + 1], widths[i]) for i in reversed(range(config.depth)))
        self.head = nn.Conv2d(widths[0], config.num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        min_side = 2**self.config.depth
        if x.shape[-1] < min_side or x.shape[-2] < min_side:
            raise ValueError(f"UNet of depth {self.config.depth} needs inputs of at least {min_side}x{min_side}, "
                             f"got {tuple(x.shape[-2:])} (H, W)")
        skips = [self.stem(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        x = skips.pop()  # bottleneck: (N, base * 2**depth, H / 2**depth, W / 2**depth)
        for up in self.ups:
            x = up(x, skips.pop())
        return self.head(x)
