"""FLOP counting for throughput figures (benchmarks, MFU)."""

from __future__ import annotations

import torch
from torch import nn


def conv_flops(model: nn.Module, shape: tuple[int, ...]) -> float:
    """Forward FLOPs (2 x multiply-adds) of the model's Conv2d / ConvTranspose2d layers for one input of
    ``shape`` (C, H, W); BN, ReLU, pooling and resizing are left out, as is usual."""
    total = 0.0

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1]
        if isinstance(module, nn.ConvTranspose2d):  # every input pixel meets every kernel tap
            total += 2.0 * inputs[0][0].numel() * module.out_channels // module.groups * k
        else:  # a grouped (depthwise) convolution sees in_channels / groups inputs per output
            total += 2.0 * output[0].numel() * module.in_channels // module.groups * k
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *shape))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total
