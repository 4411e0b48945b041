"""The per-step controller: every decision a training step may lead to (check the losses, save a checkpoint, stop on a
signal, re-plan a budget run's step count) is taken at fixed steps, the same on every process, from one small
tensor that one all-reduce shares.

Why: under torchrun a decision taken by each process from its own state (its clock, whether its progress bar is on
a terminal, how long its last save took) sends the processes down different paths: one waits in a collective while
another is in DDP's gradient all-reduce, and the job hangs until the process-group timeout. Here the steps on which
decisions are taken are fixed (every ``every`` steps and at each epoch's end), and what rank 0 alone knows (its
checkpoint clock, the budget clock) travels in the same tensor as the losses and every process's signal flag.

On a GPU this is also the only point where the host waits for the device: once every ``every`` steps.
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from unetseg.checkpoint import STATE_FILE
from unetseg.train._state import NonFiniteLossError
from unetseg.train.distributed import World

#: Steps between decisions on a GPU: the host reads the device back once per this many steps.
GPU_EVERY = 16


def decision_interval(setting: int, device: torch.device) -> int:
    """Steps between decisions: the setting (``TrainConfig.sync_every``), or 0 for automatic: every step on the CPU
    (where reading a loss costs nothing), every GPU_EVERY steps elsewhere."""
    if setting > 0:
        return setting
    return 1 if device.type == "cpu" else GPU_EVERY


@dataclass
class Decision:
    """What all processes do after a decision step."""

    loss_sum: float = 0.0  # the steps' losses (averaged over the processes), weighted by their batch sizes
    last_loss: float = math.nan
    stop: int = 0  # a signal number: save and stop
    save: bool = False  # write the resume state now
    total: int = 0  # a new step count for the run (0: unchanged)


@dataclass
class StepControl:
    """Collects each step's loss on the device and takes the decisions every ``every`` steps.

    Args:
        world: the processes.
        device: the training device.
        every: steps between decisions (:func:`decision_interval`).
        out: the run folder (named in errors).
    """

    world: World
    device: torch.device
    every: int
    out: Path
    pending: list[tuple[int, torch.Tensor, int]] = field(default_factory=list)
    mark: float = field(default_factory=time.perf_counter)  # when the interval being timed began
    steps_since: int = 0

    def __post_init__(self) -> None:
        # the host-side flags, pinned on a GPU so that their copy does not wait
        self._flags = torch.zeros(3, dtype=torch.float64)
        if self.device.type == "cuda":
            self._flags = self._flags.pin_memory()

    def append(self, step: int, loss: torch.Tensor, n: int) -> None:
        """Keep a step's loss (a device scalar, not read) and the images of its global batch."""
        self.pending.append((step, loss, n))
        self.steps_since += 1

    def due(self, global_step: int, last_of_epoch: bool) -> bool:
        """Whether the step just run (0-based ``global_step``) is a decision step: the same answer on every process."""
        return (global_step + 1) % self.every == 0 or last_of_epoch

    def decide(self, epoch: int, stop: int, save: bool, total: int) -> Decision:
        """The decision of this step, the same on every process: one all-reduce, one read back.

        Args:
            epoch: 0-based, for messages.
            stop: this process's pending signal (0: none).
            save: rank 0's wish to write the resume state (ignored on other ranks).
            total: rank 0's new step count (0: none; ignored on other ranks).

        Raises:
            NonFiniteLossError: on every process alike, naming the first step whose loss is NaN or infinite.
        """
        main = self.world.is_main
        self._flags[0], self._flags[1], self._flags[2] = float(stop > 0), float(save and main), float(total * main)
        flags = self._flags.to(self.device, non_blocking=True)
        losses = [loss.detach().double().reshape(1) for _, loss, _ in self.pending]
        values = self.world.sum(torch.cat([*losses, flags])).tolist()  # the host waits here, once per decision
        n = len(self.pending)
        decision = Decision(stop=(stop or signal.SIGTERM) if values[n] > 0 else 0, save=values[n + 1] > 0,
                            total=int(values[n + 2]))
        for (step, _, images), value in zip(self.pending, values[:n]):
            value /= self.world.size
            if not math.isfinite(value):
                raise NonFiniteLossError(f"{self.out}: loss is {value} at epoch {epoch + 1}, step {step + 1}; "
                                         f"stopped, {STATE_FILE} keeps the last good state (try a lower --lr)")
            decision.loss_sum += value * images
            decision.last_loss = value
        self.pending.clear()
        return decision

    def exclude(self, seconds: float) -> None:
        """Leave ``seconds`` spent elsewhere (a validation) out of the interval being timed."""
        self.mark += seconds

    def interval(self) -> tuple[float, int]:
        """Seconds and steps since the last call; exact after :meth:`decide`, which has waited for the device (time
        spent elsewhere, e.g. validating, is taken out by moving ``mark`` on)."""
        now = time.perf_counter()
        seconds, steps = now - self.mark, self.steps_since
        self.mark, self.steps_since = now, 0
        return seconds, steps
