"""The ``unetseg`` command line: argparse only; each handler calls one library function.

Training flags are made from the config dataclasses' fields, so every config value is a flag and the
dataclass defaults are the only defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import logging
import os
import re
import sys
import typing
from typing import Any
from collections.abc import Callable, Sequence
from pathlib import Path

from unetseg.config import DataConfig, RunConfig, TrainConfig, UNetConfig, parse_size, settings_for_new_run

logger = logging.getLogger("unetseg")

_SECTIONS = {"model": UNetConfig, "data": DataConfig, "train": TrainConfig}
_LOCATION = {"data", "images", "masks", "pairs_csv"}
_PAIRING = ("data", "images", "masks", "image_pattern", "mask_pattern", "pairs_csv", "ignore_masks", "ignore_pattern")
_DERIVED = {"mask_values", "mask_palette", "mask_mode", "follow_channels", "follow_classes", "plan", "patch_scale",
            "class_colours", "class_weight_values"}  # found from the data, not set by hand


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the problem and where to look, not the whole usage text."""

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        """As argparse's, but a flag the subcommand does not know is reported by the subcommand's parser, which can
        name the flag meant."""
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            subs = [a for a in self._actions if isinstance(a, argparse._SubParsersAction)]
            parser = subs[0].choices.get(getattr(parsed, "command", None), self) if subs else self
            flags = [f for p in {self, parser} for action in p._actions for f in action.option_strings
                     if f.startswith("--")]
            message = f"unrecognized arguments: {' '.join(extra)}"
            for word in extra:  # a typo: name the flag meant
                close = difflib.get_close_matches(word.split("=")[0], flags, n=1) if word.startswith("--") else []
                if close:
                    message += f"; did you mean {close[0]}?"
                    break
            parser.error(message)
        return parsed

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _size(text: str) -> tuple[int, int]:
    try:
        return parse_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _background(text: str) -> int | None:
    """``evaluate --background``: a class index, or none."""
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a class index or none, got {text!r}") from None


def _field_help(cls: type) -> dict[str, str]:
    """``name -> text`` from the "Attributes:" section of a dataclass docstring."""
    helps: dict[str, str] = {}
    current: list[str] = []
    for line in (cls.__doc__ or "").split("Attributes:")[-1].splitlines():
        match = re.match(r"^\s{8}(\w[\w, ]*):\s+(.*)$", line)  # a continuation line is indented further
        if match:
            current = [n.strip() for n in match.group(1).split(",")]
            for name in current:
                helps[name] = match.group(2)
        elif line.strip() and current:
            for name in current:
                helps[name] += " " + line.strip()
    return {name: text.replace("``", "") for name, text in helps.items()}


#: ``unetseg train --help`` by task: the handful a newcomer needs first, then each task's flags. Every config field
#: that is a flag is in one group (a test checks); the non-config flags (--out, --config, --resume, --overwrite) are
#: placed by name.
TRAIN_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("start here", ("data.data", "out", "train.budget", "train.epochs", "data.image_size", "model.encoder", "resume")),
    ("data: where the pairs are and how masks are read", (
        "data.images", "data.masks", "data.image_pattern", "data.mask_pattern", "data.pairs_csv", "data.ignore_masks",
        "data.ignore_pattern", "data.invert_mask", "data.ignore_index", "data.classes", "data.class_names",
        "data.background", "data.snap_masks", "data.cache", "data.cache_dir")),
    ("validation split", ("data.val_data", "data.val_images", "data.val_masks", "data.val_ignore_masks",
                          "data.train_on_val", "data.folds", "data.fold", "data.val_fraction", "data.split", "data.group_pattern", "data.split_seed",
                          "train.val_every")),
    ("model", ("model.in_channels", "model.num_classes", "model.base_channels", "model.depth", "model.encoder_weights",
               "model.encoder_bn", "model.decoder_channels", "model.decoder_upsample")),
    ("sizes, patches and augmentation", (
        "data.patch", "data.oversample", "data.crop", "data.predict_scales", "data.predict_tta", "data.mean", "data.std", "data.rotate_limit", "data.hflip_p", "data.vflip_p",
        "data.scale_limit", "data.brightness", "data.contrast", "data.saturation", "data.gamma",
        "data.channel_shuffle_p", "data.grayscale_p", "data.noise_std")),
    ("the recipe", ("train.batch_size", "train.lr", "train.encoder_lr_scale", "train.weight_decay", "train.max_steps",
                    "train.schedule", "train.warmup_steps", "train.restart_epochs", "train.restart_mult",
                    "train.min_lr", "train.loss", "train.class_weights", "train.ema_decay", "train.bn_recalibrate",
                    "train.seed")),
    ("device and speed", ("train.device", "train.amp", "train.memory_format", "train.micro_batch", "train.compile",
                          "train.progress")),
    ("output and resume", ("config", "overwrite", "train.checkpoint_steps", "train.checkpoint_minutes", "train.log",
                           "train.log_dir")),
    ("several processes (torchrun)", ("train.sync_every", "train.sync_bn", "train.dist_timeout_minutes")),
)


def _config_fields(sections: Sequence[str]) -> dict[str, tuple[str, dataclasses.Field, Any, str]]:
    """``"section.name" -> (section, field, type hint, help)`` of the config fields that are flags."""
    fields = {}
    for section in sections:
        cls = _SECTIONS[section]
        helps, hints = _field_help(cls), typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name not in _DERIVED:
                fields[f"{section}.{f.name}"] = (section, f, hints[f.name], helps.get(f.name, ""))
    return fields


