"""Any timm backbone with ``features_only`` and features at strides 2, 4, 8, 16 and 32 as a U-Net encoder
(``--encoder timm:NAME``). timm is an optional extra (``pip install timm``); its weights are its own (it finds them in
its caches or downloads them), handed over as a state dict like the other families' (unetseg.model.weights).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)
STRIDES = (2, 4, 8, 16, 32)


def import_timm() -> Any:
    """The timm module, or a one-line error saying how to install it."""
    try:
        import timm
    except ImportError:
        raise ValueError("--encoder timm:NAME needs timm, an optional extra: pip install timm") from None
    return timm


def create(name: str, in_channels: int = 3, pretrained: bool = False, file: str = "") -> nn.Module:
    """timm's ``features_only`` model of ``name`` with the stages at STRIDES.

    Raises:
        ValueError: unknown to timm, or without features at those strides.
    """
    timm = import_timm()
    if not timm.is_model(name.split(".")[0]):  # a tagged name (resnet18.a1_in1k) names its weights too
        close = timm.list_models(f"*{name}*")[:5]
        raise ValueError(f"--encoder timm:{name}: timm has no such model" + (f"; close: {', '.join(close)}" if close
                                                                           else " (timm.list_models() lists them)"))
    kwargs: dict[str, Any] = {"pretrained_cfg_overlay": {"file": file}} if file else {}
    probe = timm.create_model(name, features_only=True, pretrained=False)
    reductions = list(probe.feature_info.reduction())
    if not all(s in reductions for s in STRIDES):
        raise ValueError(f"--encoder timm:{name}: its features are at strides {reductions}; the U-Net needs "
                         f"{list(STRIDES)}")
    indices = tuple(reductions.index(s) for s in STRIDES)
    return timm.create_model(name, features_only=True, pretrained=pretrained or bool(file), in_chans=in_channels,
                             out_indices=indices, **kwargs)


class TimmEncoder(nn.Module):
    """A timm backbone's stages: (N, C, H, W), H and W multiples of 32 -> five features at strides 2..32."""

    head_keys: tuple[str, ...] = ()

    def __init__(self, name: str, in_channels: int = 3, model: nn.Module | None = None) -> None:
        super().__init__()
        self.model = model if model is not None else create(name, in_channels)
        self.channels = tuple(self.model.feature_info.channels())
        cfg = getattr(self.model, "pretrained_cfg", {}) or {}
        self.mean, self.std = tuple(cfg.get("mean", ())), tuple(cfg.get("std", ()))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.model(x))

    def conv_bn_pairs(self) -> list[tuple[nn.Module, str, str]]:
        """None: timm's blocks fuse their own norms and activations (``--encoder-bn fold`` leaves them, and says so)."""
        logger.warning("warning: --encoder-bn fold: timm encoders keep their batch norms (trained as --encoder-bn "
                       "train)")
        return []
