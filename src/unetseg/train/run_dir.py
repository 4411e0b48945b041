"""The run folder: made or reused (``--resume``, ``--resume auto``, ``--overwrite``, a run that failed before its
first checkpoint started afresh), the records of each session, and the metrics a resumed run rolls back. Rank 0
writes; the other processes wait at a barrier where they would read."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from unetseg._atomic import atomic_write_text
from unetseg._device import device_name
from unetseg.checkpoint import (BEST_FILE, CONFIG_FILE, FOLDS_FILE, METRICS_FILE, RUN_INFO_FILE, SPLIT_FILE, STATE_FILE,
                                WEIGHTS_FILE, CheckpointError)
from unetseg.config import RunConfig
from unetseg.data.node_cache import cache_prefix
from unetseg.drawing.curves import CURVES_FILE
from unetseg.train.trackers import TRACKER_FILES
from unetseg.train._state import Position
from unetseg.train.distributed import World

logger = logging.getLogger(__name__)


#: Files a run writes before its first last.pt (config, split, log, and the weights and curves of a first validation
#: killed before the state); a folder holding nothing else never started training.
_PRE_START_FILES = {CONFIG_FILE, SPLIT_FILE, "train.log", METRICS_FILE, RUN_INFO_FILE, WEIGHTS_FILE, BEST_FILE,
                    CURVES_FILE, *TRACKER_FILES}


class RunLog(logging.FileHandler):
    """The run's train.log: records before the run folder exists (a refused start) go to the console only."""

    def emit(self, record: logging.LogRecord) -> None:
        if self.stream is None and not Path(self.baseFilename).parent.is_dir():
            return
        super().emit(record)


def _never_started(out: Path) -> bool:
    """True when ``out`` holds only what a run writes before its first saved state (a run that failed early, e.g.
    on a typo in --data), so the corrected command may start afresh there. Its train.log tells it from a folder
    holding only a config.json the user wrote; a folder holding only a run's caches (a process killed while
    decoding) counts too."""
    files = list(out.iterdir())
    caches = [p for p in files if (p.name.startswith(".") and p.suffix in (".tmp", ".npy"))
              or p.name.startswith(".cache-")]
    ours = all(p in caches or p.name in _PRE_START_FILES for p in files)
    return ours and ((out / "train.log").is_file() or len(caches) == len(files))


def resume_or_start(out_dir: str | Path) -> bool:
    """``--resume auto``: True where ``out_dir`` holds a run to resume (its ``last.pt``), False where it is absent or
    empty or holds a run that stopped before its first checkpoint (start afresh). The way to run under
    ``torchrun --max-restarts``, on preemptible machines and in job schedulers that run a command again.

    Raises:
        CheckpointError: when the folder holds anything else.
    """
    out = Path(out_dir)
    if (out / STATE_FILE).is_file() or (out / FOLDS_FILE).is_file():  # a run, or a cross-validation run
        return True
    if not out.exists() or not any(out.iterdir()) or _never_started(out):
        return False
    raise CheckpointError(f"{out}: --resume auto: the folder holds files but no {STATE_FILE}, so neither a run to "
                          f"resume nor an empty folder; give another --out, or --overwrite to replace it")


def prepare_run_dir(out_dir: str | Path, resume: bool, overwrite: bool, world: World = World()) -> Path:
    """Create the run folder; a folder that already holds a run is only reused with resume or overwrite. A folder
    left by a run that failed before saving any state (only its log, config or split) is started afresh.

    Raises:
        CheckpointError: when ``out_dir`` holds files and neither flag is given (on every process alike).
    """
    out = Path(out_dir)
    restart = out.is_dir() and any(out.iterdir()) and not resume and not overwrite and _never_started(out)
    if out.exists() and any(out.iterdir()) and not resume and not overwrite and not restart:
        raise CheckpointError(f"{out}: folder is not empty; pass --resume to continue the run there or "
                              f"--overwrite to replace it")
    if resume and not (out / STATE_FILE).is_file():
        raise CheckpointError(f"{out / STATE_FILE}: not found, nothing to resume"
                              + ("; the run stopped before its first checkpoint: start it again with --out"
                                 if out.is_dir() else ""))
    world.barrier()  # every process has looked before the main one changes anything
    if world.is_main:
        if overwrite and not resume and out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        if restart:  # the log stays, and tells both attempts
            for name in _PRE_START_FILES - {"train.log"}:
                if (out / name).is_dir():  # a tracker's folder (tensorboard/, mlruns/, wandb/)
                    shutil.rmtree(out / name)
                else:
                    (out / name).unlink(missing_ok=True)
            logger.info("%s: a run that stopped before its first checkpoint; starting afresh", out)
        for stale in out.glob(".*.tmp"):  # left by a kill during an atomic write
            stale.unlink()
    world.barrier()
    return out


def truncate_metrics(path: Path, epochs_done: int, world: World = World()) -> None:
    """Keep the metrics lines of finished epochs only (a kill may have come after a line, before the save). Rank 0
    rewrites the file atomically; the others wait, so none reads a half-written line."""
    if world.is_main and path.is_file():
        lines = [line for line in path.read_text().splitlines() if json.loads(line)["epoch"] <= epochs_done]
        atomic_write_text(path, "".join(line + "\n" for line in lines))
    world.barrier()


def process_cache(cfg: RunConfig, out: Path, world: World) -> Path:
    """The memory-mapped image cache of one process (``--cache disk``), named after the run and the rank."""
    return (Path(cfg.data.cache_dir) if cfg.data.cache_dir else out) / f"{cache_prefix(out)}-images-{world.rank}.npy"


def record_session(out: Path, check: str, ceiling: dict[str, Any] | None, device: torch.device, dtype: torch.dtype | None,
                    layout: torch.memory_format, processes: int, n_params: int, pos: Position,
                    encoder: dict[str, str] | None = None) -> None:
    """Add this session (the first, or a resume) to ``RUN/run_info.json``: where and how it ran, the data check, and
    (``encoder``, the first session's) the pretrained encoder and where its weights came from.
    A failure is logged, never raised: the record must not stop a run."""
    from unetseg import __version__

    path = out / RUN_INFO_FILE
    try:
        try:
            info = json.loads(path.read_text()) if path.is_file() else {}
        except json.JSONDecodeError:
            info = {}
        here = [pos.epoch, pos.step]  # sessions that started later than this resume point were rolled back
        sessions = [s for s in info.get("sessions", []) if [s.get("from_epoch", 0), s.get("from_step", 0)] < here]
        sessions.append({"started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "from_epoch": pos.epoch,
                         "from_step": pos.step, "device": device_name(device),
                         "precision": str(dtype or torch.float32).removeprefix("torch."),
                         "memory_format": str(layout).removeprefix("torch."), "processes": processes,
                         "parameters": n_params, "torch": torch.__version__, "unetseg": __version__})
        record = {"sessions": sessions, "data_check": check}
        if ceiling is not None or "resolution_ceiling" in info:
            record["resolution_ceiling"] = ceiling or info["resolution_ceiling"]  # kept when not recomputed
        if encoder is not None or "encoder" in info:
            record["encoder"] = encoder or info["encoder"]
        atomic_write_text(path, json.dumps(record, indent=1) + "\n")
    except (OSError, TypeError, ValueError) as err:
        logger.warning("warning: %s not written: %s", path, err)


