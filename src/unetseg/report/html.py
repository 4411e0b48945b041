"""``unetseg report``: one self-contained HTML file about one or several runs.

Images are embedded as data URIs and the styles inline: the file opens offline, needs no JavaScript, and can be mailed
or attached to a ticket. It shows each run's scores, learning curves (several runs on one plot), timing and device,
settings side by side (differences highlighted), the budget plan, the data check, the per-image Dice of the
validation split and error overlays of its worst and best images.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import logging
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from unetseg._atomic import atomic_write_text
from unetseg.checkpoint import (CONFIG_FILE, METRICS_FILE, RUN_INFO_FILE, WEIGHTS_FILE, CheckpointError, cv_folds,
                                fold_dir, is_cv_run, read_split)
from unetseg.config import RunConfig
from unetseg.data.classes import default_colour
from unetseg.data.errors import DataError
from unetseg.data.pairing import find_pairs
from unetseg.data.split import pairs_of_split
from unetseg.drawing.curves import plot_curves, read_metrics
from unetseg.drawing.overlays import EDGE, EXTRA, MISSED
from unetseg.infer import Predictor, evaluate_pairs
from unetseg.infer.predict import stored_threshold

logger = logging.getLogger(__name__)

EVAL_DIR = "eval"  # where the report finds (or stores) the run's evaluation of its validation split
PER_IMAGE_ROWS = 40  # rows of the per-image table shown before the rest is folded away


@dataclass
class RunSummary:
    """What the report shows of one run."""

    path: Path
    name: str
    config: RunConfig
    metrics: list[dict[str, Any]]
    info: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] | None = None
    per_image: list[dict[str, str]] = field(default_factory=list)
    no_evaluation: str = ""  # why there is none
    eval_dir: Path | None = None  # where its evaluation is (RUN/eval; a cross-validation fold's: RUN/cv/fold_N)
    cv: dict[str, Any] | None = None  # a cross-validation run's pooled out-of-fold scores (on its first fold)

    def __post_init__(self) -> None:
        if self.eval_dir is None:
            self.eval_dir = self.path / EVAL_DIR


def _load_run(path: Path, name: str, evaluate: bool, progress: bool, eval_dir: Path | None = None) -> RunSummary:
    if not (path / CONFIG_FILE).is_file():
        raise DataError(f"{path}: not a run folder (no {CONFIG_FILE})")
    run = RunSummary(path, name, RunConfig.load(path / CONFIG_FILE), read_metrics(path / METRICS_FILE),
                     eval_dir=eval_dir)
    info_file = path / RUN_INFO_FILE
    if info_file.is_file():
        run.info = json.loads(info_file.read_text())
    _evaluation(run, evaluate, progress)
    return run


def _evaluation(run: RunSummary, evaluate: bool, progress: bool) -> None:
    """The run's evaluation of its validation split: the one in ``RUN/eval`` when it is newer than the weights,
    else made now (and stored there), unless ``evaluate`` is off."""
    folder = run.eval_dir
    summary_file, weights = folder / "summary.json", run.path / WEIGHTS_FILE
    if folder != run.path / EVAL_DIR:  # a fold's out-of-fold evaluation, written when its run finished
        if summary_file.is_file():
            run.evaluation = json.loads(summary_file.read_text())
            with open(folder / "per_image.csv", newline="") as fh:
                run.per_image = list(csv.DictReader(fh))
        else:
            run.no_evaluation = f"no out-of-fold evaluation in {folder} (the CV scores come when every fold " \
                                f"has finished)"
        return
    if not weights.is_file():
        run.no_evaluation = f"no weights yet ({weights.name})"
        return
    fresh = summary_file.is_file() and summary_file.stat().st_mtime >= weights.stat().st_mtime
    if fresh:  # of the validation split, at the threshold and the inference settings predict uses now
        stored = json.loads(summary_file.read_text())
        data = run.config.data
        fresh = stored.get("split") == "val" and stored.get("weights", "final") == "final" and \
            bool(stored.get("tta")) == data.predict_tta and stored.get("scales", [1.0]) == list(data.predict_scales) \
            and stored.get("threshold") == stored_threshold(run.path, tta=data.predict_tta)
    if not fresh:
        if not evaluate:
            run.no_evaluation = f"no evaluation of the validation split in {folder} (unetseg evaluate --model " \
                                f"{run.path} --split val --out {folder})"
            return
        try:
            _evaluate_validation(run.path, folder, progress)
        except (DataError, CheckpointError, OSError, ValueError) as err:
            run.no_evaluation = f"validation not evaluated: {err}"
            logger.warning("warning: %s: %s", run.path, run.no_evaluation)
            return
    run.evaluation = json.loads(summary_file.read_text())
    with open(folder / "per_image.csv", newline="") as fh:
        run.per_image = list(csv.DictReader(fh))


def _evaluate_validation(run_dir: Path, folder: Path, progress: bool) -> None:
    names = read_split(run_dir, "val")
    if not names:
        raise DataError("the run has no validation split")
    predictor = Predictor.from_run(run_dir)
    pairs = pairs_of_split(find_pairs(predictor.config.data), "val", names)
    logger.info("%s: evaluating the %d validation images for the report (stored in %s)", run_dir, len(pairs), folder)
    evaluate_pairs(predictor, pairs, folder, progress=progress,
                   meta={"split": "val", "weights": "final", "tta": predictor.tta, "scales": list(predictor.scales),
                         "threshold": predictor.threshold})


def write_report(runs: list[str | Path], out: str | Path, evaluate: bool = True, progress: bool = False) -> Path:
    """Write the HTML report of ``runs`` to ``out``.

    Args:
        runs: run folders (from ``unetseg train``).
        out: the HTML file to write.
        evaluate: evaluate a run's validation split when ``RUN/eval`` holds no evaluation newer than its weights
            (stored there for the next report); off: such a run's scores and overlays are left out, saying why.
        progress: show progress bars while evaluating.

    Raises:
        DataError: a folder is not a run.
    """
    paths = [Path(r) for r in runs]
    names = [p.resolve().name for p in paths]
    if len(set(names)) < len(names):  # two runs of the same name in different folders
        names = [f"{p.resolve().parent.name}/{p.resolve().name}" for p in paths]
    summaries = []
    for path, name in zip(paths, names):
        if not is_cv_run(path):
            summaries.append(_load_run(path, name, evaluate, progress))
            continue
        # a cross-validation run: each fold a run, evaluated on its own held-out fold; the pooled CV scores above
        cv_file = path / "cv" / "summary.json"
        for k in range(cv_folds(path)):
            fold = fold_dir(path, k)
            if not (fold / CONFIG_FILE).is_file():
                continue
            summaries.append(_load_run(fold, f"{name}/{fold.name}", evaluate, progress, path / "cv" / fold.name))
        if not summaries or summaries[-1].path.parent != path:
            raise DataError(f"{path}: a cross-validation run with no fold trained yet")
        first = next(r for r in summaries if r.path.parent == path)
        first.cv = json.loads(cv_file.read_text()) if cv_file.is_file() else {}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, render(summaries))
    return out


# ---------------------------------------------------------------------------------------------------------- HTML

_STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1280px;
       padding: 0 16px; color: #1d1d1f; }
h1 { font-size: 22px; margin-bottom: 2px; } h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #ddd; }
h3 { font-size: 15px; margin-top: 20px; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f6; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.diff td { background: #fff4c2; }
.score { font-size: 17px; font-weight: 600; }
img.curves { width: 100%; max-width: 1200px; border: 1px solid #eee; }
.gallery { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; width: 400px; max-width: 100%; } figure img { width: 100%; border: 1px solid #ccc; display: block; }
figcaption { font-size: 12px; color: #444; }
pre { background: #f7f7f9; padding: 8px; overflow-x: auto; font-size: 12px; white-space: pre-wrap; }
.swatch { display: inline-block; width: 12px; height: 12px; border: 1px solid #888; vertical-align: middle; }
.note { color: #8a5a00; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "&ndash;"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return _e(value)


def _ci(value: Any, low: Any = None, high: Any = None) -> str:
    """A score and its interval, ``0.9512 [0.9401, 0.9600]``; the score alone where there is no interval."""
    if low is None or high is None or (isinstance(low, float) and low != low):
        return _num(value)
    return f'{_num(value)} <span class="note">[{_num(low)}, {_num(high)}]</span>'


def _scores_table(ev: dict[str, Any]) -> str:
    """Each score's mean over images and each pooled score, with their bootstrap intervals (evaluations made
    before intervals existed have none: nothing is shown)."""
    metrics, pooled = ev.get("metrics") or {}, ev.get("pooled") or {}
    if not metrics:
        return ""
    rows = []
    for name in dict.fromkeys([*metrics, *pooled]):
        m, p = metrics.get(name), pooled.get(name)
        rows.append((name, [_ci(m["value"], m["low"], m["high"]) if m else "&ndash;",
                            _num(m["nan"]) if m and m.get("nan") else "",
                            _ci(p["value"], p["low"], p["high"]) if p else "&ndash;"], False))
    interval, settings = ev.get("interval") or {}, ev.get("settings") or {}
    note = (f'<p class="note">means over images and scores pooled over every pixel; in brackets the '
            f'{round(100 * interval.get("level", 0.95))}% interval: {_e(interval.get("method", ""))}, '
            f'{_e(interval.get("resamples", ""))} resamples, seed {_e(interval.get("seed", ""))}. Distances '
            f'(hd95, assd) in {_e(settings.get("distance_units", "pixels"))}, lower is better there; nsd at a '
            f'tolerance of {_e(settings.get("tolerance", ""))}.</p>')
    return "<h3>Scores</h3>" + note + _table(["score", "mean over images", "images without it", "pooled"], rows)


def _img(data: bytes, mime: str, alt: str, css: str = "", style: str = "") -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img class="{css}" style="{style}" alt="{_e(alt)}" src="data:{mime};base64,{encoded}">'


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def _interval_of(ev: dict[str, Any], name: str) -> str:
    """`` [low, high]`` of a mean score where the evaluation has its interval."""
    m = (ev.get("metrics") or {}).get(name)
    if not m or m.get("low") is None or m["low"] != m["low"]:
        return ""
    return f' <span class="note">[{_num(m["low"])}, {_num(m["high"])}]</span>'


def _facts(run: RunSummary) -> dict[str, str]:
    """The headline rows of the summary table, formatted."""
    m, ev = run.metrics, run.evaluation
    val = [r for r in m if r.get("val_dice") is not None]
    best = max(val, key=lambda r: r["val_dice"]) if val else None
    session = (run.info.get("sessions") or [{}])[-1]
    seconds = sum(r.get("seconds", 0.0) for r in m)
    speeds = [r["images_per_s"] for r in m if r.get("images_per_s")]
    facts = {
        "validation mean Dice (original size)": f'<span class="score">{_num(ev["mean_dice"])}</span>'
        + _interval_of(ev, "dice") if ev else f'<span class="note">{_e(run.no_evaluation)}</span>',
        "validation global Dice": _num(ev["global_dice"]) if ev else "&ndash;",
        **({"validation mIoU (pooled confusion)": f'<span class="score">{_num(ev["miou"])}</span>',
            "validation pixel accuracy": _num(ev.get("pixel_accuracy"))}
           if ev and ev.get("miou") is not None and len(ev.get("per_class", [])) > 2 else {}),
        "validation images": (_num(ev["images"]) if ev else "&ndash;")
        + (' <span class="note">(trained on too: --train-on-val, so not a held-out measure)</span>'
           if run.config.data.train_on_val else ""),
        "evaluated with": _e(f'{ev.get("weights", "final")} weights, threshold {ev.get("threshold", 0.5)}'
                             + (", flip TTA" if ev.get("tta") else "")
                             + (f", scales {' '.join(f'{x:g}' for x in ev['scales'])}"
                                if ev.get("scales", [1.0]) != [1.0] else "")) if ev else "&ndash;",
        "best val Dice in training (training size)": f'{_num(best["val_dice"])} (epoch {best["epoch"]})' if best
        else "&ndash;",
        "last val Dice in training": _num(val[-1]["val_dice"]) if val else "&ndash;",
        "epochs / steps": f'{m[-1]["epoch"]} / {m[-1].get("step", "?")}' if m else "none finished",
        "training time (steps, checkpoints)": _duration(seconds) if m else "&ndash;",
        "images/s (median of epochs)": f"{statistics.median(speeds):.2f}" if speeds else "&ndash;",
        "device": _e(session.get("device", "not recorded")),
        "precision / layout": _e(f'{session.get("precision", "?")} / {session.get("memory_format", "?").replace("contiguous_format", "contiguous")}')
        if session else "&ndash;",
        "processes": _num(session.get("processes")),
        "parameters": f'{session["parameters"]:,}' if "parameters" in session else "&ndash;",
        "model": _e(_model_text(run.config.model, run.info.get("encoder"))),
        "training size": _e("x".join(map(str, run.config.data.image_size))
                            + (f', patches {"x".join(map(str, run.config.data.patch))}' if run.config.data.patch
                               else f', random crops {"x".join(map(str, run.config.data.crop))}'
                               if run.config.data.crop else "")),
        "resolution ceiling at the training size": _ceiling(run.info.get("resolution_ceiling")),
    }
    return facts


def _model_text(model: Any, encoder: dict[str, str] | None) -> str:
    """The model in words: the plain U-Net's width and depth, or the encoder and where its weights came from."""
    if not model.pretrained():
        return f"U-Net base {model.base_channels}, depth {model.depth}, {model.num_classes} output(s)"
    source = (encoder or {}).get("weights") or model.weights_source()
    return (f"U-Net decoder {'/'.join(map(str, model.decoder_channels))} ({model.decoder_upsample}) on a "
            f"{model.encoder} encoder (batch norm: {model.encoder_bn}), {model.num_classes} output(s); encoder "
            f"weights: {source}")