def _add_config_flag(group: Any, section: str, f: dataclasses.Field, hint: Any, text: str) -> None:
    kwargs: dict[str, Any] = {"metavar": f.name.upper()}
    if hint is bool:
        kwargs = {"action": argparse.BooleanOptionalAction}
    elif f.name in ("image_size", "patch"):
        kwargs.update(type=_size, metavar="WxH")
    elif f.name == "crop":  # "none" pins whole frames in a budget run on scenes
        kwargs.update(type=lambda text: None if text.lower() == "none" else _size(text), metavar="WxH|none")
    elif f.name == "ignore_index":  # 11, 11 255, 11,255 or #rrggbb, the flag repeated: DataConfig parses
        kwargs.update(type=str, nargs="+", action="extend", metavar="V")
    elif f.name == "class_names":
        kwargs.update(type=str, nargs="+", metavar="NAME")
    elif f.name == "class_weights":
        kwargs.update(type=str, nargs="+", metavar="auto|sqrt|W")
    elif f.name in ("background", "fold"):
        kwargs.update(type=int, metavar="K" if f.name == "background" else "N")
    elif f.name == "log":
        kwargs.update(type=str, nargs="+", choices=("tensorboard", "mlflow", "wandb"), metavar="TRACKER")
    elif f.name == "decoder_channels":
        kwargs.update(type=int, nargs=5, metavar="C")
    elif typing.get_origin(hint) is tuple:
        kwargs.update(type=float, nargs="+")
    elif typing.get_origin(hint) is typing.Literal:
        kwargs = {"choices": typing.get_args(hint)}
    else:
        kwargs["type"] = hint
    group.add_argument(f"--{f.name.replace('_', '-')}", dest=f"{section}.{f.name}", default=argparse.SUPPRESS,
                       help=f"{text} (default: {_default_text(f)})", **kwargs)


def _add_config_flags(parser: argparse.ArgumentParser, sections: Sequence[str] = tuple(_SECTIONS),
                      groups: Sequence[tuple[str, Sequence[str]]] = (),
                      others: dict[str, Callable[[Any], None]] | None = None) -> None:
    """The config fields of ``sections`` as flags: in ``groups`` (title, "section.name" or a name of ``others``,
    whose function adds that flag to the group), or else one group per section."""
    fields = _config_fields(sections)
    others = others or {}
    for title, names in groups:
        group = parser.add_argument_group(title)
        for name in names:
            if name in others:
                others[name](group)
            else:
                _add_config_flag(group, *fields.pop(name))
    for section in sections:
        left = [value for key, value in fields.items() if key.startswith(f"{section}.")]
        if left:
            group = parser.add_argument_group(f"{section} config ({_SECTIONS[section].__name__})")
            for value in left:
                _add_config_flag(group, *value)


def _default_text(f: dataclasses.Field) -> str:
    value = f.default
    if f.name == "image_size":
        return "x".join(str(v) for v in value)
    return str(value) if value != "" else "none"


def given_settings(args: argparse.Namespace) -> set[str]:
    """The settings the user gave (``"section.name"``): flags on the command line, and the settings of a ``--config``
    file that differ from the defaults, less what a run derives from its data and machine or its plan chose
    (:func:`unetseg.config.settings_for_new_run`). A budget run chooses every other one."""
    given = {key for key in vars(args) if "." in key}
    if getattr(args, "config", None) and not getattr(args, "resume", None):
        stored = json.loads(Path(args.config).read_text())
        given |= settings_for_new_run(stored, _replans(args, stored))[1]
    return given


def _replans(args: argparse.Namespace, stored: dict) -> bool:
    """Whether a new run from the config ``stored`` has a budget (the flag's, else the file's): it plans afresh."""
    return bool(vars(args).get("train.budget", stored.get("train", {}).get("budget")))


def build_config(args: argparse.Namespace) -> RunConfig:
    """A RunConfig from ``--config`` (or the defaults) with the flags given on the command line applied. A new run
    from another run's config.json finds that run's derived fields afresh, and a budget run its plan too
    (``settings_for_new_run``); a resumed run keeps them."""
    if args.config:
        stored = json.loads(Path(args.config).read_text())
        cfg = RunConfig.from_dict(stored if getattr(args, "resume", None)
                                  else settings_for_new_run(stored, _replans(args, stored))[0])
    else:
        cfg = RunConfig()
    base = cfg.to_dict()
    for key, value in vars(args).items():
        if "." in key:
            section, name = key.split(".")
            if name == "class_weights":  # "auto", or the weights as separate words or "1,4,8"
                value = ",".join(value) if isinstance(value, list) else value
            base[section][name] = value
    given = vars(args)
    if given.get("model.encoder") == "unet" and "model.encoder_weights" not in given:
        base["model"]["encoder_weights"] = ""  # an encoder run's config reused for the plain U-Net
    if "model.in_channels" in given:
        base["data"]["follow_channels"] = False
    if "model.num_classes" in given:
        base["data"]["follow_classes"] = False
    for one, other, neutral in (("mean", "std", 1.0), ("std", "mean", 0.0)):  # only one given: the other as many
        if f"data.{one}" in given and f"data.{other}" not in given \
                and len(base["data"][other]) != len(base["data"][one]):  # (an encoder run fills it from the encoder)
            base["data"][other] = [neutral] * len(base["data"][one])
    return RunConfig.from_dict(base)


