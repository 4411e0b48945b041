"""One training step: the batch split into even micro-batches, gradients accumulated over them (DDP all-reduces on
the last backward only), scaled under fp16, one optimiser step. Nothing is read back to the host."""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch


class TrainStep:
    """One optimiser step of ``forward`` (the model, or its DDP / compiled wrapper).

    Args:
        forward: what the batch goes through.
        optimizer, scaler: the optimiser and the fp16 gradient scaler (disabled in other precisions).
        loss_fn: logits, masks -> loss.
        micro: the most images per forward/backward.
        dtype: the autocast dtype, None for fp32.
        layout: the activations' memory format.
        distributed: whether ``forward`` is DDP (which has ``no_sync``).
    """

    def __init__(self, forward: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                 loss_fn: torch.nn.Module, micro: int, dtype: torch.dtype | None, layout: torch.memory_format,
                 distributed: bool) -> None:
        self.forward, self.optimizer, self.scaler, self.loss_fn = forward, optimizer, scaler, loss_fn
        self.micro, self.dtype, self.layout, self.distributed = micro, dtype, layout, distributed

    def __call__(self, x: torch.Tensor, y: torch.Tensor, share: float) -> torch.Tensor:
        """Train on ``x`` (N, C, H, W) and ``y`` (N, H, W); return the loss (a device scalar, weighted by ``share``,
        this process's part of the global batch, as DDP averages the processes' gradients)."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = torch.zeros((), device=x.device)
        parts = math.ceil(len(x) / self.micro)  # even parts: 16 by at most 3 is 3,3,3,3,2,2, never a part of 1
        chunks = list(zip(x.tensor_split(parts), y.tensor_split(parts)))
        device_type = x.device.type
        for i, (xm, ym) in enumerate(chunks):  # gradient accumulation over micro-batches
            sync = i == len(chunks) - 1 or not self.distributed  # DDP all-reduces on the last backward only
            with nullcontext() if sync else self.forward.no_sync():
                with torch.autocast(device_type, dtype=self.dtype) if self.dtype else nullcontext():
                    part = self.loss_fn(self.forward(xm.contiguous(memory_format=self.layout)), ym) * (
                        len(xm) / len(x) * share)
                self.scaler.scale(part).backward()
            loss += part.detach()
        self.scaler.step(self.optimizer)  # skipped by the scaler itself when fp16 gradients overflowed
        self.scaler.update()
        return loss
