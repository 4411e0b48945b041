"""The network: :class:`UNet` built from a :class:`~unetseg.config.UNetConfig`."""

from unetseg.model.unet import PRESETS, UNet

__all__ = ["UNet", "PRESETS"]