def _ceiling(record: dict[str, Any] | None) -> str:
    """The best Dice a model at the training size can reach (data/ceiling.py), worst class first."""
    if not record:
        return "&ndash;"
    scored = [(v, k) for k, v in enumerate(record["dice_per_class"]) if v is not None]
    if not scored:
        return "&ndash;"
    worst, k = min(scored)
    return _e(f"Dice <= {worst:.3f} (class {k}; masks shrunk to {record['size'][0]}x{record['size'][1]} and enlarged "
              f"back: what the training size alone loses)")


def _flat_settings(cfg: RunConfig) -> dict[str, str]:
    flat = {}
    for section, values in cfg.to_dict().items():
        for key, value in values.items():
            if section == "train" and key == "plan":
                continue
            flat[f"{section}.{key}"] = json.dumps(value) if isinstance(value, (list, dict, tuple)) else str(value)
    return flat


def _table(header: list[str], rows: list[tuple[str, list[str], bool]]) -> str:
    """A table; each row (label, cells already HTML, highlighted)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(f'<tr{" class=diff" if hl else ""}><th>{_e(label)}</th>' + "".join(f"<td>{c}</td>" for c in cells)
                   + "</tr>" for label, cells, hl in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _plan_value(value: Any) -> str:
    """A plan entry as HTML: a list of records (the timed candidates) as a table, other values as text."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        keys = list(dict.fromkeys(k for v in value for k in v))
        head = "".join(f"<th>{_e(k)}</th>" for k in keys)
        body = "".join("<tr>" + "".join(f"<td>{_e(_plain(v.get(k, '')))}</td>" for k in keys) + "</tr>"
                       for v in value)
        return f"<table><tr>{head}</tr>{body}</table>"
    return _e(_plain(value))


