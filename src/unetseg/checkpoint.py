"""Saving and loading runs: ``config.json`` + ``model.safetensors`` (weights), ``last.pt`` (resume state)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from unetseg._atomic import atomic_path
from unetseg.config import RunConfig
from unetseg.model import UNet

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
BEST_FILE = "best.safetensors"
STATE_FILE = "last.pt"
SPLIT_FILE = "split.json"
METRICS_FILE = "metrics.jsonl"
RUN_INFO_FILE = "run_info.json"  # each session's device, precision and layout; the data check


class CheckpointError(ValueError):
    """A run folder or checkpoint that cannot be used; the message names the file."""


def read_split(run_dir: str | Path, which: str) -> list[str]:
    """The image file names of a run's ``"train"`` or ``"val"`` split (``split.json``).

    Raises:
        CheckpointError: naming the file when it is missing or not a split.
    """
    path = Path(run_dir) / SPLIT_FILE
    try:
        return list(json.loads(path.read_text())[which])
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not found (not a run folder, or a run that stopped before its split)") from None
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"{path}: not a split written by unetseg train (no {which!r} list)") from None


def save_weights(model: nn.Module, path: str | Path) -> None:
    """Write a model's weights (the unwrapped module's state dict) to safetensors, atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))


def load_model(run_dir: str | Path, device: str | torch.device = "cpu",
               weights: str = "final") -> tuple[UNet, RunConfig]:
    """Build the run's U-Net from its ``config.json`` and load its weights into it, in eval mode.

    Args:
        weights: "final": ``model.safetensors``, the weights at the end of training (during a run: those of the
            latest validation); "best": ``best.safetensors``, the best validation Dice.

    Raises:
        CheckpointError: when a file is missing or the weights do not fit the config (naming both).
    """
    run_dir = Path(run_dir)
    if weights not in ("final", "best"):
        raise ValueError(f"weights must be final or best, got {weights!r}")
    weights_file = WEIGHTS_FILE if weights == "final" else BEST_FILE
    for name in (CONFIG_FILE, weights_file):
        if not (run_dir / name).is_file():
            if name == BEST_FILE and (run_dir / WEIGHTS_FILE).is_file():
                raise CheckpointError(f"{run_dir / name}: not found: the run had no validation Dice to choose by "
                                      f"(no validation split, or nothing to find in it); use the final weights")
            raise CheckpointError(f"{run_dir / name}: not found; is {run_dir} a finished unetseg run?")
    config = RunConfig.load(run_dir / CONFIG_FILE)
    model = UNet(config.model)
    state = load_file(str(run_dir / weights_file))
    expected = model.state_dict()
    bad = [k for k in expected if k not in state or state[k].shape != expected[k].shape]
    if bad or len(state) != len(expected):
        key = bad[0] if bad else sorted(set(state) - set(expected))[0]
        got = tuple(state[key].shape) if key in state else "missing"
        want = tuple(expected[key].shape) if key in expected else "absent"
        raise CheckpointError(f"{run_dir / weights_file}: weights do not match {run_dir / CONFIG_FILE} "
                              f"({config.model}): {key} has shape {got}, the config needs {want}")
    model.load_state_dict(state)
    return model.to(device).eval(), config


def save_training_state(state: dict[str, Any], path: str | Path) -> None:
    """Write the resume state (tensors, numbers and strings only) atomically."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_training_state(path: str | Path) -> dict[str, Any]:
    """Read a resume state with ``weights_only=True``: a checkpoint can never run code.

    Raises:
        CheckpointError: when the file is missing or holds anything but tensors and plain values.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; nothing to resume")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - the unpickler raises many kinds
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: refused to load (not a plain weights checkpoint: {first})") from None
