"""The U-Net's building blocks: small modules with one job each."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvBlock(nn.Sequential):
    """Two (Conv3x3 same padding, no bias) -> BatchNorm -> ReLU layers.

    Shape:
        (N, in_channels, H, W) -> (N, out_channels, H, W)
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class Down(nn.Sequential):
    """MaxPool 2x2 then a :class:`ConvBlock`: (N, C_in, H, W) -> (N, C_out, H // 2, W // 2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.MaxPool2d(2), ConvBlock(in_channels, out_channels))


class Up(nn.Module):
    """Transposed conv 2x2 stride 2, concatenation with the encoder's skip, then a :class:`ConvBlock`.

    When the up-sampled map and the skip differ in size (inputs not divisible by ``2**depth``), the
    up-sampled map is resized (bilinear) to the skip's size before the concatenation.

    Shape:
        x: (N, in_channels, h, w), skip: (N, in_channels // 2, H, W) -> (N, out_channels, H, W)
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)
        self.conv = ConvBlock(in_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        # An exported graph serves every input size, so it always resizes (an identity when the sizes agree).
        if x.shape[-2:] != skip.shape[-2:] or _exporting():
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([skip, x], dim=1))


#: torch.export's flag (torch 2.7+); before it, torch.compile's, which export sets too (a compiled graph then resizes
#: where the sizes agree: an identity).
_exporting = getattr(torch.compiler, "is_exporting", torch.compiler.is_compiling)