def _plain(value: Any) -> str:
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) for v in value) and len(value) == 2:
        return f"{value[0]}x{value[1]}"  # a size
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value).replace("_format", "")


def _settings_section(runs: list[RunSummary]) -> str:
    flats = [_flat_settings(r.config) for r in runs]
    keys = list(dict.fromkeys(k for f in flats for k in f))
    differ = [k for k in keys if len({f.get(k) for f in flats}) > 1]
    same = [k for k in keys if k not in differ]
    header = ["setting", *[r.name for r in runs]]
    parts = ["<h2>Settings</h2>"]
    if len(runs) > 1:
        parts.append(f"<p>{len(differ)} setting(s) differ between the runs (highlighted); "
                     f"{len(same)} are the same (folded below).</p>")
        if differ:
            parts.append(_table(header, [(k, [_e(f.get(k, "")) for f in flats], True) for k in differ]))
        parts.append(f"<details><summary>the {len(same)} settings they share</summary>"
                     + _table(header[:2], [(k, [_e(flats[0][k])], False) for k in same]) + "</details>")
    else:
        parts.append("<details><summary>all settings (config.json)</summary>"
                     + _table(header, [(k, [_e(flats[0][k])], False) for k in keys]) + "</details>")
    for run in runs:
        plan = run.config.train.plan
        if plan:
            rows = [(k, [_plan_value(v)], False) for k, v in plan.items()]
            parts.append(f"<h3>Budget plan of {_e(run.name)} ({_e(run.config.train.budget)})</h3>"
                         + _table(["plan", run.name], rows))
    return "".join(parts)


