"""Postprocessing chosen on out-of-fold predictions (nnU-Net's ``determine_postprocessing``): keep only the largest
connected component of all foreground classes together (where there are several), then per foreground class keep
only its largest connected component, remove its components under a size learnt from the training masks, fill
its holes; each kept only where the out-of-fold mean Dice over images rises strictly and no class's falls. Stored in
``RUN/postprocessing.json``; predict, evaluate and submit apply it (``--no-postprocess``: off).

Only runs with a background class take part (binary runs, and multi-class runs given ``--background``): what a rule
removes becomes background, and scenes where every class is an object (CamVid) have no such class.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from unetseg._atomic import atomic_write_text
from unetseg.data.encoding import IGNORE

logger = logging.getLogger(__name__)

POSTPROCESSING_FILE = "postprocessing.json"
#: Connected components: 8-connectivity (the diagonal neighbour of a pixel touches it), as nnU-Net's 3D full
#: connectivity in 2D.
_STRUCTURE = np.ones((3, 3), dtype=bool)


@dataclass
class ClassRule:
    """What is done to one class's pixels after the argmax (or threshold)."""

    largest_component: bool = False
    min_size: int = 0  # components of fewer pixels become background
    fill_holes: bool = False  # background enclosed by the class becomes the class

    def active(self) -> bool:
        return self.largest_component or self.min_size > 0 or self.fill_holes


