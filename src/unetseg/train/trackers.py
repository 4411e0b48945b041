"""Experiment trackers (``train --log tensorboard mlflow wandb``): the run's config as parameters, every line of
``metrics.jsonl`` at its step, and the curves, config and plan as files, through each tracker's own library.

A tracker is an extra, never required: it is opened once by the main process (rank 0), and a resumed run continues
the same tracker run (MLflow's and W&B's ids are kept in ``RUN/trackers.json``; TensorBoard's event files drop the
steps after the checkpoint, ``purge_step``; MLflow keeps the values it was given after the checkpoint beside the
ones logged again, W&B ignores steps below its last one). The trackers are started, fed and finished on a thread
of their own through a bounded queue, so a slow or unreachable tracker never holds a step; a tracker that fails
costs one warning and is dropped, and ``metrics.jsonl`` stays the record.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from unetseg._atomic import atomic_write_text

logger = logging.getLogger(__name__)

TRACKERS = ("tensorboard", "mlflow", "wandb")
IDS_FILE = "trackers.json"
TENSORBOARD_DIR = "tensorboard"
#: What the trackers write in a run folder (a run that stopped before its first checkpoint may start afresh there).
TRACKER_FILES = (IDS_FILE, TENSORBOARD_DIR, "mlruns", "wandb")
#: Calls waiting for the tracker thread at most; beyond it a call is dropped (and counted), never waited for.
QUEUE_BOUND = 256
#: Seconds ``close`` waits for the calls still queued.
CLOSE_SECONDS = 30.0


class TrackerError(ValueError):
    """A tracker cannot be used (its library is missing): one line, before training starts."""


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"train": {"lr": 1e-4}}`` -> ``{"train.lr": "0.0001"}``: nested dicts joined by dots, every value a string
    (lists as JSON); the plan's record is left out (it is logged as a file)."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if name == "train.plan":
            continue
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value if isinstance(value, str) else json.dumps(value)
    return flat


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """A metrics.jsonl record as named scalars: numbers as they are, per-class lists and dicts by class
    (``val_iou/sky``, ``val_dice/class1``), None (NaN) left out; epoch and step are the x axis."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if key in ("epoch", "step") or value is None:
            continue
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            out[key] = float(value)
        elif isinstance(value, dict):
            base = key.removesuffix("_per_class")
            out.update({f"{base}/{name}": float(v) for name, v in value.items() if isinstance(v, (int, float))})
        elif isinstance(value, list):
            base = key.removesuffix("_per_class")
            out.update({f"{base}/class{k}": float(v) for k, v in enumerate(value) if isinstance(v, (int, float))})
    return out


