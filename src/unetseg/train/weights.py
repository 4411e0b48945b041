"""The weights a run saves: an exponential moving average of the training weights, and batch-norm statistics
recomputed on the training images for the weights that are saved (as PreciseBN in fvcore and
``torch.optim.swa_utils.update_bn`` do), so the running statistics fit the weights and the images they will see."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch
from torch import nn

from unetseg.data.dataset import ArrayDataset
from unetseg.data.transforms import to_float


class WeightAverage:
    """An exponential moving average of a model's floating-point parameters (buffers are copied): after step t the
    average moves towards the weights by ``1 - min(decay, (1 + t) / (10 + t))``, so early steps are not frozen in.

    Args:
        model: the training model (the unwrapped module).
        decay: e.g. 0.999.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self._model = model
        self._float_keys = [k for k, _ in model.named_parameters()]

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Fold in the model's current weights after optimiser step ``step`` (0-based)."""
        d = min(self.decay, (1 + step) / (10 + step))
        current = self._model.state_dict()
        avg = [self.state[k] for k in self._float_keys]
        torch._foreach_lerp_(avg, [current[k].detach() for k in self._float_keys], 1.0 - d)
        for k, v in current.items():
            if k not in self._float_keys:
                self.state[k].copy_(v)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for k, v in state.items():
            self.state[k].copy_(v)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, data: ArrayDataset, mean: tuple[float, ...], std: tuple[float, ...],
                   device: torch.device, batch_size: int, limit: int, layout: torch.memory_format,
                   dtype: torch.dtype | None = None, crop: tuple[int, int] | None = None) -> None:
    """Recompute every BatchNorm layer's running mean and variance as the plain average over up to ``limit`` training
    images (evenly spaced, un-augmented, in batches of ``batch_size``); leaves the model in eval mode. With ``crop``
    (width, height), one crop of each image at a seeded corner, as a patch run trains."""
    model.train()  # norms a model keeps in eval mode in training (a frozen encoder's) keep their statistics
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    if not norms or len(data) == 0:
        model.eval()
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
    positions = np.unique(np.linspace(0, len(data) - 1, min(limit, len(data))).round().astype(np.int64))
    for start in range(0, len(positions), batch_size):
        images, _ = data.take(positions[start:start + batch_size])
        if crop is not None:
            images = _crops(images, crop, np.random.default_rng(start))
        x = to_float(torch.from_numpy(images).to(device), mean, std).contiguous(memory_format=layout)
        with torch.autocast(device.type, dtype=dtype) if dtype else nullcontext():
            model(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


def _crops(images: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """One (height, width) = ``size[::-1]`` crop of each of ``images`` (N, H, W, C) at a corner drawn from ``rng``."""
    width, height = min(size[0], images.shape[2]), min(size[1], images.shape[1])
    ys = rng.integers(0, images.shape[1] - height + 1, len(images))
    xs = rng.integers(0, images.shape[2] - width + 1, len(images))
    return np.stack([image[y:y + height, x:x + width] for image, y, x in zip(images, ys, xs)])