def _cmd_train(args: argparse.Namespace) -> int:
    from unetseg.checkpoint import CheckpointError
    from unetseg.train import fit
    from unetseg.train.run_dir import RunLog

    if not (args.resume or args.out):
        raise ValueError("unetseg train: give --out RUN (the run folder to write), or --resume RUN")
    if args.resume == "auto":  # the same command line, run again: resume where there is a run, else start
        from unetseg.train.run_dir import resume_or_start

        if not args.out or args.overwrite:
            raise ValueError("--resume auto: give --out RUN (and not --overwrite): the run folder to resume or start")
        args.resume = args.out if resume_or_start(Path(args.out)) else None
        if args.resume:
            logger.info("--resume auto: resuming the run in %s", args.out)
            args.config = None  # the run's own config.json, which the first start wrote from the command's
            stored = json.loads((Path(args.out) / "config.json").read_text()).get("train", {}).get("budget")
            if vars(args).get("train.budget") == stored:  # the same --budget: the run keeps its plan, and its
                for key in ("train.budget", "train.epochs", "train.max_steps"):  # step total (the plan's to set)
                    vars(args).pop(key, None)
    elif args.resume and args.out and Path(args.resume) != Path(args.out):
        raise ValueError(f"--resume {args.resume} with --out {args.out}: a run resumes in its own folder (or give "
                         f"--out RUN --resume auto)")
    out = Path(args.resume or args.out)
    if args.resume and not args.config:
        args.config = out / "config.json"  # the run's own config; flags such as --epochs change it
        if not args.config.is_file():
            raise CheckpointError(f"{args.config}: not found, nothing to resume in {out}"
                                  + ("; start the run again with --out" if out.is_dir() else ""))
    cfg = build_config(args)
    if not args.resume and not (cfg.data.data or cfg.data.images or cfg.data.pairs_csv):
        raise ValueError("unetseg train: give --data DIR (or --images DIR --masks DIR, or --pairs-csv FILE), "
                         "or --resume RUN")
    if args.resume and "train.budget" in vars(args):
        raise ValueError(f"--budget with --resume: the run in {out} keeps its planned steps; give --epochs or "
                         f"--max-steps to change them")
    handler = RunLog(out / "train.log", delay=True)  # opened on the first record, after the run dir is made
    rank = os.environ.get("RANK", "0")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: "
                                           + ("" if rank == "0" else f"rank {rank}: ") + "%(message)s"))
    if rank != "0":  # under torchrun rank 0 tells the run; the others add only their warnings and errors
        handler.setLevel(logging.WARNING)
    logger.addHandler(handler)
    run = fit(cfg, out, resume=bool(args.resume), overwrite=args.overwrite, keep=given_settings(args))
    if rank == "0":
        print(f"run written to {run}")
    return 0


def _predictor(args: argparse.Namespace):
    """The predictor of predict / evaluate / submit: one run, or several runs' ensemble (--model A --model B)."""
    from unetseg.infer import Predictor

    return Predictor.from_runs(args.model, device=args.device, batch_size=args.batch_size, backend=args.backend,
                               weights=args.weights, amp=args.amp, tta=args.tta, threshold=args.threshold,
                               tile=args.tile, overlap=args.overlap, folds=args.folds, postprocess=args.postprocess,
                               scales=args.scales)


def _cmd_predict(args: argparse.Namespace) -> int:
    from unetseg.infer import Predictor, predict_folder

    predictor = _predictor(args)
    ignore = None
    if args.ignore_masks:  # the run's patterns, unless given
        ignore = dataclasses.replace(predictor.config.data, ignore_masks=args.ignore_masks)
        ignore.ignore_pattern = args.ignore_pattern if args.ignore_pattern is not None else ignore.ignore_pattern
    written = predict_folder(predictor, args.input, args.out, overlays=args.overlay, progress=_interactive(),
                             ignore=ignore, probs=args.save_probs, fmt=args.format)
    if args.format == "coco":
        print(f"COCO predictions written to {written[0]}")
    elif args.format == "cvat":
        print(f"{len(written)} masks written in CVAT's Segmentation mask 1.1 layout to {args.out}")
    else:
        print(f"{len(written)} masks written to {Path(args.out) / 'masks'}")
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    from unetseg.infer import Predictor
    from unetseg.infer.submit import write_submission

    predictor = _predictor(args)
    out = write_submission(predictor, args.images, args.out, progress=_interactive())
    print(f"submission written to {out}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from unetseg.infer.predict import THRESHOLD_FILE
    from unetseg.data import find_pairs
    from unetseg.checkpoint import is_cv_run, read_split
    from unetseg.data.split import pairs_of_split
    from unetseg.infer import evaluate_pairs

    runs = args.model
    model = runs[0]
    if len(runs) > 1:
        one = ["--tune-threshold"] * args.tune_threshold + [f"--split {args.split}"] * (args.split not in (None, "all"))
        if one:
            raise ValueError(f"{' and '.join(one)}: for one run (its threshold, its split); an ensemble of {len(runs)} "
                             f"runs is evaluated on --split all of the data given (--data, or {model}'s)")
    if args.tune_threshold and is_cv_run(model):
        given = [f"--{f.replace('_', '-')}" for f in _PAIRING if getattr(args, f) is not None]
        given += ["--split"] * (args.split is not None) + ["--tta"] * (args.tta is not None) + ["--scales"] * (args.scales is not None) \
            + ["--folds"] * bool(args.folds) \
            + ["--weights best"] * (args.weights != "final")
        if given:
            raise ValueError(f"--tune-threshold of a cross-validation run reads its out-of-fold probabilities "
                             f"(every training image once, no TTA, final weights): {', '.join(given)} do not apply")
        return _tune_cv_threshold(model)
    predictor = _predictor(args)
    data = dataclasses.replace(predictor.config.data)  # the run's pairing rules, patterns and ignore masks ...
    given = {f: getattr(args, f) for f in _PAIRING if getattr(args, f) is not None}
    if given.keys() & _LOCATION:  # ... unless the data is elsewhere: then only what the flags say
        for f in _LOCATION | {"ignore_masks", "val_data", "val_images", "val_masks", "val_ignore_masks"}:
            setattr(data, f, "")
    for f, value in given.items():
        setattr(data, f, value)
    if args.split is None:  # a threshold is tuned on the images the model did not train on
        args.split = "val" if args.tune_threshold and not given.keys() & _LOCATION else "all"
    pairs = find_pairs(data)
    if args.split != "all" and is_cv_run(model):
        raise ValueError(f"--split {args.split}: {model} is a cross-validation run, whose folds together "
                         f"trained on every pair; its out-of-fold scores are in {Path(model) / 'cv'} (one "
                         f"fold's split: --model {Path(model) / 'fold_0'} --split {args.split})")
    if args.split != "all":
        pairs = pairs_of_split(pairs, args.split, read_split(model, args.split))
    if args.tune_threshold and predictor.config.model.num_classes != 1:
        raise ValueError("--tune-threshold: only for binary models (a multi-class model takes the argmax)")
    if args.tune_threshold and args.split == "train":
        raise ValueError("--tune-threshold --split train: a threshold tuned on the training images flatters the "
                         "model; use --split val (the default) or pairs it never saw")
    thresholds = [round(0.05 * k, 2) for k in range(1, 20)] if args.tune_threshold else []
    meta = {"model": " + ".join(map(str, runs)), "split": args.split, "weights": args.weights, "tta": predictor.tta,
            "scales": list(predictor.scales), "threshold": predictor.threshold}
    result = evaluate_pairs(predictor, pairs, args.out, progress=_interactive(), thresholds=thresholds, meta=meta,
                            background=args.background, settings=_score_settings(args), resamples=args.resamples,
                            seed=args.seed)
    scored = "" if result["scored_images"] == result["images"] else \
        f", {result['images'] - result['scored_images']} with nothing to find and nothing found left out of the means"
    print(f"mean Dice {result['mean_dice']:.5f}  mean IoU over images {result['image_mean_iou']:.5f}  global Dice "
          f"{result['global_dice']:.5f}  ({result['images']} images, {args.split}{scored})")
    if predictor.config.model.num_classes > 1:  # the field's multi-class table, from the pooled confusion matrix
        left_out = [n for n in result["classes"] if n not in result["scored_classes"]]
        print(f"mIoU {result['miou']:.4f} (pooled, every class, as VOC and CamVid count it), global pixel accuracy "
              f"{result['pixel_accuracy']:.4f}; mean Dice over {len(result['scored_classes'])} classes"
              + (f" ({', '.join(left_out)} left out: --background)" if left_out else ""))
    _print_scores(result)
    if args.tune_threshold:
        scores = result["threshold_dice"]
        best = max(scores, key=lambda t: (scores[t], -abs(t - 0.5)))  # ties: the one nearest 0.5
        (Path(model) / THRESHOLD_FILE).write_text(json.dumps(
            {"threshold": best, "mean_dice": scores[best], "mean_dice_at_0.5": scores[0.5], "split": args.split,
             "images": result["images"], "weights": args.weights, "tta": predictor.tta}, indent=2) + "\n")
        print(f"threshold {best:.2f}: mean Dice {scores[best]:.5f} (0.50: {scores[0.5]:.5f}); stored in "
              f"{Path(model) / THRESHOLD_FILE}, used by predict, evaluate and submit from now on")
    if args.out:
        print(f"per-image scores and the error overlays of the worst and best images in {args.out}")
    return 0


def _tune_cv_threshold(model: str) -> int:
    """``evaluate --tune-threshold`` of a cross-validation run: on its out-of-fold probabilities, never on images a
    model trained on; stored in the run for predict, evaluate and submit (of the fold ensemble)."""
    from unetseg.infer.predict import THRESHOLD_FILE
    from unetseg.train.cv import tune_cv_threshold

    scores = tune_cv_threshold(model, [round(0.05 * k, 2) for k in range(1, 20)])
    best = max(scores, key=lambda t: (scores[t], -abs(t - 0.5)))  # ties: the one nearest 0.5
    (Path(model) / THRESHOLD_FILE).write_text(json.dumps(
        {"threshold": best, "mean_dice": scores[best], "mean_dice_at_0.5": scores[0.5], "split": "out of fold",
         "weights": "final", "tta": False}, indent=2) + "\n")
    print(f"threshold {best:.2f}: out-of-fold mean Dice {scores[best]:.5f} (0.50: {scores[0.5]:.5f}); stored in "
          f"{Path(model) / THRESHOLD_FILE}, used by predict, evaluate and submit of the fold ensemble")
    return 0


def _spacing(text: str) -> tuple[float, float]:
    """``--spacing``: a pixel's size, one number or WIDTH,HEIGHT."""
    try:
        values = [float(v) for v in text.lower().replace("x", ",").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"a pixel's size: S or SX,SY, got {text!r}") from None
    if len(values) not in (1, 2) or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"a pixel's size: S or SX,SY (positive), got {text!r}")
    return (values[0], values[-1])


