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


def activation_elements(model: nn.Module, shape: tuple[int, ...] = (3, 64, 64)) -> float:
    """Elements of the outputs of the model's convolutions, batch norms and activations, per input pixel, for one
    input of ``shape`` (C, H, W): what its training activations take, relative to another model's. Memory estimates
    read it from the model that is built, so an encoder's width counts and ``base_channels`` (which it ignores)
    does not."""
    total = 0

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += output[0].numel()
    kinds = (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.SiLU)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    was_training = model.training
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *shape, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total / (shape[1] * shape[2])