@dataclass
class Postprocessing:
    """Per-class rules (class index -> :class:`ClassRule`) and the background class that removed pixels join."""

    background: int = 0
    rules: dict[int, ClassRule] = field(default_factory=dict)
    foreground_largest: bool = False  # first: only the largest component of all foreground classes together
    scores: dict[str, object] = field(default_factory=dict)  # the out-of-fold scores before and after, for the record

    def __call__(self, classes: np.ndarray) -> np.ndarray:
        """Apply the rules to a class map (H, W); returns a new array (the input is left as it is)."""
        return apply(classes, self.rules, self.background, self.foreground_largest)

    def active(self) -> bool:
        return self.foreground_largest or any(r.active() for r in self.rules.values())

    def describe(self) -> str:
        parts = [f"class {c}: " + ", ".join(n for n, on in (("largest component", r.largest_component),
                                                            (f"components under {r.min_size} px removed",
                                                             r.min_size > 0), ("holes filled", r.fill_holes)) if on)
                 for c, r in sorted(self.rules.items()) if r.active()]
        return "; ".join(["largest foreground component"] * self.foreground_largest + parts) or "none"

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps({"background": self.background,
                                            "foreground_largest": self.foreground_largest,
                                            "rules": {str(c): asdict(r) for c, r in self.rules.items()},
                                            "scores": self.scores}, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Postprocessing:
        """Raises ValueError naming the file when it is not a postprocessing file."""
        try:
            d = json.loads(Path(path).read_text())
            return cls(int(d["background"]), {int(c): ClassRule(**r) for c, r in d["rules"].items()},
                       bool(d.get("foreground_largest", False)), d.get("scores", {}))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: not a postprocessing file written by unetseg ({err})") from None


def _largest(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of ``mask``."""
    labels, n = ndimage.label(mask, structure=_STRUCTURE)
    if n < 2:
        return mask
    return labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))


def apply(classes: np.ndarray, rules: dict[int, ClassRule], background: int = 0,
          foreground_largest: bool = False) -> np.ndarray:
    """``classes`` (H, W) with the largest foreground component kept (``foreground_largest``), then each class's
    rule applied, in class order; removed pixels become ``background``. IGNORE pixels are never touched."""
    out = np.array(classes, copy=True)
    if foreground_largest:
        foreground = (out != background) & (out != IGNORE)
        out[foreground & ~_largest(foreground)] = background
    for c, rule in sorted(rules.items()):
        if not rule.active():
            continue
        mask = out == c
        if rule.largest_component or rule.min_size:
            labels, n = ndimage.label(mask, structure=_STRUCTURE)
            if n:
                sizes = np.bincount(labels.ravel())[1:]
                keep = np.ones(n, dtype=bool)
                if rule.largest_component:
                    keep[:] = False
                    keep[int(np.argmax(sizes))] = True
                if rule.min_size:
                    keep &= sizes >= rule.min_size
                removed = ~np.concatenate([[True], keep])[labels]
                out[removed] = background
                mask &= ~removed
        if rule.fill_holes:
            out[ndimage.binary_fill_holes(mask) & (out == background)] = c
    return out


def smallest_components(masks: Iterable[np.ndarray], classes: Sequence[int]) -> dict[int, int]:
    """The smallest connected component of each class over the (true) class maps ``masks``; 0 where absent."""
    smallest = {c: 0 for c in classes}
    for mask in masks:
        for c in classes:
            labels, n = ndimage.label(mask == c, structure=_STRUCTURE)
            if n:
                size = int(np.bincount(labels.ravel())[1:].min())
                smallest[c] = size if not smallest[c] else min(smallest[c], size)
    return smallest


def class_dice(pairs: Sequence[tuple[np.ndarray, np.ndarray]], labels: int, rules: dict[int, ClassRule],
               background: int, foreground_largest: bool = False) -> np.ndarray:
    """Each class's Dice averaged over the images (NaN where a class is neither present nor predicted) with
    ``rules`` applied to the predictions ``(predicted, true)``; IGNORE pixels count nowhere."""
    per_image = []
    for pred, target in pairs:
        pred = apply(pred, rules, background, foreground_largest)
        keep = target != IGNORE
        matrix = np.bincount(target[keep].astype(np.int64) * labels + pred[keep], minlength=labels * labels
                             ).reshape(labels, labels)
        tp = np.diag(matrix).astype(np.float64)
        denominator = matrix.sum(0) + matrix.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_image.append(np.where(denominator > 0, 2 * tp / denominator, np.nan))
    with np.errstate(all="ignore"):
        return np.nanmean(np.stack(per_image), axis=0)


def determine_postprocessing(pairs: Sequence[tuple[np.ndarray, np.ndarray]], labels: int, background: int,
                             min_sizes: dict[int, int]) -> Postprocessing:
    """Choose the rules on out-of-fold ``(predicted, true)`` class maps: for each foreground class in turn, largest
    component, then the removal of components under half its smallest true component (``min_sizes``), then hole
    filling; each is kept only when the mean Dice over the foreground classes rises strictly and no class's Dice
    falls (nnU-Net's rule), given the rules kept before it."""
    foreground = [c for c in range(labels) if c != background]
    rules: dict[int, ClassRule] = {c: ClassRule() for c in foreground}
    union = False

    def score(r: dict[int, ClassRule], u: bool) -> np.ndarray:
        return np.nan_to_num(class_dice(pairs, labels, r, background, u)[foreground], nan=0.0)

    before = current = score(rules, union)
    tried = []

    def consider(what: dict[str, object], r: dict[int, ClassRule], u: bool) -> bool:
        nonlocal current
        scores = score(r, u)
        kept = bool(scores.mean() > current.mean()) and bool(np.all(scores >= current))
        tried.append({**what, "mean_dice": float(scores.mean()), "dice": scores.tolist(), "kept": kept})
        if kept:
            current = scores
        return kept

    if len(foreground) > 1:  # nnU-Net's first step: all foreground classes as one region
        union = consider({"rule": "foreground_largest"}, rules, True)
    for c in foreground:
        for name, value in (("largest_component", True), ("min_size", max(0, min_sizes.get(c, 0) // 2)),
                            ("fill_holes", True)):
            if not value:
                continue
            trial = {k: ClassRule(**asdict(v)) for k, v in rules.items()}
            setattr(trial[c], name, value)
            if consider({"class": c, "rule": name, "value": value}, trial, union):
                rules = trial
    return Postprocessing(background, {c: r for c, r in rules.items() if r.active()}, union,
                          {"mean_dice_before": float(before.mean()), "mean_dice_after": float(current.mean()),
                           "dice_before": before.tolist(), "dice_after": current.tolist(), "classes": foreground,
                           "tried": tried})
