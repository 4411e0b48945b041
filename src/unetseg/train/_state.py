"""Run state that makes training safe to stop: position, RNG states, signal handling, checked losses."""

from __future__ import annotations

import json
import math
import random
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from unetseg.checkpoint import STATE_FILE


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the step."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped training after the resume state was saved."""


class LossLog:
    """Step losses kept on the device and read back in one sync every ``sync_every`` steps (on CPUs every step,
    where reading is free), so a CUDA step never waits for the host; every loss is checked before any save."""

    def __init__(self, out: Path, sync_every: int, reduce: Callable[[torch.Tensor], torch.Tensor] = lambda t: t) -> None:
        self.out, self.sync_every, self.reduce = out, sync_every, reduce
        self.pending: list[tuple[int, torch.Tensor, int]] = []
        self.last = math.nan

    def __len__(self) -> int:
        return len(self.pending)

    def append(self, step: int, loss: torch.Tensor, n: int) -> None:
        self.pending.append((step, loss, n))

    def flush(self, epoch: int) -> float:
        """Check the pending losses; return their sum weighted by batch size.

        Raises:
            NonFiniteLossError: naming the first step whose loss is NaN or infinite.
        """
        if not self.pending:
            return 0.0
        values = self.reduce(torch.stack([loss for _, loss, _ in self.pending])).tolist()  # the mean over processes
        total = 0.0
        for (step, _, n), value in zip(self.pending, values):
            if not math.isfinite(value):
                raise NonFiniteLossError(f"{self.out}: loss is {value} at epoch {epoch + 1}, step {step + 1}; stopped, "
                                         f"{STATE_FILE} keeps the last good state (try a lower --lr)")
            total += value * n
        self.pending.clear()
        self.last = values[-1]
        return total


@dataclass
class Position:
    """Where training is: the next (epoch, step) to run, the loss sum of the epoch so far, the best score."""

    epoch: int = 0
    step: int = 0
    loss_sum: float = 0.0
    best: float = -math.inf


class StopOnSignal:
    """Records SIGINT / SIGTERM instead of dying, so the loop can save its state first (main thread only)."""

    def __init__(self) -> None:
        self.requested: int = 0
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = signum

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def rng_state() -> dict:
    """The global RNG states (Python, NumPy, torch, CUDA) as plain values ``torch.load(weights_only=True)`` reads."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": [name, keys.tolist(), pos, has_gauss, cached],
             "python": list(random.getstate())}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    """Restore the global RNGs saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def truncate_metrics(path: Path, epochs_done: int) -> None:
    """Keep the metrics lines of finished epochs only (a kill may have come after a line, before the save)."""
    if path.is_file():
        lines = [line for line in path.read_text().splitlines() if json.loads(line)["epoch"] <= epochs_done]
        path.write_text("".join(line + "\n" for line in lines))
