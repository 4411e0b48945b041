"""Run state that makes training safe to stop: position, RNG states, signal handling."""

from __future__ import annotations

import math
import random
import signal
import threading
from dataclasses import dataclass

import numpy as np
import torch


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the step."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped training after the resume state was saved."""


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
    if torch.cuda.is_available():  # this process's GPU only: a resume may see fewer GPUs (or none)
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: dict) -> None:
    """Restore the global RNGs saved by :func:`rng_state`: on CUDA, the current GPU's where the saved state has one
    (a run saved where 8 GPUs were visible resumes where 1 is, or on the CPU)."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    saved = state.get("cuda")
    if saved is None or not torch.cuda.is_available():
        return
    if isinstance(saved, (list, tuple)):  # saved by a run before this one: every visible GPU's, in order
        index = torch.cuda.current_device()
        if index >= len(saved):
            return
        saved = saved[index]
    torch.cuda.set_rng_state(saved)  # the current GPU's; no augmentation draws from it, but a user's code may
