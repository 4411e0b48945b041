"""K-fold cross-validation (``unetseg train --folds K``): a seeded split of the training pairs into K folds (by group
or block, :func:`unetseg.data.split.kfold`), written once to ``RUN/folds.json``; each fold a run of its own in
``RUN/fold_N`` (its checkpoint, metrics and exact resume) that validates on its fold; and, once every fold has
trained, the out-of-fold predictions and the CV scores in ``RUN/cv`` (:func:`unetseg.infer.evaluate.evaluate_folds`).

A budget covers all folds: the first fold trained here plans with its share (the budget / K), and the folds after
it train with that plan (its size, recipe and the steps it ran), so the plan is made once. ``--fold N`` trains one
fold only, so folds can go to separate processes, GPUs or machines sharing the run folder; the last to finish
writes the CV scores.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Callable

from unetseg._atomic import atomic_write_text
from unetseg.checkpoint import (CONFIG_FILE, FINISHED_FILE, FOLDS_FILE, METRICS_FILE, STATE_FILE, CheckpointError,
                                finished_folds, fold_dir)
from unetseg.config import RunConfig, parse_duration
from unetseg.data.pairing import pair_files
from unetseg.data.split import kfold

logger = logging.getLogger(__name__)

CV_DIR = "cv"  # RUN/cv: the out-of-fold predictions and the CV scores
DONE_FILE = "done.json"  # RUN/cv/done.json: the CV scores and the postprocessing were written, last
_CV_FILES = {CONFIG_FILE, FOLDS_FILE, "train.log", CV_DIR}  # what a CV run's folder holds beside its folds


def _folds_record(cfg: RunConfig) -> dict:
    """The split of the training pairs into folds, as ``folds.json`` holds it (image names per fold)."""
    pairing = pair_files(cfg.data)
    if not pairing.pairs:
        raise CheckpointError(f"{cfg.data.data or cfg.data.images}: no image/mask pairs to split into folds")
    fold = kfold(pairing.pairs, cfg.data.folds, cfg.data.split, cfg.data.split_seed)
    names = [[p.image.name for p, f in zip(pairing.pairs, fold) if f == k] for k in range(cfg.data.folds)]
    return {"folds": cfg.data.folds, "split": cfg.data.split, "split_seed": cfg.data.split_seed,
            "group_pattern": cfg.data.group_pattern, "images": names}


def _check_same_split(out: Path, cfg: RunConfig) -> dict:
    stored = json.loads((out / FOLDS_FILE).read_text())
    for key, given in (("folds", cfg.data.folds), ("split", cfg.data.split), ("split_seed", cfg.data.split_seed),
                       ("group_pattern", cfg.data.group_pattern)):
        if stored.get(key) != given:
            flag = "--" + key.replace("_", "-")
            raise CheckpointError(f"{out}: a cross-validation run with {flag} {stored.get(key)!r}, not {given!r}: "
                                  f"its folds stay as they were split (give {flag} {stored.get(key)}, or another "
                                  f"--out, or --overwrite to start again)")
    return stored


def _steps_run(run: Path) -> int:
    """The optimiser steps a finished run took (its last metrics line)."""
    lines = (run / METRICS_FILE).read_text().splitlines()
    return int(json.loads(lines[-1])["step"]) if lines else 0


def fit_cv(cfg: RunConfig, out_dir: str | Path, fit_one: Callable[..., Path], *, resume: bool = False,
           overwrite: bool = False, keep: set[str] | None = None) -> Path:
    """Train the folds of a cross-validation run (all, or ``cfg.data.fold`` only) and, once every fold has finished,
    write the out-of-fold predictions and CV scores to ``RUN/cv``.

    Args:
        cfg: the run's configuration, ``cfg.data.folds`` >= 2.
        out_dir: the run folder (its folds in ``fold_N``).
        fit_one: trains one run (:func:`unetseg.train.loop.fit` of a single split).
        resume: continue: folds with a saved state resume, finished folds stay, the others start.
        overwrite: replace the run (with ``cfg.data.fold``: that fold only).
        keep: the settings the user gave (as for ``fit``).

    Returns:
        The run folder.
    """
    out, k, only = Path(out_dir), cfg.data.folds, cfg.data.fold
    keep = set(keep or ())  # fit passes the given settings
    if out.name.startswith("fold_") and (out.parent / FOLDS_FILE).is_file() and out.name[5:].isdigit():
        # a fold's own folder (train --resume RUN/fold_1): the fold of its cross-validation run
        out, only = out.parent, int(out.name[5:])
        cfg.data.fold = only
    if out.exists() and overwrite and not resume and only is None:
        shutil.rmtree(out)
    stored = RunConfig.load(out / CONFIG_FILE) if (out / FOLDS_FILE).is_file() else None
    if stored is not None:
        _check_same_split(out, cfg)
        if not resume and only is None:
            raise CheckpointError(f"{out}: folder is not empty (a cross-validation run); pass --resume to continue "
                                  f"it, --fold N to train one of its folds, or --overwrite to replace it")
    elif out.exists() and any(p.name not in _CV_FILES and not p.name.startswith("fold_") for p in out.iterdir()):
        raise CheckpointError(f"{out}: " + (f"a run of one split, not a cross-validation run: --folds {k} cannot "
                                            f"resume it" if resume else "folder is not empty; pass --overwrite to "
                                            "replace it, or give another --out"))
    elif resume:
        raise CheckpointError(f"{out / FOLDS_FILE}: not found, nothing to resume")
    created = False
    if stored is None:
        record = _folds_record(cfg)  # the folds are split once, here, and kept
        out.mkdir(parents=True, exist_ok=True)
        created = _create_once(out / FOLDS_FILE, json.dumps(record, indent=1) + "\n")  # a process beside may race
        if created:
            top = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, fold=None))
            top.save(out / CONFIG_FILE)
            logger.info("cross-validation: %d folds of %s pairs (%s); %s", k,
                        "/".join(str(len(n)) for n in record["images"]), "by blocks of frames" if cfg.data.split
                        == "blocks" else "by group", "each fold a run in " + str(out / "fold_N"))
        _check_same_split(out, cfg)
    if not created:  # split earlier, or by a process beside this one: from the same data?
        _check_same_images(out, cfg)
    if only is not None and cfg.train.budget and not finished_folds(out):
        logger.warning("warning: --fold %d with --budget: this fold plans its own share; folds planned apart may "
                       "choose different sizes, which cannot be averaged (train one fold first, then the others "
                       "follow its plan)", only)
    # the lengths changed from the run's own (a resume asked for more epochs or steps): finished folds train on
    longer = {key for key in keep & {"train.epochs", "train.max_steps"} if stored is not None
              and getattr(cfg.train, key[6:]) != getattr(stored.train, key[6:])}
    todo = [only] if only is not None else list(range(k))
    budget = parse_duration(cfg.train.budget) if cfg.train.budget else None
    if budget is not None:
        logger.info("budget %s covers all %d folds: %s each; the first fold trained here plans, the others follow "
                    "its plan", cfg.train.budget, k, _seconds_text(budget / k))
    # the fold whose plan the later ones follow: a finished fold's of an earlier session, else the first trained here
    planned = next((fold_dir(out, f) for f in finished_folds(out)
                    if RunConfig.load(fold_dir(out, f) / CONFIG_FILE).train.plan), None) if budget else None
    trained = False
    for fold in todo:
        run = fold_dir(out, fold)
        if (run / FINISHED_FILE).is_file() and not overwrite and not (resume and longer):
            if not resume:
                raise CheckpointError(f"{run}: fold {fold} has finished training; pass --overwrite to train it "
                                      f"again")
            logger.info("fold %d of %d: finished earlier", fold, k)
            continue
        started = time.monotonic()
        handler = _fold_log(run)
        try:
            planned = _train_fold(cfg, out, fold, run, fit_one, resume, overwrite, keep, longer, planned, budget)
        finally:
            logging.getLogger("unetseg").removeHandler(handler)
            handler.close()
        atomic_write_text(run / FINISHED_FILE, json.dumps(
            {"fold": fold, "steps": _steps_run(run), "seconds": round(time.monotonic() - started, 1),
             "finished": time.strftime("%Y-%m-%d %H:%M:%S %z")}) + "\n")
        trained = True
    done = finished_folds(out)
    if len(done) < k:
        logger.info("cross-validation: folds %s of %d finished; the CV scores come when all have (unetseg train "
                    "--resume %s, or --fold N for the others)", ", ".join(map(str, done)) or "none", k, out)
        return out
    if not trained and (out / CV_DIR / DONE_FILE).is_file():
        logger.info("cross-validation: every fold finished earlier; the CV scores are in %s", out / CV_DIR)
        return out
    write_cv_scores(out, cfg, progress=cfg.train.progress)
    return out


def _fold_log(run: Path) -> logging.Handler:
    """The fold's own train.log (the run's log gets the same lines)."""
    from unetseg.train.run_dir import RunLog

    handler = RunLog(run / "train.log", delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("unetseg").addHandler(handler)
    return handler


def _train_fold(cfg: RunConfig, out: Path, fold: int, run: Path, fit_one: Callable[..., Path], resume: bool,
                overwrite: bool, keep: set[str], longer: set[str], planned: Path | None, budget: float | None
                ) -> Path | None:
    """Train (or resume) one fold; returns the fold whose plan later folds follow (a planning fold resumed is it)."""
    k = cfg.data.folds
    if resume and (run / STATE_FILE).is_file():
        fold_cfg = _here(RunConfig.load(run / CONFIG_FILE), cfg)
        for key in longer:  # a longer run, as for one split
            setattr(fold_cfg.train, key[6:], getattr(cfg.train, key[6:]))
        logger.info("fold %d of %d: resuming %s", fold, k, run)
        fit_one(fold_cfg, run, resume=True, keep=longer)
        return run if budget is not None and planned is None and fold_cfg.train.plan else planned
    fold_cfg, fold_keep = _fold_config(cfg, fold, planned, budget, keep)
    logger.info("fold %d of %d: training in %s%s", fold, k, run,
                f", following {planned.name}'s plan" if planned is not None else "")
    fit_one(fold_cfg, run, overwrite=overwrite, keep=fold_keep)
    return run if budget is not None and planned is None else planned


def _fold_config(cfg: RunConfig, fold: int, planned: Path | None, budget: float | None, keep: set[str]
                 ) -> tuple[RunConfig, set[str] | None]:
    """The config of a fold that starts, and the settings it keeps: the run's own with the fold's number and its
    share of the budget; after a planned fold, that fold's plan with the steps it ran (no second plan)."""
    if planned is None:
        fold_cfg = RunConfig.from_dict(cfg.to_dict())
        fold_cfg.data.fold = fold
        if budget is not None:
            fold_cfg.train.budget = _seconds_text(budget / cfg.data.folds)
        return fold_cfg, keep | {"data.fold", "data.folds"}
    fold_cfg = _here(RunConfig.load(planned / CONFIG_FILE), cfg)
    fold_cfg.data.fold = fold
    fold_cfg.train.budget = ""  # planned already: the same size, recipe and steps
    fold_cfg.train.max_steps = _steps_run(planned)
    fold_cfg.train.epochs = 10 ** 6  # the step total ends the run
    fold_cfg.train.class_weight_values = None  # from this fold's training masks
    from unetseg.train.loop import changed_settings

    return fold_cfg, changed_settings(fold_cfg) | {"data.image_size"}  # every setting stays as planned