def _add_score_flags(p: argparse.ArgumentParser) -> None:
    """How ``evaluate`` and ``score`` score: the boundary scores' units and tolerance, and the intervals."""
    from unetseg.score.intervals import RESAMPLES
    from unetseg.score.surface import BOUNDARY_RATIO, TOLERANCE

    g = p.add_argument_group("scores and intervals")
    g.add_argument("--spacing", type=_spacing, metavar="S|SX,SY", help="a pixel's size (width, height) in the "
                   "units HD95, ASSD and --tolerance are given in (default: pixels)")
    g.add_argument("--tolerance", type=float, default=TOLERANCE, help="normalised surface Dice: a boundary pixel "
                   "within this distance of the other boundary counts as found (default: %(default)s, in pixels or "
                   "--spacing units)")
    g.add_argument("--boundary-ratio", type=float, default=BOUNDARY_RATIO, help="boundary IoU's band as a share of "
                   "the image diagonal (default: %(default)s, Cheng et al.'s)")
    g.add_argument("--surface", action=argparse.BooleanOptionalAction, default=True,
                   help="the boundary scores: HD95, ASSD, NSD, boundary IoU")
    g.add_argument("--topology", action=argparse.BooleanOptionalAction, default=True, help="clDice")
    g.add_argument("--resamples", type=int, default=RESAMPLES, help="bootstrap resamples of each interval "
                   "(default: %(default)s; 0: no intervals)")
    g.add_argument("--seed", type=int, default=0, help="the bootstrap's seed (default: %(default)s)")


def _score_settings(args: argparse.Namespace):
    from unetseg.score import ScoreSettings

    if args.tolerance < 0 or not 0 < args.boundary_ratio < 1:
        raise ValueError(f"--tolerance {args.tolerance} / --boundary-ratio {args.boundary_ratio}: a tolerance of "
                         f"0 or more and a ratio between 0 and 1")
    if args.resamples < 0:
        raise ValueError(f"--resamples {args.resamples}: 0 or more")
    return ScoreSettings(spacing=args.spacing, tolerance=args.tolerance, boundary_ratio=args.boundary_ratio,
                         surface=args.surface, topology=args.topology)


def _interval(entry: dict) -> str:
    value, low, high = entry["value"], entry.get("low", float("nan")), entry.get("high", float("nan"))
    return f"{value:.4f}" + ("" if low != low else f" [{low:.4f}, {high:.4f}]")