def _evaluation_section(run: RunSummary, several: bool) -> str:
    title = f"Validation images of {_e(run.name)}" if several else "Validation images"
    if run.evaluation is None:
        return f'<h2>{title}</h2><p class="note">{_e(run.no_evaluation)}</p>'
    ev = run.evaluation
    legend = (f'<p><span class="swatch" style="background:rgb{MISSED}"></span> missed (in the mask, not predicted) '
              f'&nbsp; <span class="swatch" style="background:rgb{EXTRA}"></span> extra (predicted, not in the '
              f'mask) &nbsp; <span class="swatch" style="background:rgb{EDGE}"></span> edges of the prediction '
              f'&nbsp; dimmed: not scored (outside the ignore mask)</p>')
    parts = [f"<h2>{title}</h2>", _scores_table(ev), _classes_section(run), legend]
    for kind in ("worst", "best"):
        shown = ev.get(kind) or []
        if not shown:
            continue
        figures = []
        folder = run.eval_dir.resolve()
        for item in shown:
            file = (folder / str(item["overlay"])).resolve()
            if not file.is_relative_to(folder) or not file.is_file():  # only the evaluation's own files
                continue
            with Image.open(file) as shown_image:  # small images are shown larger, their pixels kept sharp
                style = "width:400px;image-rendering:pixelated" if shown_image.width < 400 else ""
            figures.append(f"<figure>{_img(file.read_bytes(), 'image/jpeg', item['image'], style=style)}<figcaption>"
                           f"{_e(item['image'])}: Dice {_num(item['dice'])}</figcaption></figure>")
        parts.append(f"<h3>The {len(figures)} {kind}</h3><div class=gallery>{''.join(figures)}</div>")
    rows = sorted(run.per_image, key=lambda r: float(r["dice"]) if r["dice"] not in ("", "nan") else 2.0)
    columns = [c for c in (rows[0].keys() if rows else []) if c != "image" and "_class" not in c]  # per class: above
    table_rows = [(r["image"], [f'<span class=num>{_num(float(r[c]))}</span>' for c in columns], False) for r in rows]
    table = _table(["image (worst first)", *columns], table_rows[:PER_IMAGE_ROWS])
    parts.append(f"<h3>Scores per image</h3>{table}")
    if len(table_rows) > PER_IMAGE_ROWS:
        parts.append(f"<details><summary>the other {len(table_rows) - PER_IMAGE_ROWS} images</summary>"
                     + _table(["image", *columns], table_rows[PER_IMAGE_ROWS:]) + "</details>")
    return "".join(parts)


