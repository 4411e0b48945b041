"""The U-Net decoder over an encoder's stages: from stride 32 up to the input's resolution, a skip at each stride."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class DecoderBlock(nn.Module):
    """Up-sample x2 (the seed's 2x2 transposed convolution, or nearest-neighbour), concatenate the skip (if any),
    then two 3x3 Conv -> BN -> ReLU.

    Shape:
        x: (N, c_in, h, w), skip: (N, c_skip, 2h, 2w) -> (N, c_out, 2h, 2w)
    """

    def __init__(self, c_in: int, c_skip: int, c_out: int, upsample: Literal["transposed", "nearest"]) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_in, 2, stride=2) if upsample == "transposed" else None
        self.conv = nn.Sequential(*_conv_bn_relu(c_in + c_skip, c_out), *_conv_bn_relu(c_out, c_out))

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = self.up(x) if self.up is not None else F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x if skip is None else torch.cat([x, skip], dim=1))


class Decoder(nn.Module):
    """Five :class:`DecoderBlock` s: the deepest feature (stride 32) up to stride 1, taking the skips at strides 16,
    8, 4 and 2 on the way.

    Args:
        encoder_channels: the encoder's channels at strides 2, 4, 8, 16, 32.
        channels: the blocks' output channels, deepest first (5 values).
        upsample: "transposed" (the seed's) or "nearest".

    Shape:
        features at strides 2..32 of an (N, C, H, W) input -> (N, channels[-1], H, W)
    """

    def __init__(self, encoder_channels: Sequence[int], channels: Sequence[int],
                 upsample: Literal["transposed", "nearest"] = "transposed") -> None:
        super().__init__()
        skips = list(reversed(encoder_channels[:-1])) + [0]  # strides 16, 8, 4, 2, then none at stride 1
        inputs = [encoder_channels[-1], *channels[:-1]]
        self.blocks = nn.ModuleList(DecoderBlock(i, s, o, upsample) for i, s, o in zip(inputs, skips, channels))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x, skips = features[-1], list(reversed(features[:-1])) + [None]
        for block, skip in zip(self.blocks, skips):
            x = block(x, skip)
        return x
