"""ResNet-18, 34 and 50 (He et al. 2016; torchvision's v1.5: the stride in the 3x3 convolution of a bottleneck) as
a U-Net encoder, in torchvision's state-dict layout (``conv1``, ``bn1``, ``layer1.0.conv1`` ...), so the files that
torchvision and timm publish for them load as they are. The classifier (``fc``) is left out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: (block kind, blocks per layer) of each variant.
VARIANTS = {"resnet18": ("basic", (2, 2, 2, 2)), "resnet34": ("basic", (3, 4, 6, 3)),
            "resnet50": ("bottleneck", (3, 4, 6, 3))}
HEAD_KEYS = ("fc.",)


def _conv(c_in: int, c_out: int, k: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a residual. (N, C_in, H, W) -> (N, C_out, H / stride, W / stride)."""

    expansion = 1

    def __init__(self, c_in: int, width: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv(c_in, width, 3, stride), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = _conv(width, width, 3), nn.BatchNorm2d(width)
        self.downsample = _shortcut(c_in, width, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (self.downsample(x) if self.downsample is not None else x))

    def conv_bn_pairs(self) -> list[tuple[nn.Module, str, str]]:
        pairs: list[tuple[nn.Module, str, str]] = [(self, "conv1", "bn1"), (self, "conv2", "bn2")]
        return pairs + ([(self.downsample, "0", "1")] if self.downsample is not None else [])


class Bottleneck(nn.Module):
    """1x1, 3x3 (strided), 1x1 x4 convolutions with batch norm and a residual."""

    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv(c_in, width, 1), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = _conv(width, width, 3, stride), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = _conv(width, width * 4, 1), nn.BatchNorm2d(width * 4)
        self.downsample = _shortcut(c_in, width * 4, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (self.downsample(x) if self.downsample is not None else x))

    def conv_bn_pairs(self) -> list[tuple[nn.Module, str, str]]:
        pairs: list[tuple[nn.Module, str, str]] = [(self, "conv1", "bn1"), (self, "conv2", "bn2"),
                                                   (self, "conv3", "bn3")]
        return pairs + ([(self.downsample, "0", "1")] if self.downsample is not None else [])


def _shortcut(c_in: int, c_out: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and c_in == c_out:
        return None
    return nn.Sequential(_conv(c_in, c_out, 1, stride), nn.BatchNorm2d(c_out))


class ResNet(nn.Module):
    """The stages of a ResNet: (N, C, H, W) with H, W multiples of 32 -> five features at strides 2 (after the 7x7
    stem), 4, 8, 16 and 32 (layer1..layer4) with :attr:`channels` channels.

    Example:
        >>> [f.shape[1] for f in ResNet("resnet18")(torch.zeros(1, 3, 64, 64))]
        [64, 64, 128, 256, 512]
    """

    head_keys = HEAD_KEYS

    def __init__(self, name: str, in_channels: int = 3) -> None:
        super().__init__()
        kind, counts = VARIANTS[name]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.conv1, self.bn1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
        c_in, layers = 64, []
        for i, count in enumerate(counts):
            width = 64 * 2**i
            blocks = [block(c_in if j == 0 else width * block.expansion, width, 2 if i and j == 0 else 1)
                      for j in range(count)]
            c_in = width * block.expansion
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.channels = (64, *(64 * 2**i * block.expansion for i in range(4)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        stem = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(stem, 3, 2, 1)
        features = [stem]
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            features.append(x)
        return features

    def conv_bn_pairs(self) -> list[tuple[nn.Module, str, str]]:
        """Every (parent module, convolution name, batch norm name), for folding the norms into the convolutions."""
        pairs: list[tuple[nn.Module, str, str]] = [(self, "conv1", "bn1")]
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in layer:
                pairs += block.conv_bn_pairs()
        return pairs