def _classes_section(run: RunSummary) -> str:
    """Multi-class runs: IoU and Dice per class by name with the class colours (the legend of predictions and
    overlays), the mIoU, and the normalised confusion matrix."""
    ev = run.evaluation or {}
    per_class = ev.get("per_class") or []
    if len(per_class) <= 2:
        return ""
    colours = run.config.data.class_colours or []
    rows = []
    for c in per_class:
        k = int(c["class"])
        colour = colours[k] if k < len(colours) else "#%02x%02x%02x" % default_colour(k, len(per_class))
        swatch = f'<span class="swatch" style="background:{_e(colour)}"></span>'
        iou, dice = _ci(c["iou"], c.get("iou_low"), c.get("iou_high")), _ci(c["dice"], c.get("dice_low"),
                                                                            c.get("dice_high"))
        rows.append((str(c["name"]), [swatch, f'<span class=num>{iou}</span>', f'<span class=num>{dice}</span>',
                                      f'<span class=num>{int(c["pixels"]):,}</span>'], False))
    miou = (ev.get("pooled") or {}).get("miou") or {}
    parts = [f'<h3>Classes: mIoU {_ci(ev.get("miou"), miou.get("low"), miou.get("high"))}, pixel accuracy '
             f'{_num(ev.get("pixel_accuracy"))}</h3>',
             '<p class="note">IoU and Dice per class from the confusion matrix pooled over the validation images '
             '(void pixels count nowhere), in brackets their intervals over images; the colours are those of the '
             'predicted masks and overlays</p>',
             _table(["class", "colour", "IoU", "Dice", "pixels"], rows)]
    picture = (run.eval_dir / "confusion.png")
    if picture.is_file():
        parts.append(_img(picture.read_bytes(), "image/png", "confusion matrix", style="max-width:720px"))
    return "".join(parts)


