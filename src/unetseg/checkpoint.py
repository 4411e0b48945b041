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
FOLDS_FILE = "folds.json"  # a cross-validation run: its folds (RUN/fold_N are runs of their own)
FINISHED_FILE = "finished.json"  # in RUN/fold_N: the fold trained to its end


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


def is_cv_run(run_dir: str | Path) -> bool:
    """True when ``run_dir`` is a cross-validation run (``unetseg train --folds K``): its folds are runs of their
    own in ``RUN/fold_N``."""
    return (Path(run_dir) / FOLDS_FILE).is_file()


def fold_dir(run_dir: str | Path, fold: int) -> Path:
    """The run folder of fold ``fold`` of a cross-validation run."""
    return Path(run_dir) / f"fold_{fold}"


def cv_folds(run_dir: str | Path) -> int:
    """The number of folds of a cross-validation run (its ``folds.json``)."""
    path = Path(run_dir) / FOLDS_FILE
    try:
        return int(json.loads(path.read_text())["folds"])
    except (OSError, ValueError, KeyError, TypeError):
        raise CheckpointError(f"{path}: not a folds file written by unetseg train --folds") from None


def finished_folds(run_dir: str | Path) -> list[int]:
    """The folds of a cross-validation run that trained to their end."""
    return [k for k in range(cv_folds(run_dir)) if (fold_dir(run_dir, k) / FINISHED_FILE).is_file()]


def load_model(run_dir: str | Path, device: str | torch.device = "cpu", weights: str = "final",
               folds: list[int] | None = None) -> tuple[nn.Module, RunConfig]:
    """Build the run's U-Net from its ``config.json`` and load its weights into it, in eval mode. A
    cross-validation run gives its folds' models as one :class:`~unetseg.model.ensemble.FoldEnsemble` (the mean
    of their logits) with the first fold's config.

    Args:
        weights: "final": ``model.safetensors``, the weights at the end of training (during a run: those of the
            latest validation); "best": ``best.safetensors``, the best validation Dice.
        folds: a cross-validation run's folds to use (None: all of them).

    Raises:
        CheckpointError: when a file is missing, a fold is missing or unfinished (naming the folds there are), or
            the weights do not fit the config (naming both).
    """
    run_dir = Path(run_dir)
    if is_cv_run(run_dir):
        return _load_folds(run_dir, device, weights, folds)
    if folds is not None:
        raise CheckpointError(f"--folds {' '.join(map(str, folds))}: {run_dir} is not a cross-validation run "
                              f"(no {FOLDS_FILE}; unetseg train --folds K makes one)")
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


def _load_folds(run_dir: Path, device: str | torch.device, weights: str, folds: list[int] | None
                ) -> tuple[nn.Module, RunConfig]:
    from unetseg.model.ensemble import FoldEnsemble

    k, done = cv_folds(run_dir), finished_folds(run_dir)
    wanted = list(range(k)) if folds is None else list(folds)
    if len(set(wanted)) != len(wanted):
        raise CheckpointError(f"--folds {' '.join(map(str, wanted))}: a fold is named twice")
    for fold in wanted:
        if not 0 <= fold < k:
            raise CheckpointError(f"--folds {' '.join(map(str, wanted))}: {run_dir} has folds 0 to {k - 1}")
        if fold not in done:
            raise CheckpointError(
                f"{fold_dir(run_dir, fold)}: fold {fold} of {k} has not finished training (finished: "
                f"{', '.join(map(str, done)) or 'none'}); train it (unetseg train --resume {run_dir}, or --fold "
                f"{fold}) or predict with the finished ones (--folds {' '.join(map(str, done)) or 'N'})")
    models, configs = zip(*(load_model(fold_dir(run_dir, fold), device, weights) for fold in wanted))
    first = configs[0]
    for fold, config in zip(wanted[1:], configs[1:]):  # one input and one output for all
        for name, a, b in (("size", first.data.image_size, config.data.image_size),
                           ("normalisation", (first.data.mean, first.data.std), (config.data.mean, config.data.std)),
                           ("classes", first.model.num_classes, config.model.num_classes),
                           ("channels", first.model.in_channels, config.model.in_channels)):
            if a != b:
                raise CheckpointError(f"{fold_dir(run_dir, fold)}: its {name} {b} differs from fold {wanted[0]}'s "
                                      f"{a}: the folds of one run cannot be averaged")
    first.data.fold = None
    return (models[0] if len(models) == 1 else FoldEnsemble(list(models))).to(device).eval(), first


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