class _Backend:
    """One tracker: ``start`` (in the caller's thread: a missing library fails before training), then calls made
    on the tracker thread."""

    name = ""

    def start(self, run: Path, config: dict[str, Any], resume_id: str | None, step: int) -> str | None:
        raise NotImplementedError

    def metrics(self, values: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def files(self, paths: list[Path]) -> None:
        raise NotImplementedError

    def finish(self, ok: bool = True) -> None:
        raise NotImplementedError


def _require(module: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise TrackerError(f"--log {extra}: {module.split('.')[0]} is not installed: pip install "
                           f"'unetseg[{extra}]'") from None


class TensorBoard(_Backend):
    """``torch.utils.tensorboard``'s SummaryWriter: event files in ``RUN/tensorboard`` (or ``--log-dir``)."""

    name = "tensorboard"

    def __init__(self, log_dir: str = "") -> None:
        self.log_dir, self.step = log_dir, 0
        _require("tensorboard", "tensorboard")
        self.module = _require("torch.utils.tensorboard", "tensorboard")

    def start(self, run: Path, config: dict[str, Any], resume_id: str | None, step: int) -> str | None:
        # a --log-dir shared by runs (and folds) holds one folder per run: RUN's name, CV_RUN/fold_N for a fold
        name = f"{run.resolve().parent.name}/{run.name}" if run.name.startswith("fold_") else run.resolve().name
        folder = Path(self.log_dir) / name if self.log_dir else run / TENSORBOARD_DIR
        # a resumed run drops what was logged after its checkpoint (at step ``step``; the record of that step was
        # logged before it): the steps to come are logged again
        self.writer = self.module.SummaryWriter(str(folder), purge_step=step + 1 if resume_id else None)
        if not resume_id:
            self.writer.add_text("config", "```\n" + json.dumps(config, indent=2) + "\n```", 0)
        return str(folder)

    def metrics(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()
        self.step = step

    def files(self, paths: list[Path]) -> None:
        import numpy as np
        from PIL import Image

        for path in paths:
            if path.suffix == ".png":
                self.writer.add_image(path.stem, np.asarray(Image.open(path).convert("RGB")), self.step,
                                      dataformats="HWC")
            elif path.suffix == ".json":
                self.writer.add_text(path.stem, "```\n" + path.read_text() + "\n```", self.step)
        self.writer.flush()

    def finish(self, ok: bool = True) -> None:
        self.writer.close()


class MLflow(_Backend):
    """MLflow's client: ``MLFLOW_TRACKING_URI`` where set, else a local store in ``RUN/mlruns``; the experiment
    ``MLFLOW_EXPERIMENT_NAME`` (default "unetseg"), the run named as the run folder."""

    name = "mlflow"

    def __init__(self) -> None:
        self.mlflow = _require("mlflow", "mlflow")

    def start(self, run: Path, config: dict[str, Any], resume_id: str | None, step: int) -> str | None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI") or (run / "mlruns").resolve().as_uri()
        self.client = MlflowClient(tracking_uri=uri)
        if resume_id:
            self.run_id = resume_id
            self.client.update_run(resume_id, status="RUNNING")
            return resume_id
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "unetseg")
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        self.run_id = self.client.create_run(experiment_id, run_name=run.resolve().name,
                                             tags={"unetseg.run_dir": str(run.resolve())}).info.run_id
        params = [Param(k, v[:6000]) for k, v in flatten(config).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 parameters a call
            self.client.log_batch(self.run_id, params=params[start:start + 100])
        return self.run_id

    def metrics(self, values: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(mlflow_name(k), v, now, step) for k, v in values.items()])

    def files(self, paths: list[Path]) -> None:
        for path in paths:
            self.client.log_artifact(self.run_id, str(path))

    def finish(self, ok: bool = True) -> None:
        self.client.set_terminated(self.run_id, status="FINISHED" if ok else "FAILED")


def mlflow_name(key: str) -> str:
    """A metric name MLflow takes (letters, digits, ``_-./`` and spaces): a class named ``car (parked)`` is logged
    as ``val_iou/car _parked_``."""
    return re.sub(r"[^/\w.\- ]", "_", key)


class WandB(_Backend):
    """Weights & Biases (``wandb.init`` in the run folder; ``WANDB_MODE=offline`` and ``WANDB_PROJECT`` are
    honoured, the project "unetseg" otherwise)."""

    name = "wandb"

    def __init__(self) -> None:
        self.wandb = _require("wandb", "wandb")

    def start(self, run: Path, config: dict[str, Any], resume_id: str | None, step: int) -> str | None:
        self.run = self.wandb.init(project=os.environ.get("WANDB_PROJECT", "unetseg"), dir=str(run),
                                   name=run.resolve().name, config=flatten(config), id=resume_id,
                                   resume="allow" if resume_id else None)
        return self.run.id

    def metrics(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def files(self, paths: list[Path]) -> None:
        for path in paths:
            self.run.save(str(path), base_path=str(path.parent), policy="now")

    def finish(self, ok: bool = True) -> None:
        self.run.finish(exit_code=0 if ok else 1)


def backends(names: Iterable[str], log_dir: str = "") -> list[_Backend]:
    """The trackers named (their libraries imported here: a missing one is a :class:`TrackerError`)."""
    made: list[_Backend] = []
    for name in names:
        if name not in TRACKERS:
            raise TrackerError(f"--log {name}: one of {', '.join(TRACKERS)}")
        made.append({"tensorboard": lambda: TensorBoard(log_dir), "mlflow": MLflow, "wandb": WandB}[name]())
    return made


class Trackers:
    """The run's trackers behind one bounded queue and one thread. Every method returns at once.

    Args:
        run: the run folder (``trackers.json`` holds the trackers' run ids for a resume).
        names: the trackers (``cfg.train.log``); none: nothing is done.
        config: the run's config (as a dict) for the parameters.
        resume: the run resumes: continue the trackers' runs kept in ``trackers.json``.
        step: the step the run starts from (TensorBoard drops what was logged after it).
    """

    def __init__(self, run: Path, names: Iterable[str], config: dict[str, Any], resume: bool = False, step: int = 0,
                 log_dir: str = "", made: list[_Backend] | None = None) -> None:
        self.run = Path(run)
        self.live: list[_Backend] = made if made is not None else backends(names, log_dir)
        self.dropped = 0
        self._queue: queue.Queue = queue.Queue(QUEUE_BOUND)
        self._thread: threading.Thread | None = None
        if not self.live:
            return
        # started on the tracker thread too: a server that does not answer (MLflow retries for minutes) holds nothing
        self._queue.put(("start", (config, self._ids() if resume else {}, resume, step)))
        self._thread = threading.Thread(target=self._work, name="unetseg-trackers", daemon=True)
        self._thread.start()

    def _start(self, config: dict[str, Any], ids: dict[str, str], resume: bool, step: int) -> None:
        for backend in list(self.live):
            try:
                ids[backend.name] = backend.start(self.run, config, ids.get(backend.name), step)
                logger.info("--log %s: %s%s", backend.name, ids[backend.name],
                            " (continued)" if resume and ids.get(backend.name) else "")
            except Exception as err:  # noqa: BLE001 - a tracker never stops the training
                self._fail(backend, err)
        atomic_write_text(self.run / IDS_FILE, json.dumps(ids, indent=1) + "\n")

    def _ids(self) -> dict[str, str]:
        try:
            return json.loads((self.run / IDS_FILE).read_text())
        except (OSError, ValueError):
            return {}

    def _fail(self, backend: _Backend, err: BaseException) -> None:
        if backend in self.live:
            self.live.remove(backend)
            logger.warning("warning: --log %s failed (%s: %s); training goes on without it, metrics.jsonl keeps "
                           "the record", backend.name, type(err).__name__, str(err).splitlines()[0][:200] if str(err)
                           else "")

    def _call(self, what: str, *args: Any) -> None:
        if not self.live:
            return
        try:
            self._queue.put_nowait((what, args))
        except queue.Full:  # the tracker is slower than the training: the call is dropped, not waited for
            self.dropped += 1

    def _work(self) -> None:
        while True:
            what, args = self._queue.get()
            if what == "stop":
                self._queue.task_done()
                return
            if what == "start":
                self._start(*args)
                self._queue.task_done()
                continue
            for backend in list(self.live):
                try:
                    getattr(backend, what)(*args)
                except Exception as err:  # noqa: BLE001
                    self._fail(backend, err)
            self._queue.task_done()

    def log(self, record: dict[str, Any]) -> None:
        """One metrics.jsonl record at its step."""
        self._call("metrics", scalars(record), int(record.get("step", 0)))

    def files(self, paths: Iterable[Path]) -> None:
        """Files to keep with the tracker's run (those that exist)."""
        self._call("files", [Path(p) for p in paths if Path(p).is_file()])

    def close(self, ok: bool = True) -> None:
        """Finish every tracker's run (``ok`` False: marked failed), waiting at most CLOSE_SECONDS for the calls
        still queued."""
        if self._thread is None:
            return
        try:
            self._queue.put(("finish", (ok,)), timeout=CLOSE_SECONDS)
            self._queue.put(("stop", ()), timeout=CLOSE_SECONDS)
        except queue.Full:
            pass
        self._thread.join(CLOSE_SECONDS)
        if self._thread.is_alive():
            logger.warning("warning: --log: the trackers had not finished after %.0f s; left behind",
                           CLOSE_SECONDS)
        if self.dropped:
            logger.warning("warning: --log: %d calls were dropped (the tracker was slower than training)",
                           self.dropped)
        self._thread = None


def open_trackers(run: Path, names: Iterable[str], config: dict[str, Any], resume: bool, step: int,
                  log_dir: str = "", is_main: bool = True) -> Trackers:
    """The run's trackers on the main process; none elsewhere (one process logs under torchrun)."""
    return Trackers(run, names if is_main else (), config, resume, step, log_dir)

