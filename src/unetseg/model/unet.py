"""The U-Net of the seed: batch norm, same padding, transposed convolutions, skip connections; with a pretrained
encoder (``UNetConfig.encoder``), that encoder's stages under a U-Net decoder."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetseg.config import UNetConfig
from unetseg.model.blocks import ConvBlock, Down, Up, _exporting
from unetseg.model.decoder import Decoder
from unetseg.model.encoders import build_encoder

#: A pretrained encoder's deepest stage is at this stride: inputs are padded (inside the model) to a multiple of it.
ENCODER_STRIDE = 32

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
        encoder_state: a pretrained encoder's weights, checked and adapted to ``in_channels`` by
            :func:`unetseg.model.weights.encoder_state` (None: random, or loaded later with the whole model's).

    Shape:
        (N, in_channels, H, W) -> logits (N, num_classes, H, W)

    Example:
        >>> model = UNet(UNetConfig(base_channels=8))
        >>> model(torch.zeros(1, 3, 317, 479)).shape
        torch.Size([1, 1, 317, 479])
    """

    def __init__(self, config: UNetConfig | None = None, encoder_state: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.config = config = config or UNetConfig()
        if config.pretrained():
            self.encoder = build_encoder(config.encoder, config.in_channels)
            from unetseg.model.weights import fold_batch_norms, for_channels

            if encoder_state is not None:
                self.encoder.load_state_dict(for_channels(encoder_state, self.encoder.state_dict(),
                                                          config.in_channels, config.encoder, self._stem_bn()))
            if config.encoder_bn == "fold":
                fold_batch_norms(self.encoder)
            self.decoder = Decoder(self.encoder.channels, config.decoder_channels, config.decoder_upsample)
            self.head = nn.Conv2d(config.decoder_channels[-1], config.num_classes, kernel_size=1)
            return
        widths = [config.base_channels * 2**i for i in range(config.depth + 1)]
        self.stem = ConvBlock(config.in_channels, widths[0])
        self.downs = nn.ModuleList(Down(widths[i], widths[i + 1]) for i in range(config.depth))
        self.ups = nn.ModuleList(Up(widths[i + 1], widths[i]) for i in reversed(range(config.depth)))
        self.head = nn.Conv2d(widths[0], config.num_classes, kernel_size=1)

    def _stem_bn(self) -> str:
        """The state-dict prefix of the batch norm after the encoder's first convolution ("" where there is none)."""
        pairs = self.encoder.conv_bn_pairs() if hasattr(self.encoder, "conv_bn_pairs") and \
            not self.config.encoder.startswith("timm:") else []
        if not pairs:
            return ""
        parent, _, bn = pairs[0]
        names = {id(m): n for n, m in self.encoder.named_modules()}
        return names.get(id(getattr(parent, bn)), "")

    def train(self, mode: bool = True) -> UNet:
        """As nn.Module's; a pretrained encoder with ``encoder_bn="frozen"`` keeps its batch norms in eval mode."""
        super().train(mode)
        if mode and self.config.pretrained() and self.config.encoder_bn == "frozen":
            for m in self.encoder.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.pretrained():
            return self._forward_encoder(x)
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

    def _forward_encoder(self, x: torch.Tensor) -> torch.Tensor:
        """Pad (bottom, right) to a multiple of the encoder's stride, decode, crop back: any input size."""
        height, width = x.shape[-2:]
        pad_h, pad_w = (-height) % ENCODER_STRIDE, (-width) % ENCODER_STRIDE
        exporting = _exporting()  # an exported graph serves every size: it always pads and crops
        if pad_h or pad_w or exporting:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        y = self.head(self.decoder(self.encoder(x)))
        return y[..., :height, :width] if pad_h or pad_w or exporting else y