def _cv_section(runs: list[RunSummary]) -> str:
    """The cross-validation runs' pooled out-of-fold scores: every training image predicted once, by the fold that
    did not train on it."""
    rows = []
    for run in runs:
        if run.cv is None:
            continue
        cv, name = run.cv, run.path.parent.name
        if not cv:
            rows.append((name, ['<span class="note">not yet: the CV scores come when every fold has finished'
                                '</span>', "", "", ""], False))
            continue
        dice = (cv.get("metrics") or {}).get("dice") or {}
        multi = cv.get("miou") is not None and len(cv.get("per_class", [])) > 2
        per_fold = ", ".join(f'{f["fold"]}: {_num(f.get("miou") if multi else f.get("mean_dice"))}'
                             for f in cv.get("per_fold", []))
        rows.append((name, [_num(cv.get("folds")), _num(cv.get("images")),
                            _ci(cv.get("mean_dice"), dice.get("low"), dice.get("high"))
                            + (f' &middot; mIoU {_num(cv["miou"])}' if multi else ""), per_fold], False))
    if not rows:
        return ""
    return ("<h2>Cross-validation</h2><p class=\"sub\">out of fold: every training image predicted once, by the "
            "fold that did not train on it; the folds' own rows below</p>"
            + _table(["run", "folds", "images", "mean Dice over the images, out of fold",
                      "per fold (mIoU or mean Dice)"], rows))


def render(runs: list[RunSummary]) -> str:
    """The report's HTML."""
    several = len(runs) > 1
    title = "unetseg report: " + ", ".join(r.name for r in runs)
    facts = [_facts(r) for r in runs]
    summary = _table(["", *[r.name for r in runs]],
                     [(k, [f[k] for f in facts], several and len({f[k] for f in facts}) > 1) for k in facts[0]])
    curves = plot_curves({r.name: r.metrics for r in runs})
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title><style>{_STYLE}</style></head><body>',
        f"<h1>{_e(title)}</h1>",
        f'<p class="sub">written {_e(time.strftime("%Y-%m-%d %H:%M"))} from '
        + ", ".join(f"<code>{_e(r.path.resolve())}</code>" for r in runs) + "</p>",
        "<h2>Summary</h2>", summary, _cv_section(runs),
        "<h2>Learning curves</h2>", _img(curves, "image/png", "learning curves", "curves"),
        _settings_section(runs),
    ]
    for run in runs:
        check = run.info.get("data_check")
        heading = f"Data of {_e(run.name)}" if several else "Data"
        parts.append(f"<h2>{heading}</h2>" + (f"<pre>{_e(check)}</pre>" if check else
                                                '<p class="note">not recorded (a run from before unetseg wrote '
                                                'run_info.json): see unetseg check-data</p>'))
    parts += [_evaluation_section(r, several) for r in runs]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