def _print_scores(result: dict) -> None:
    """The scores' table: each mean over images and each pooled score with its interval; per class for
    multi-class masks."""
    level, resamples = int(round(100 * result["interval"]["level"])), result["interval"]["resamples"]
    interval = result["interval"]
    kind = "Student's t" if interval["method"].startswith("Student") else f"bootstrap, {resamples} resamples"
    none = not resamples or ("level_used" in interval and interval["level_used"] is None)  # older files: no key
    print("means over images (no intervals: --resamples 0 or fewer than 3 images):" if none
          else f"means over images, {level}% intervals over images ({kind}):")
    for name, entry in result["metrics"].items():
        left = f"  ({entry['nan']} image(s) without it: NaN)" if entry["nan"] else ""
        print(f"  {name:<16}{_interval(entry)}{left}")
    print("pooled over every pixel:")
    for name, entry in result["pooled"].items():
        print(f"  {name:<16}{_interval(entry)}")
    if len(result["classes"]) > 2:
        width = max(len(c["name"]) for c in result["per_class"]) + 2
        print(f"{'class':<{width}}{'IoU (pooled)':>28}{'Dice (pooled)':>28}{'pixels':>12}")
        for c in result["per_class"]:
            iou = _interval({"value": c["iou"], "low": c["iou_low"], "high": c["iou_high"]})
            dice = _interval({"value": c["dice"], "low": c["dice_low"], "high": c["dice_high"]})
            print(f"{c['name']:<{width}}{iou:>28}{dice:>28}{c['pixels']:>12d}")
        if "auc" in result["per_class"][0]:  # each class against the rest, pooled over the set
            print(f"{'class':<{width}}{'AUC':>10}{'AP':>10}{'best F1':>10}  (each class against the rest, pooled)")
            for c in result["per_class"]:
                print(f"{c['name']:<{width}}{c['auc']:>10.4f}{c['ap']:>10.4f}{c['best_f1']:>10.4f}")