#: What a fold's stored config takes from this session: where the data is, where it is cached, the device.
_LOCAL = {"data": ("data", "images", "masks", "pairs_csv", "ignore_masks", "cache", "cache_dir"),
          "train": ("device", "progress", "checkpoint_minutes", "dist_timeout_minutes")}


def _here(fold_cfg: RunConfig, cfg: RunConfig) -> RunConfig:
    """A fold's stored config with this session's data location, cache and device (another machine's paths)."""
    for section, names in _LOCAL.items():
        for name in names:
            setattr(getattr(fold_cfg, section), name, getattr(getattr(cfg, section), name))
    return fold_cfg


def _create_once(path: Path, text: str) -> bool:
    """Write ``path`` only if it does not exist (atomically, for processes starting side by side); True if written."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return True


def _check_same_images(out: Path, cfg: RunConfig) -> None:
    """The pairs are those the folds were split from (``folds.json``): a fold re-derives its split from the data,
    so data that changed would give folds that overlap or miss images."""
    stored = json.loads((out / FOLDS_FILE).read_text())
    now = _folds_record(cfg)
    if now["images"] != stored["images"]:
        before, after = {n for f in stored["images"] for n in f}, {n for f in now["images"] for n in f}
        added, gone = sorted(after - before), sorted(before - after)
        raise CheckpointError(f"{out / FOLDS_FILE}: the data changed since the folds were split ("
                              + ", ".join(p for p in (f"{len(added)} new, e.g. {added[0]}" if added else "",
                                                      f"{len(gone)} gone, e.g. {gone[0]}" if gone else "") if p)
                              + "): give the data the folds were split from, or start a new run (--overwrite)")


def _seconds_text(seconds: float) -> str:
    return f"{max(1, round(seconds))}s"


def write_cv_scores(run: str | Path, cfg: RunConfig | None = None, progress: bool = False) -> dict | None:
    """Predict each fold's held-out pairs with that fold's final weights and score them: ``RUN/cv/fold_N`` per
    fold, ``RUN/cv`` pooled over every image (per image, per class, with intervals), the predictions in
    ``RUN/cv/predictions`` (the masks; a binary model's probabilities too), then the postprocessing; ``cv/done.json``
    last. The data is found where ``cfg`` (this session's) says, else where the folds were trained. One process
    writes (``cv/.lock``): another finishing beside it leaves them to it. Returns the pooled summary (None when
    another process writes).

    Raises:
        CheckpointError: when the folds' held-out pairs are not the folds of ``folds.json`` (each image once).
    """
    from unetseg.checkpoint import read_split
    from unetseg.data import find_pairs
    from unetseg.data.split import pairs_of_split
    from unetseg.infer.evaluate import evaluate_folds
    from unetseg.infer.predict import Predictor

    run = Path(run)
    cfg = cfg or RunConfig.load(run / CONFIG_FILE)
    (run / CV_DIR).mkdir(exist_ok=True)
    lock = run / CV_DIR / ".lock"
    if not _create_once(lock, f"{os.getpid()}\n"):
        logger.info("cross-validation: another process is writing the CV scores (%s; delete it if none is)", lock)
        return None
    try:
        (run / CV_DIR / DONE_FILE).unlink(missing_ok=True)
        stored = json.loads((run / FOLDS_FILE).read_text())["images"]
        folds = []
        for fold in finished_folds(run):
            names = read_split(fold_dir(run, fold), "val")
            if sorted(names) != sorted(stored[fold]):  # each image once, by the fold that did not train on it
                raise CheckpointError(f"{fold_dir(run, fold) / 'split.json'}: its validation images are not fold "
                                      f"{fold} of {run / FOLDS_FILE}: the data changed while the folds trained")
            predictor = Predictor.from_run(fold_dir(run, fold), device=cfg.train.device)
            data = dataclasses.replace(predictor.config.data, **{n: getattr(cfg.data, n) for n in _LOCAL["data"]})
            folds.append((predictor, pairs_of_split(find_pairs(data), "val", names)))
        sizes = {tuple(p.config.data.image_size) for p, _ in folds}
        if len(sizes) > 1:
            logger.warning("warning: the folds trained at different sizes (%s; planned apart): their scores are "
                           "pooled here, but predict cannot average them", ", ".join(f"{w}x{h}" for w, h in sizes))
        summary = evaluate_folds(folds, run / CV_DIR, progress=progress)
        choose_postprocessing(run, [p for _, pairs in folds for p in pairs], folds[0][0])
        atomic_write_text(run / CV_DIR / DONE_FILE, json.dumps({"folds": len(folds), "images": summary["images"],
                                                                "written": time.strftime("%Y-%m-%d %H:%M:%S %z")})
                          + "\n")
    finally:
        lock.unlink(missing_ok=True)
    multi = summary.get("miou") is not None and len(summary.get("per_class", [])) > 2
    logger.info("cross-validation: %d folds, %d images predicted out of fold: mean Dice %.4f%s (%s)", len(folds),
                summary["images"], summary["mean_dice"], f", mIoU {summary['miou']:.4f}" if multi else "",
                run / CV_DIR)
    return summary


def score_cv_ensemble(runs: list[str | Path], out_dir: str | Path, progress: bool = False) -> dict:
    """The out-of-fold scores of an ensemble of cross-validation runs split alike (the same ``folds.json`` images):
    fold N of each run together (the mean of their probabilities, :meth:`unetseg.infer.Predictor.from_runs`)
    predicts fold N's held-out pairs, so every training image is predicted once by models that did not train on it
    (nnU-Net's ``find_best_configuration``, which scores the pairs of configurations out of fold, before
    postprocessing). Written as :func:`write_cv_scores` writes a run's (``out_dir/per_image.csv``, summary.json,
    each fold in ``out_dir/fold_N``), for :func:`unetseg.score.compare`. Returns the pooled summary.

    Raises:
        CheckpointError: when a run is not a finished cross-validation run or the runs' folds hold other images.
    """
    from unetseg.checkpoint import cv_folds, is_cv_run, read_split
    from unetseg.data import find_pairs
    from unetseg.data.split import pairs_of_split
    from unetseg.infer.evaluate import evaluate_folds
    from unetseg.infer.predict import Predictor

    runs = [Path(r) for r in runs]
    folds_of = {}
    for run in runs:
        if not is_cv_run(run):
            raise CheckpointError(f"{run}: not a cross-validation run (no {FOLDS_FILE}); an ensemble is scored out "
                                  f"of fold only for runs trained with --folds K")
        done = finished_folds(run)
        if len(done) < cv_folds(run):
            raise CheckpointError(f"{run}: folds {', '.join(map(str, sorted(set(range(cv_folds(run))) - set(done))))} "
                                  f"have not finished (unetseg train --resume {run})")
        folds_of[run] = [sorted(f) for f in json.loads((run / FOLDS_FILE).read_text())["images"]]
    for run in runs[1:]:
        if folds_of[run] != folds_of[runs[0]]:
            raise CheckpointError(f"{run / FOLDS_FILE}: its folds hold other images than {runs[0] / FOLDS_FILE}'s: "
                                  f"an ensemble is scored out of fold only on runs split alike (the same data, "
                                  f"--folds, --split and --split-seed)")
    logger.info("scoring the ensemble of %s out of fold, fold by fold, into %s", " + ".join(map(str, runs)), out_dir)
    folds = []
    for fold, names in enumerate(folds_of[runs[0]]):
        predictor = Predictor.from_runs([fold_dir(run, fold) for run in runs], postprocess=False)
        stored = RunConfig.load(fold_dir(runs[0], fold) / CONFIG_FILE)
        if sorted(read_split(fold_dir(runs[0], fold), "val")) != names:
            raise CheckpointError(f"{fold_dir(runs[0], fold) / 'split.json'}: its validation images are not fold "
                                  f"{fold} of {runs[0] / FOLDS_FILE}")
        folds.append((predictor, pairs_of_split(find_pairs(stored.data), "val", names)))
    summary = evaluate_folds(folds, out_dir, progress=progress)
    atomic_write_text(Path(out_dir) / "ensemble.json", json.dumps(
        {"runs": [str(r.resolve()) for r in runs], "combined": "mean of probabilities (each run's folds: of logits)",
         "images": summary["images"], "written": time.strftime("%Y-%m-%d %H:%M:%S %z")}, indent=2) + "\n")
    return summary


def ensemble_scores(runs: list[str | Path], out_root: str | Path, progress: bool = False) -> Path:
    """The folder of the out-of-fold scores of ``runs``' ensemble (:func:`score_cv_ensemble`), in
    ``out_root/A+B``: scored there once, and read again while every fold's weights are those it was scored with."""
    runs = [Path(r) for r in runs]
    names = [r.resolve().name for r in runs]
    if len(set(names)) < len(names):  # runs of one name in different folders
        names = [f"{r.resolve().parent.name}_{r.resolve().name}" for r in runs]
    out = Path(out_root) / "+".join(names)
    stamp = {str(r.resolve()): [_mtime(fold_dir(r, k) / "model.safetensors") for k in finished_folds(r)]
             for r in runs if (r / FOLDS_FILE).is_file()}
    record = out / "ensemble.json"
    try:
        if json.loads(record.read_text()).get("weights") == stamp and (out / "per_image.csv").is_file():
            logger.info("compare: the ensemble of %s was scored out of fold before: %s", " + ".join(map(str, runs)),
                        out)
            return out
    except (OSError, ValueError):
        pass
    score_cv_ensemble(runs, out, progress)
    record.write_text(json.dumps({**json.loads(record.read_text()), "weights": stamp}, indent=2) + "\n")
    return out


def _mtime(path: Path) -> int:
    return path.stat().st_mtime_ns if path.is_file() else 0


def tune_cv_threshold(run: str | Path, thresholds: list[float]) -> dict[float, float]:
    """A binary cross-validation run's mean Dice at each threshold, from its out-of-fold probabilities
    (``RUN/cv/predictions/probs``, 8-bit: a pixel is decided as at ``round(255 p)``): every training image counts
    once, scored by the fold that did not train on it (an image with nothing to find and nothing found counts 1.0
    at every threshold, as ``evaluate --tune-threshold`` counts it).

    Raises:
        CheckpointError: when the run has no out-of-fold probabilities (its folds have not all finished).
        ValueError: for a multi-class run.
    """
    import numpy as np
    import torch
    from PIL import Image

    from unetseg.data import find_pairs
    from unetseg.data.check import encoding_of
    from unetseg.metrics import threshold_dice
    from unetseg.score.folder import true_classes

    run = Path(run)
    probs = run / CV_DIR / "predictions" / "probs"
    config = RunConfig.load(fold_dir(run, 0) / CONFIG_FILE)  # the data as the folds read it (encoding found)
    if config.model.num_classes != 1:
        raise ValueError("--tune-threshold: only for binary models (a multi-class model takes the argmax)")
    if not probs.is_dir():
        raise CheckpointError(f"{probs}: not found: the out-of-fold probabilities come when every fold has "
                              f"finished (unetseg train --resume {run})")
    encoding = encoding_of(config.data)
    dices: dict[float, list[float]] = {t: [] for t in thresholds}
    for pair in find_pairs(config.data):
        path = probs / f"{pair.image.stem}.png"
        if not path.is_file():
            raise CheckpointError(f"{path}: no out-of-fold probabilities for {pair.image.name}")
        p = np.asarray(Image.open(path), dtype=np.float64) / 255.0
        target = true_classes(pair, encoding, config.data.snap_masks)
        logits = torch.from_numpy(np.log(np.clip(p, 1e-9, 1) / np.clip(1 - p, 1e-9, 1)))
        for t, d in zip(thresholds, threshold_dice(logits, torch.from_numpy(target), thresholds)):
            dices[t].append(1.0 if d != d else d)
    return {t: float(np.mean(v)) for t, v in dices.items()}


def choose_postprocessing(run: str | Path, pairs: list, predictor) -> None:
    """Choose the postprocessing on the out-of-fold predictions of ``pairs`` (``RUN/cv/predictions/masks``) and
    write ``RUN/postprocessing.json`` (:func:`unetseg.infer.postprocess.determine_postprocessing`); runs without a
    background class are left without. Where the class maps would take more than a quarter of the free memory,
    every k-th image decides."""
    import math

    import torch

    from unetseg._device import free_memory
    from unetseg.data.io import read_mask
    from unetseg.infer.postprocess import POSTPROCESSING_FILE, determine_postprocessing, smallest_components
    from unetseg.score.folder import true_classes

    run = Path(run)
    config = predictor.config
    labels = max(2, config.model.num_classes)
    background = 0 if config.model.num_classes == 1 else config.data.background
    if background is None:
        logger.info("postprocessing: not tried (no background class for removed pixels to join: --background K "
                    "names one)")
        return
    masks = run / CV_DIR / "predictions" / "masks"
    sizes = [read_mask(p.mask).values.size for p in pairs[:1]]
    step = max(1, math.ceil(2 * sizes[0] * len(pairs) / max(1, free_memory(torch.device("cpu")) // 4)))
    chosen = pairs[::step]
    if step > 1:
        logger.info("postprocessing: chosen on every %d-th of the %d images (their masks would not fit in memory)",
                    step, len(pairs))
    maps = []
    for pair in chosen:
        target = true_classes(pair, predictor.encoding, config.data.snap_masks)
        pred = predictor.encoding.to_classes(read_mask(masks / f"{pair.image.stem}.png").values, pair.mask)
        maps.append((pred, target))
    foreground = [c for c in range(labels) if c != background]
    rules = determine_postprocessing(maps, labels, background, smallest_components((t for _, t in maps), foreground))
    rules.save(run / POSTPROCESSING_FILE)
    logger.info("postprocessing (out of fold, kept only where the mean Dice over the foreground classes rises and "
                "no class falls): %s; mean Dice %.4f -> %.4f (%s)", rules.describe(),
                rules.scores["mean_dice_before"], rules.scores["mean_dice_after"], run / POSTPROCESSING_FILE)
