"""Learning curves: training and validation loss, validation Dice (per class where there are several) and the
learning rate of one or several runs, on a shared epoch axis, drawn by matplotlib's Agg backend into a PNG."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from unetseg._atomic import atomic_write_bytes
from unetseg.checkpoint import METRICS_FILE

logger = logging.getLogger(__name__)

CURVES_FILE = "curves.png"
# Okabe-Ito colours: told apart by colour-blind readers too
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a run's ``metrics.jsonl`` (a line per epoch); an absent file gives no records, a torn last line
    (a run killed while writing it) is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def plot_curves(runs: Mapping[str, Sequence[Mapping[str, Any]]], out: str | Path | None = None) -> bytes:
    """Draw the curves of one or several runs; return the PNG's bytes and, with ``out``, write them there (atomically:
    a reader never sees half a file).

    Args:
        runs: run name -> its metrics records (``epoch``, ``train_loss``, ``lr``; ``val_loss``, ``val_dice`` and
            ``val_dice_per_class``, or for multi-class runs ``val_miou`` and ``val_iou_per_class``, where the epoch
            validated).
        out: the PNG file to write.

    Three panels share the epoch axis: loss (training solid, validation dashed), validation Dice (per class dotted
    where there are several classes; multi-class runs: mean IoU and IoU per class) and the learning rate. With several runs, each run has its colour.
    """
    from matplotlib.figure import Figure  # the object API: no pyplot state, no display needed (Agg)
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(12, 3.6), dpi=100, layout="constrained")
    loss_ax, dice_ax, lr_ax = fig.subplots(1, 3, sharex=True)
    several = len(runs) > 1
    metric_title = "validation Dice"
    for i, (name, records) in enumerate(runs.items()):
        colour = COLOURS[i % len(COLOURS)]
        label = f"{name}: " if several else ""
        epochs = [r["epoch"] for r in records]
        loss_ax.plot(epochs, [r["train_loss"] for r in records], color=colour, label=f"{label}train")
        val = [r for r in records if r.get("val_loss") is not None]
        if val:
            loss_ax.plot([r["epoch"] for r in val], [r["val_loss"] for r in val], color=colour, linestyle="--",
                         marker="." if len(val) < 30 else None, label=f"{label}validation")
        multi = any(r.get("val_miou") is not None for r in records)  # multi-class runs: mIoU and per-class IoU
        key = "val_miou" if multi else "val_dice"
        scored = [r for r in records if r.get(key) is not None]
        if scored:
            dice_ax.plot([r["epoch"] for r in scored], [r[key] for r in scored], color=colour,
                         marker="." if len(scored) < 30 else None, label=f"{label}mean")
            per_class = _per_class(scored, multi)
            for k, (class_name, points) in enumerate(per_class.items()):
                if points:
                    dice_ax.plot(*zip(*points), color=colour if several else None, linestyle=":",
                                 alpha=0.4 + 0.6 * (k + 1) / len(per_class), label=f"{label}{class_name}")
            metric_title = "validation mIoU (per class dotted)" if multi else "validation Dice"
        lr_ax.plot(epochs, [r["lr"] for r in records], color=colour, label=name if several else None)
    loss_ax.set_title("loss")
    dice_ax.set_title(metric_title)
    lr_ax.set_title("learning rate")
    for ax in (loss_ax, dice_ax, lr_ax):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if not any(runs.values()):
        loss_ax.text(0.5, 0.5, "no epoch finished yet", ha="center", transform=loss_ax.transAxes)
    return figure_png(fig, out)


def figure_png(fig: Any, out: str | Path | None = None) -> bytes:
    """A matplotlib figure's PNG bytes, also written to ``out`` where given (atomically: a reader never sees half a
    file)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    png = buffer.getvalue()
    if out is not None:
        atomic_write_bytes(Path(out), png)
    return png


def _per_class(records: list[dict[str, Any]], multi: bool) -> dict[str, list[tuple[int, float]]]:
    """``class name -> [(epoch, score)]``: IoU per class (multi-class runs, by name), else Dice per foreground class."""
    out: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        if multi:
            items = list((r.get("val_iou_per_class") or {}).items())
        else:
            items = [(f"class {k + 1}", v) for k, v in enumerate(r.get("val_dice_per_class") or [])]
        for name, value in items:
            out.setdefault(name, [])
            if value is not None:
                out[name].append((r["epoch"], value))
    return out


class CurvesPainter:
    """Redraws ``run_dir/curves.png`` from the run's metrics at epoch ends, keeping its cost under ``share`` of the
    training time: at the first epoch end of a session, at the last, and otherwise once the time since the last
    drawing is ``1 / share`` times what that drawing took (0.2-0.25 s: at most every 20-25 s at the default 1%).
    A failure is logged, never raised: a picture must not stop a training run."""

    def __init__(self, run_dir: Path, share: float = 0.01) -> None:
        self.run_dir, self.share = run_dir, share
        self.last: float | None = None
        self.cost = 0.0
        self.failed = False

    def __call__(self, final: bool = False) -> None:
        now = time.perf_counter()
        if self.failed or not (final or self.last is None or now - self.last >= self.cost / self.share):
            return
        try:
            plot_curves({self.run_dir.name: read_metrics(self.run_dir / METRICS_FILE)},
                        self.run_dir / CURVES_FILE)
        except Exception as err:  # noqa: BLE001 - e.g. a full disk or a broken matplotlib: training goes on
            logger.warning("warning: %s not drawn (not tried again in this run): %s", self.run_dir / CURVES_FILE,
                           err)
            self.failed = True
        self.last = time.perf_counter()
        self.cost = self.last - now