def _cmd_score(args: argparse.Namespace) -> int:
    from unetseg.score.folder import score_folder

    data = DataConfig()
    if args.model:
        from unetseg.checkpoint import CONFIG_FILE, CheckpointError

        if not (Path(args.model) / CONFIG_FILE).is_file():
            raise CheckpointError(f"{Path(args.model) / CONFIG_FILE}: not found; is {args.model} a unetseg run?")
        data = dataclasses.replace(RunConfig.load(Path(args.model) / CONFIG_FILE).data, data="", images="", masks="",
                                   pairs_csv="",
                                   ignore_masks="", image_pattern="", mask_pattern="", ignore_pattern="",
                                   val_data="", val_images="", val_masks="", val_ignore_masks="")
    fields = {key.split(".")[1]: value for key, value in vars(args).items() if key.startswith("data.")}
    fields["masks"] = args.masks
    if args.pred_pattern:
        fields["image_pattern"] = args.pred_pattern
    data = DataConfig.from_dict({**data.to_dict(), **fields})
    background = args.background  # -1: not given; the run's where --model names one, else every class
    if background == -1:
        background = data.background if args.model else None
    result = score_folder(args.pred, data, args.out, args.probs, _score_settings(args), background, args.resamples,
                          args.seed, progress=_interactive())
    print(f"{result['images']} predictions in {args.pred} scored against {args.masks}")
    _print_scores(result)
    if args.out:
        print(f"per-image scores, summary.json and the confusion matrix in {args.out}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from unetseg.score.compare import compare, format_comparison, format_ranking

    sets = list(args.sets)
    if args.pairs:
        from itertools import combinations

        from unetseg.train.cv import ensemble_scores

        if len(sets) < 2:
            raise ValueError("--pairs: name at least two cross-validation runs")
        out = Path(args.pairs_out) if args.pairs_out else Path(sets[0]) / "cv" / "ensembles"
        for a, b in combinations(args.sets, 2):
            sets.append(str(ensemble_scores([a, b], out, progress=_interactive())))
    for comparison in compare(sets, args.metric, args.resamples, args.seed):
        print(format_comparison(comparison))
    if args.pairs:
        print(format_ranking(sets, args.metric))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from unetseg.report import write_report

    out = args.out or (Path(args.runs[0]) / "report.html" if len(args.runs) == 1 else "report.html")
    path = write_report(args.runs, out, evaluate=args.evaluate, progress=_interactive())
    print(f"report written to {path}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from unetseg.infer.export import export_onnx

    path, diff = export_onnx(args.model, args.out, args.image)
    print(f"wrote {path} (dynamic batch, height, width); ONNX Runtime vs PyTorch max abs difference {diff:.3g}")
    return 0


def _cmd_check_data(args: argparse.Namespace) -> int:
    from unetseg.data.check import ceiling_lines, format_report, scan
    from unetseg.data.pairing import pair_files

    cfg = build_config(args)
    if args.dir:
        cfg.data.data = args.dir
    pairing = pair_files(cfg.data)
    _, report = scan(cfg, progress=_interactive(), pairing=pairing)
    text = format_report(report).split("\n")
    if not report.errors:  # before the verdict line
        text[-1:-1] = ceiling_lines(pairing, cfg.data, report)
    print("\n".join(text))
    return 2 if report.errors else 0


def _cmd_import(args: argparse.Namespace) -> int:
    from unetseg.labels import import_coco, import_cvat, import_labelme

    if args.format == "cvat":
        unused = [f for f, given in (("--labels", args.labels), ("--skip-missing", args.skip_missing)) if given]
        if unused:
            raise ValueError(f"{', '.join(unused)}: not for cvat (its labelmap.txt lists the classes)")
        result = import_cvat(args.src, args.out, images=args.images, link=args.link, overwrite=args.overwrite,
                             progress=_interactive())
    elif args.format == "labelme":
        unused = [f for f, given in (("--images", args.images), ("--link", args.link),
                                     ("--skip-missing", args.skip_missing)) if given]
        if unused:
            raise ValueError(f"{', '.join(unused)}: only for coco (a LabelMe file names its own image)")
        result = import_labelme(args.src, args.out, labels=args.labels, overwrite=args.overwrite,
                                progress=_interactive())
    else:
        if args.labels:
            raise ValueError("--labels: only for labelme (a COCO file lists its categories)")
        result = import_coco(args.src, args.out, images=args.images, link=args.link, overwrite=args.overwrite,
                             skip_missing=args.skip_missing, progress=_interactive())
    print(f"{result.out}: {result.images} images, {len(result.classes)} classes with background 0 "
          f"({result.out / 'classes.csv'}); next: unetseg check-data {result.out} --classes "
          f"{result.out / 'classes.csv'}")
    return 0


def _cmd_demo_data(args: argparse.Namespace) -> int:
    from unetseg.data.synthetic import make_multiclass_dataset, make_synthetic_dataset

    if args.multiclass:
        out = make_multiclass_dataset(args.out, count=args.count, size=args.size, seed=args.seed)
        print(f"{args.count} synthetic multi-class pairs (4 classes, void 255 at the edges) and classes.csv written "
              f"to {out}; train with --classes {out / 'classes.csv'} --ignore-index 255")
        return 0
    out = make_synthetic_dataset(args.out, count=args.count, size=args.size, seed=args.seed)
    print(f"{args.count} synthetic image/mask pairs written to {out}")
    return 0


def _interactive() -> bool:
    return sys.stderr.isatty()


#: One line per subcommand in ``unetseg --help`` (each command's own --help has the longer description).
_SHORT = {'evaluate': "predict and score at each image's size, intervals", 'submit': 'a Carvana submission: img,rle_mask (restartable)',
          'score': "score any tool's masks: Dice, IoU, HD95, AUC, ...", 'compare': 'compare scored sets image by image (Wilcoxon)',
          'report': 'one self-contained HTML page about one or several runs',
          'export': "the run's model as ONNX, checked against PyTorch", 'check-data': 'check a dataset before training (exit 0: it can train)',
          'import': 'a COCO, LabelMe or CVAT export as a folder of pairs',
          'demo-data': 'write a synthetic image/mask dataset (no download)'}
GUIDES = ("guides by task in the repository's docs/ (README.md lists them): data, training, multi-class, pretrained, "
          "cross-validation, predictions, scoring, speed, distributed, runs, api. unetseg COMMAND --help gives a "
          "command's flags.")


def build_parser() -> argparse.ArgumentParser:
    """The ``unetseg`` argument parser."""
    parser = _Parser(prog="unetseg", description="U-Net semantic segmentation: train, predict, "
                                     "evaluate.", epilog=GUIDES)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of errors")
    parser.add_argument("--max-image-pixels", type=int, metavar="N",
                        help="raise Pillow's decompression-bomb limit (images over 2N pixels are refused; default "
                        "about 89 million) for large files you trust")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train a U-Net on a folder of image/mask pairs")
    _add_config_flags(p, groups=TRAIN_GROUPS, others={
        "out": lambda g: g.add_argument("--out", help="run folder to write (config.json, model.safetensors, last.pt, "
                                        "metrics.jsonl)"),
        "config": lambda g: g.add_argument("--config", help="a config.json to start from (flags override it)"),
        "resume": lambda g: g.add_argument(
            "--resume", metavar="RUN|auto", help="auto (with --out RUN): resume from RUN/last.pt where it is there, "
            "start afresh where RUN is absent or empty, refuse a folder holding anything else (for torchrun "
            "--max-restarts, preemptible machines, schedulers that run a command again). RUN: continue the run in "
            "this folder from its last.pt (its config.json, changed by any flags given, e.g. --epochs 30)"),
        "overwrite": lambda g: g.add_argument("--overwrite", action="store_true",
                                              help="replace a run folder that is not empty")})
    p.set_defaults(handler=_cmd_train)

    for name, helptext in (("predict", "write a mask (and an overlay) per image"),
                           ("evaluate", "predict and score at original resolution: Dice, IoU, boundary and "
                            "topology scores, with intervals"),
                           ("submit", "a Carvana submission: img,rle_mask per image (restartable, gzip)")):
        p = sub.add_parser(name, help=_SHORT.get(name, helptext), description=helptext)
        p.add_argument("--model", required=True, metavar="RUN", action="extend", nargs="+",
                       help="a run folder written by unetseg train; several (--model A --model B): their ensemble, "
                       "the mean of their probabilities")
        p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
        p.add_argument("--batch-size", type=int, default=0,
                       help="images per forward pass (0: from the GPU's free memory; 4 on CPUs)")
        p.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch",
                       help="onnxruntime runs the run's model.onnx (write it with unetseg export)")
        p.add_argument("--amp", choices=("auto", "fp16", "bf16", "off"), default="auto",
                       help="precision of this device, whatever the run was trained with: auto = bf16 where the "
                       "device has it natively (CUDA: else fp16), fp32 on other CPUs")
        p.add_argument("--weights", choices=("final", "best"), default="final",
                       help="final: model.safetensors, the weights at the end of training (default: with a small "
                       "validation split the best epoch is often chance); best: best.safetensors, the best "
                       "validation Dice")
        p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                       help="test-time augmentation: average the probabilities over horizontal flips (and vertical "
                       "ones where training used them): 2-4x the time (default: the run's predict_tta; scene runs "
                       "of the budget plan have it on, --no-tta turns it off)")
        p.add_argument("--scales", type=float, nargs="+", metavar="S",
                       help="multi-scale inference: the input resized by each factor (1 = the run's input size), the "
                       "probabilities averaged, e.g. --scales 1 1.5 2 (with --tta each scale's flips too): one "
                       "forward pass per scale, each costing its area (default: the run's predict_scales; 1 for "
                       "one pass)")
        p.add_argument("--threshold", type=float, help="foreground probability threshold of a binary model "
                       "(default: the one evaluate --tune-threshold stored in the run, else 0.5)")
        p.add_argument("--tile", type=_size, metavar="WxH", help="predict each image (at the model's input size) "
                       "by sliding windows of this size, Gaussian-blended, instead of in one pass")
        p.add_argument("--overlap", type=float, default=0.5, help="share of a window its neighbour covers (--tile)")
        p.add_argument("--folds", type=int, nargs="+", metavar="N", help="a cross-validation run (train --folds K): "
                       "average these folds only (default: every fold)")
        p.add_argument("--postprocess", action=argparse.BooleanOptionalAction, default=True,
                       help="apply the run's postprocessing.json (chosen on a cross-validation run's out-of-fold "
                       "predictions)")
        if name == "predict":
            p.add_argument("--input", required=True, help="an image file or a folder of images")
            p.add_argument("--out", required=True, help="folder for masks/ and overlays/")
            p.add_argument("--overlay", action=argparse.BooleanOptionalAction, default=True,
                           help="also write overlays/<name>.jpg")
            p.add_argument("--ignore-masks", metavar="DIR", help="ignore masks of the inputs (e.g. DRIVE's field of "
                           "view): predictions outside them are written as background")
            p.add_argument("--ignore-pattern", help="their file name pattern (default: the run's)")
            p.add_argument("--save-probs", action="store_true", help="also write probs/<name>.png: the probabilities "
                           "at the image's size, 8-bit (one PNG per class for multi-class models)")
            p.add_argument("--format", choices=("masks", "coco", "cvat"), default="masks",
                           help="masks: masks/<name>.png in the training masks' encoding; coco: one COCO file, "
                           "predictions.coco.json (RLE per image and class, its mean probability as score); cvat: "
                           "CVAT's Segmentation mask 1.1 layout. coco and cvat import into the labelling tools as "
                           "pre-annotations, and back with unetseg import")
            p.set_defaults(handler=_cmd_predict)
        elif name == "submit":
            p.add_argument("--images", required=True, help="the test photos (a folder, e.g. Carvana's test/)")
            p.add_argument("--out", required=True, help="the submission to write, e.g. submission.csv.gz; a killed "
                           "run started again goes on from OUT.partial")
            p.set_defaults(handler=_cmd_submit)
        else:
            helps = _field_help(DataConfig)
            for f in _PAIRING:
                p.add_argument(f"--{f.replace('_', '-')}", help=helps[f] + " (default: the run's)")
            p.add_argument("--split", choices=("all", "val", "train"),
                           help="evaluate all pairs (the default), or the run's saved validation or training split "
                           "(--tune-threshold: val by default, never train)")
            p.add_argument("--out", help="folder for per_image.csv, summary.json and overlays/ (error overlays of "
                           "the worst and best images: missed pixels red, extra pixels blue)")
            p.add_argument("--tune-threshold", action="store_true", help="binary models: find the threshold with the "
                           "best mean Dice on these pairs (use --split val) and store it in RUN/threshold.json, "
                           "where predict, evaluate and submit take it from")
            p.add_argument("--background", type=_background, metavar="K|none", default=-1,
                           help="multi-class: leave class K out of mean Dice, or none: score every class (default: "
                           "the run's --background; binary masks score their foreground)")
            _add_score_flags(p)
            p.set_defaults(handler=_cmd_evaluate)

    p = sub.add_parser("score", help=_SHORT["score"], description="score masks written by any tool against the true masks: Dice, IoU, "
                       "precision, recall, specificity, HD95, ASSD, surface Dice, boundary IoU, clDice (AUC, AP with "
                       "--probs), each with a bootstrap interval")
    p.add_argument("--pred", required=True, metavar="DIR", help="the predicted masks: one file per image, named as "
                   "the images are (unetseg predict's masks/ folder), or by --pred-pattern")
    p.add_argument("--masks", required=True, metavar="DIR", help="the true masks")
    p.add_argument("--pred-pattern", help="the predictions' file name pattern, e.g. '{id}_training.png' (the "
                   "images' pattern with the predictions' extension)")
    p.add_argument("--probs", metavar="DIR", help="the probabilities, for AUC, AP and the best F1: binary masks the "
                   "foreground's, <name>.npy (floats in [0, 1]) or <name>.png (8-bit, predict --save-probs's probs/); "
                   "multi-class masks each class's against the rest, <name>.npy (K, H, W) or <name>_class<k>.png")
    p.add_argument("--model", metavar="RUN", help="read the masks as this run reads them (its encoding, void values "
                   "and class names) instead of finding their encoding")
    p.add_argument("--background", type=_background, metavar="K|none", default=-1,
                   help="multi-class: leave class K out of the means (default: the --model run's, else none: every "
                   "class is scored)")
    p.add_argument("--out", help="folder for per_image.csv, summary.json and the confusion matrix")
    g = p.add_argument_group("how the masks are read (as for training)")
    fields = _config_fields(("data",))
    for name in ("mask_pattern", "ignore_masks", "ignore_pattern", "ignore_index", "classes", "class_names",
                 "invert_mask", "snap_masks"):
        _add_config_flag(g, *fields[f"data.{name}"])
    _add_score_flags(p)
    p.set_defaults(handler=_cmd_score)

    p = sub.add_parser("compare", help=_SHORT["compare"], description="scored sets on the same images, each against the first: the per-image "
                       "differences' mean with its interval and a Wilcoxon signed-rank p-value")
    p.add_argument("sets", nargs="+", metavar="RUN_OR_DIR", help="run folders (their eval/) or folders of "
                   "per_image.csv written by evaluate --out or score --out; the first is the baseline")
    p.add_argument("--metric", default="dice", help="the per-image score to compare (default: %(default)s; any "
                   "column of per_image.csv: iou, hd95, cldice, ...)")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="the bootstrap's seed (default: %(default)s)")
    p.add_argument("--pairs", action="store_true", help="cross-validation runs split alike: also score each pair's "
                   "ensemble out of fold (fold N with fold N, the mean of their probabilities) and rank the runs "
                   "and pairs (nnU-Net's find_best_configuration)")
    p.add_argument("--pairs-out", metavar="DIR", help="where the pairs' out-of-fold scores go (default: "
                   "FIRST_RUN/cv/ensembles/A+B; scored once, read again while the runs are unchanged)")
    p.set_defaults(handler=_cmd_compare)

    p = sub.add_parser("report", help=_SHORT["report"], description="one self-contained HTML file about one or several runs: scores, curves, "
                       "settings side by side, timing, the data check, per-image Dice and error overlays")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders written by unetseg train")
    p.add_argument("--out", help="the HTML file to write (default: RUN/report.html for one run, report.html for "
                   "several)")
    p.add_argument("--evaluate", action=argparse.BooleanOptionalAction, default=True,
                   help="evaluate a run's validation split where RUN/eval holds no evaluation newer than its weights "
                   "(stored there for the next report)")
    p.set_defaults(handler=_cmd_report)

    p = sub.add_parser("export", help=_SHORT["export"], description="write the run's model as ONNX and check it against PyTorch")
    p.add_argument("--model", required=True, metavar="RUN", help="a run folder written by unetseg train")
    p.add_argument("--format", choices=("onnx",), default="onnx", help="the export format")
    p.add_argument("--out", help="the file to write (default: RUN/model.onnx)")
    p.add_argument("--image", help="an image to compare ONNX Runtime and PyTorch on (default: random input)")
    p.set_defaults(handler=_cmd_export)

    p = sub.add_parser("check-data", help=_SHORT["check-data"], description="check a dataset before training: pairing, sizes, channels, mask encoding, "
                       "classes and every problem with its file (exit 0 when it can train, 2 otherwise)")
    p.add_argument("dir", nargs="?", help="dataset folder (or name the folders with --images/--masks)")
    p.add_argument("--config", help="a config.json to start from (flags override it)")
    _add_config_flags(p, sections=("data", "model"))
    p.set_defaults(handler=_cmd_check_data)

    p = sub.add_parser("import", help=_SHORT["import"], description="a labelling tool's export (COCO, LabelMe) as a folder of image/mask pairs with "
                       "its classes file, for check-data and train")
    p.add_argument("format", choices=["coco", "labelme", "cvat"], help="coco: an instances JSON (polygons, RLE, "
                   "iscrowd), also Label Studio's and CVAT's COCO exports; labelme: LabelMe's per-image JSON files; "
                   "cvat: CVAT's 'Segmentation mask 1.1' export folder (labelmap.txt + SegmentationClass/), or "
                   "Pascal VOC's (palette PNGs, 255 void)")
    p.add_argument("src", help="the export: the COCO JSON file; for labelme a folder of .json files (or one); for "
                   "cvat the export's folder")
    p.add_argument("--labels", metavar="FILE", help="labelme: the classes in LabelMe's labels.txt layout (__ignore__ "
                   "= void 255, _background_ = 0, then one name a line; default: the labels found, sorted)")
    p.add_argument("--out", required=True, help="the folder to write: images/, masks/ (palette PNGs of the category "
                   "ids, 0 background) and classes.csv")
    p.add_argument("--images", help="coco: the folder the file names are relative to (default: images/ beside the "
                   "JSON file where it exists, else its folder); cvat: the images' folder (default: JPEGImages/)")
    p.add_argument("--link", action="store_true", help="symbolic links to the images (default: copies)")
    p.add_argument("--skip-missing", action="store_true", help="import the rest where images of the file are "
                   "missing on disk (each named)")
    p.add_argument("--overwrite", action="store_true", help="replace --out where it exists")
    p.set_defaults(handler=_cmd_import)

    p = sub.add_parser("demo-data", help=_SHORT["demo-data"], description="write a synthetic image/mask dataset (no download needed)")
    p.add_argument("--out", required=True, help="dataset folder to write (images/ + masks/)")
    p.add_argument("--count", type=int, default=120, help="number of pairs")
    p.add_argument("--size", type=_size, default=(128, 96), metavar="WxH", help="image size")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--multiclass", action="store_true", help="4 classes (background, discs, boxes, thin lines) "
                   "with void (255) at the objects' edges, and classes.csv")
    p.set_defaults(handler=_cmd_demo_data)
    return parser


def _configure_logging(args: argparse.Namespace) -> None:
    """One console handler on the current stderr (replacing an earlier call's), at the -v/-q level."""
    logger.setLevel(logging.DEBUG)
    for old in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
        logger.removeHandler(old)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(message)s"))
    quiet = args.quiet or os.environ.get("RANK", "0") != "0"  # under torchrun only rank 0 talks
    console.setLevel(logging.DEBUG if args.verbose else logging.WARNING if quiet else logging.INFO)
    logger.addHandler(console)


def _lost_peer(err: BaseException) -> bool:
    """True for the errors torch.distributed raises on the processes left when another fails or goes silent."""
    import torch.distributed as dist

    text = str(err)
    return isinstance(err, dist.DistError) or (isinstance(err, RuntimeError) and any(
        s in text for s in ("Connection closed by peer", "Connection reset by peer")))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``unetseg`` command line; returns the exit code (2 for bad input, with a one-line error)."""
    from unetseg.checkpoint import CheckpointError
    from unetseg.data import DataError
    from unetseg.train import NonFiniteLossError

    args = build_parser().parse_args(argv)
    _configure_logging(args)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        if args.max_image_pixels is not None:
            from unetseg.data.io import set_max_image_pixels

            set_max_image_pixels(args.max_image_pixels)
        return handler(args)
    except (DataError, CheckpointError, ValueError, OSError) as err:
        if args.debug:
            raise
        logger.error("error: %s", str(err).splitlines()[0] if str(err) else type(err).__name__)
        return 2
    except KeyboardInterrupt as err:  # TrainingInterrupted says where the state was saved
        logger.error("interrupted%s", f": {err}" if str(err) else "")
        return 130
    except NonFiniteLossError as err:
        if args.debug:
            raise
        logger.error("error: %s", err)
        return 1
    except Exception as err:  # under torchrun: one line per process (into train.log too), not N tracebacks
        if args.debug or int(os.environ.get("WORLD_SIZE", "1")) < 2:
            raise
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        if _lost_peer(err):
            logger.error("error: rank %s: lost the other training processes (%s); the first to fail says why, "
                         "and --resume auto goes on from the last checkpoint", os.environ.get("RANK", "0"), first)
        else:
            logger.error("error: rank %s: %s: %s (unetseg --debug shows the traceback)", os.environ.get("RANK", "0"),
                         type(err).__name__, first)
        return 1
    finally:
        for h in [h for h in logger.handlers if isinstance(h, logging.FileHandler)]:
            logger.removeHandler(h)
            h.close()


if __name__ == "__main__":
    raise SystemExit(main())
