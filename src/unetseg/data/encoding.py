"""How class indices are stored in mask files, found from the training masks and used in reverse when
predictions are written, so a predicted mask has the encoding and colours of the training masks.

Encodings: palette indices (Carvana's GIFs: {0, 1}), grey levels ({0, 255} for membrane and DRIVE, or class
indices {0..K-1}), and RGB colour maps (each colour one class). Class index i is stored as ``values[i]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from unetseg.data.classes import USUAL_VOID, ClassEntry, is_void_name
from unetseg.data.errors import DataError
from unetseg.data.io import unpack_rgb

#: Class index of pixels that count in neither the loss nor the metrics (outside an ignore mask).
IGNORE = 255
#: At most this many labels when the class count follows the data.
MAX_LABELS = 32
#: Grey levels (or RGB colours) closer than this are not two labels but compression or resampling noise.
MIN_LABEL_GAP = 16
#: With --snap-masks and no --num-classes, the labels are the most frequent values, each covering at least this
#: share of pixels and MIN_LABEL_GAP apart from the others.
SNAP_MIN_SHARE = 0.01


@dataclass(frozen=True)
class MaskEncoding:
    """Stored value of each class index, the masks' mode ("L", "P" or "RGB"), the palette of palette masks (or the
    display palette of grey-level masks with class colours), and the stored values that are ignored (IGNORE).

    Example:
        Carvana's GIFs: ``MaskEncoding(values=(0, 1), mode="P", palette=(0, 0, 0, 255, 255, 255))``;
        membrane with --invert-mask: ``MaskEncoding(values=(255, 0))`` (class 1, the membrane, is stored as 0).
    """

    values: tuple[int, ...]
    mode: str = "L"
    palette: tuple[int, ...] | None = None
    ignore: tuple[int, ...] = ()

    @property
    def num_labels(self) -> int:
        return len(self.values)

    def _classes_of(self, found: np.ndarray, snap: bool) -> np.ndarray:
        """Class index of each stored value in ``found`` (1-D); IGNORE+1 marks values not in the encoding."""
        values = np.asarray(self.values, dtype=np.int64)
        exact = found[:, None] == values[None, :]
        out = np.where(exact.any(1), exact.argmax(1), IGNORE + 1)
        if snap:
            if self.mode == "RGB":
                dist = ((unpack_rgb(found)[:, None].astype(np.int64) - unpack_rgb(values)[None].astype(np.int64)) ** 2).sum(-1)
            else:
                dist = np.abs(found[:, None].astype(np.int64) - values[None, :])
            out = dist.argmin(1)
        if self.ignore:  # void values count nowhere
            out = np.where(np.isin(found, np.asarray(self.ignore, dtype=np.int64)), IGNORE, out)
        return out

    def to_classes(self, stored: np.ndarray, path: str | Path, snap: bool = False) -> np.ndarray:
        """Map stored values (H, W) to class indices (H, W) uint8.

        Args:
            snap: map values that are not in the encoding to the nearest label instead of refusing them.

        Raises:
            DataError: naming ``path`` and the values that are not in the encoding (when not snapping).
        """
        if stored.dtype == np.uint8:
            table = self._classes_of(np.arange(256), snap)
            classes = table[stored]
        else:
            found, inverse = np.unique(stored, return_inverse=True)
            classes = self._classes_of(found.astype(np.int64), snap)[inverse.reshape(stored.shape)]
        if not snap and (classes > IGNORE).any():
            outside = classes > IGNORE
            bad = sorted(set(np.unique(stored[outside]).tolist()))
            ignored = f" (ignored: {self.describe(self.ignore)})" if self.ignore else ""
            raise DataError(f"{path}: mask values {self.describe(bad[:10])} ({int(outside.sum())} pixels) are not "
                            f"among the dataset's labels {self.describe(self.values)}{ignored}")
        return classes.astype(np.uint8)

    def describe(self, values: Sequence[int]) -> str:
        """Values as a user reads them: ``[0, 255]`` or, for colour maps, ``[#000000, #ff0000]``."""
        if self.mode == "RGB":
            return "[" + ", ".join(f"#{v:06x}" for v in values) + "]"
        return str(list(values))

    def colour(self, k: int) -> tuple[int, int, int]:
        """The display colour of class ``k`` in the training masks."""
        v = self.values[k]
        if self.mode == "RGB":
            return tuple(int(c) for c in unpack_rgb(np.array(v)))  # type: ignore[return-value]
        if self.palette and len(self.palette) >= 3 * v + 3:  # palette masks, or grey levels with class colours
            return tuple(self.palette[3 * v:3 * v + 3])  # type: ignore[return-value]
        return (v, v, v)

    def to_image(self, classes: np.ndarray) -> Image.Image:
        """A mask image of class indices (H, W) in this encoding: the same palette for palette masks, the same
        colours for colour maps, the same grey levels otherwise."""
        coloured = bool(self.palette) and self.mode in ("P", "L")  # grey levels with class colours: a palette PNG
        if self.mode != "RGB" and (coloured or self.mode != "P") and max(self.values) < 256:
            # Pillow's lookup table, which lets other threads run: 4x faster than NumPy's at 1918x1280, and the
            # writer threads of predict are no longer held by one lock (benchmarks/README.md, "GPU")
            table = list(self.values) + [0] * (256 - len(self.values))
            image = Image.fromarray(np.ascontiguousarray(classes, dtype=np.uint8)).point(table)
            if coloured:
                image.putpalette(list(self.palette))  # type: ignore[arg-type]  # "L" becomes "P"
            return image
        values = np.asarray(self.values, dtype=np.uint32)[classes]
        if self.mode == "RGB":
            return Image.fromarray(unpack_rgb(values), mode="RGB")
        image = Image.fromarray(values.astype(np.uint8), mode="P" if coloured or self.mode == "P" else "L")
        if coloured:
            image.putpalette(list(self.palette))  # type: ignore[arg-type]
        return image


def fits_an_encoding(values: Sequence[int], mode: str) -> bool:
    """Whether sorted stored values read as labels: palette indices, class indices 0..K-1 (all below
    MAX_LABELS), or grey levels / colours at least MIN_LABEL_GAP apart. JPEG-compressed or bilinearly resized
    masks fail: they hold values next to their labels."""
    if len(values) > MAX_LABELS:
        return False
    if mode == "P" or max(values) < MAX_LABELS:
        return True
    if mode == "RGB":
        rgb = unpack_rgb(np.asarray(values)).astype(np.int64)
        dist = np.sqrt(((rgb[:, None] - rgb[None]) ** 2).sum(-1)) + np.eye(len(values)) * 1e9
        return bool(dist.min() >= MIN_LABEL_GAP)
    return bool(np.diff(np.asarray(values)).min() >= MIN_LABEL_GAP)


def detect_encoding(counts: Sequence[dict[int, int]], modes: Sequence[str], palettes: Sequence[tuple[int, ...] | None],
                    paths: Sequence[Path], num_classes: int | None, invert: bool = False,
                    snap: bool = False, ignore: Sequence[int] = (),
                    table: Sequence[ClassEntry] | None = None, table_path: str = "") -> tuple[MaskEncoding, list[str]]:
    """Find the encoding of a set of masks from their value counts.

    Args:
        counts: per mask, pixel count of each stored value (from :func:`unetseg.data.io.read_mask`).
        modes, palettes, paths: per mask.
        num_classes: the model's outputs (1 = binary) when the user fixed it, None to follow the data.
        invert: binary masks store the foreground as the lower value.
        snap: values beyond the labels are snapped to the nearest label (the labels are then the values
            covering at least 1% of pixels, or the ``num_classes`` most frequent ones).
        ignore: stored values that count nowhere (void); never classes.
        table: the entries of a classes file (``table_path``): the labels, in its order, whatever the masks hold.

    Returns:
        (encoding, notes to log).

    Raises:
        DataError: naming a file when modes are mixed or the values fit no encoding.
    """
    if any(m != modes[0] for m in modes):
        odd = next(i for i, m in enumerate(modes) if m != modes[0])
        raise DataError(f"{paths[odd]}: mask mode {modes[odd]} differs from {paths[0]} ({modes[0]}); all masks "
                        f"need one encoding")
    ignore = tuple(sorted(set(ignore)))
    total: dict[int, int] = {}
    for c in counts:
        for v, n in c.items():
            if v not in ignore:
                total[v] = total.get(v, 0) + n
    describe = MaskEncoding((), modes[0]).describe
    if table is not None:
        encoding = _from_table(table, table_path, total, counts, modes[0], palettes, paths, ignore)
        if num_classes is not None and max(2, num_classes) != encoding.num_labels:
            raise DataError(f"{table_path}: the classes file declares {encoding.num_labels} classes "
                            f"{describe(encoding.values)} but --num-classes is {num_classes}")
        return encoding, []
    values = sorted(total)
    wanted = None if num_classes is None else max(2, num_classes)
    notes = []
    holder = _holder(counts, paths)
    if modes[0] != "RGB" and values and max(values) < 256:
        others = [v for v in values if v != USUAL_VOID]
        if num_classes is None and USUAL_VOID in values and len(others) >= 2 and max(others) < MAX_LABELS:
            raise DataError(f"{holder(USUAL_VOID)}: mask value 255 beside the labels {describe(others)} is the usual "
                            f"void / unlabelled value: give --ignore-index 255 so it counts nowhere (or --num-classes "
                            f"{len(values)} to learn it as a class)")
        if wanted is not None and max(values) < MAX_LABELS and not snap:
            # class indices: the first `wanted` values that are not void (void 0 and classes 1..N: 1..N)
            declared = [v for v in range(wanted + len(ignore)) if v not in ignore][:wanted]
            beyond = [v for v in values if v not in declared]
            if beyond:  # a value outside the declared classes would silently shift them
                raise DataError(f"{holder(beyond[0])}: mask value {beyond[0]} is outside the declared classes "
                                f"{describe(declared)} (--num-classes {num_classes}); give --ignore-index "
                                f"{beyond[0]} if it is void, or the right --num-classes")
            values = declared  # every declared class, also one absent from these masks
    if (wanted is not None and len(values) > wanted) or (wanted is None and not fits_an_encoding(values, modes[0])):
        if snap:
            by_count = sorted(values, key=lambda v: -total[v])
            pixels = sum(total.values())
            keep: list[int] = []
            for v in by_count:  # the most frequent values that are labels: frequent and apart from the others
                if len(keep) == (wanted or MAX_LABELS) or (not wanted and total[v] < SNAP_MIN_SHARE * pixels):
                    break
                if fits_an_encoding(sorted(keep + [v]), modes[0]) or wanted:
                    keep.append(v)
            notes.append(f"--snap-masks: {len(values)} distinct mask values snapped to the nearest of {describe(sorted(keep))}")
            values = sorted(keep[:MAX_LABELS])
        else:
            worst = max(range(len(counts)), key=lambda i: len(counts[i]))
            found = sorted(counts[worst])
            shown = describe(found[:8])[:-1] + (", ...]" if len(found) > 8 else "]")
            why = (f"--num-classes {num_classes} takes {wanted} labels" if wanted else
                   "values that close are not labels (JPEG-compressed or resized masks?)")
            raise DataError(f"{paths[worst]}: mask has {len(found)} distinct values {shown}, the masks {len(values)} in "
                            f"all; {why}; --snap-masks snaps them to the nearest label, or set --num-classes")
    if len(values) < 2:
        raise DataError(f"{paths[0].parent}: every mask holds only the value {describe(values)}; nothing to learn")
    if invert:
        if len(values) != 2:
            raise DataError(f"{paths[0].parent}: --invert-mask needs binary masks, found {len(values)} values "
                            f"{describe(values)}")
        values = values[::-1]
    palette = None
    if modes[0] == "P":
        palette = max((p for p in palettes if p), key=len, default=None)
    return MaskEncoding(tuple(values), modes[0], palette, ignore), notes


def _holder(counts: Sequence[dict[int, int]], paths: Sequence[Path]):
    """``value -> the first mask file holding it``."""
    def first(value: int) -> Path:
        return next((paths[i] for i, c in enumerate(counts) if c.get(value)), paths[0])
    return first


def _from_table(table: Sequence[ClassEntry], table_path: str, total: dict[int, int], counts: Sequence[dict[int, int]],
                mode: str, palettes: Sequence[tuple[int, ...] | None], paths: Sequence[Path],
                ignore: tuple[int, ...]) -> MaskEncoding:
    """The encoding a classes file declares; every stored value of the masks must be in it (or ignored)."""
    if mode == "RGB":
        missing = [e.name for e in table if e.colour is None]
        if missing:
            raise DataError(f"{table_path}: the masks are colour-coded (RGB) but class {missing[0]!r} has no colour")
    stored = [e.stored(mode) for e in table]
    if mode != "RGB" and max(stored) > 255:
        raise DataError(f"{table_path}: value {max(stored)} cannot be stored in 8-bit {mode} masks")
    describe = MaskEncoding((), mode).describe
    unknown = sorted(v for v in total if v not in stored)
    if unknown:
        v = unknown[0]
        n = sum(c.get(v, 0) for c in counts)
        what = "colour" if mode == "RGB" else "value"
        raise DataError(f"{_holder(counts, paths)(v)}: mask {what} {describe([v])[1:-1]} ({n} pixels in all) is not "
                        f"in the classes file {table_path}" + (f" ({len(unknown)} such values)" if len(unknown) > 1
                                                              else "") + "; add it there or give --ignore-index")
    values = tuple(v for v in stored if v not in ignore)
    if len(values) < 2:
        raise DataError(f"{table_path}: fewer than two classes are left once {describe(ignore)} are ignored")
    palette = None
    if mode == "P":
        palette = max((p for p in palettes if p), key=len, default=None)
    if mode in ("L", "P") and all(e.colour is not None for e in table):  # predictions drawn in the file's colours
        flat = list(palette or [0] * 768)
        flat += [0] * (768 - len(flat))
        for v, e in zip(stored, table):
            flat[3 * v:3 * v + 3] = e.colour  # type: ignore[assignment]
        palette = tuple(flat)
    return MaskEncoding(values, mode, palette, ignore)


def void_hints(table: Sequence[ClassEntry] | None, table_path: str, encoding: MaskEncoding) -> list[str]:
    """Warnings for a class the classes file names as void (void, unlabelled, ignore, ...) but that is learned as a
    class: it should be given to --ignore-index."""
    if not table:
        return []
    hints = []
    for e in table:
        stored = e.stored(encoding.mode)
        if is_void_name(e.name) and stored not in encoding.ignore:
            shown = encoding.describe([stored])[1:-1]
            hints.append(f"{table_path}: class {e.name!r} (value {shown}) reads as void / unlabelled: give "
                         f"--ignore-index {shown} so it counts in neither the loss nor the metrics")
    return hints


RARE_MASK_SHARE = 0.01  # a label found in fewer than this share of the masks (or in one) is worth a word


def rare_labels(counts: Sequence[dict[int, int]], paths: Sequence[Path], encoding: MaskEncoding) -> list[str]:
    """Warnings for labels found in a single mask or in fewer than 1% of the masks: often a few stray pixels of a
    value that is not a class (an annotation slip), which would otherwise silently add a class.

    Args:
        counts: per mask, pixel count of each stored value.
        paths: the mask files.
        encoding: the labels found.

    Returns:
        One warning per rare label, naming the files that hold it (the first three) and how to proceed.
    """
    if len(counts) < 2 or len(encoding.values) < 3:  # binary: a rare foreground is the data (e.g. few lesions)
        return []
    warnings = []
    for k, value in enumerate(encoding.values):
        holders = [i for i, c in enumerate(counts) if c.get(value, 0) > 0]
        if not holders or (len(holders) > 1 and len(holders) >= RARE_MASK_SHARE * len(counts)):
            continue
        pixels = sum(counts[i][value] for i in holders)
        files = ", ".join(str(paths[i]) for i in holders[:3]) + (f" and {len(holders) - 3} more"
                                                                  if len(holders) > 3 else "")
        others = len(encoding.values) - 1
        flag = "--num-classes 1" if others == 2 else f"--num-classes {others}"
        warnings.append(f"{files}: label {encoding.describe((value,))[1:-1]} (class {k}) is in only {len(holders)} of "
                        f"{len(counts)} masks ({pixels} pixels); if it is not a class, fix the file(s), or train "
                        f"with {flag} --snap-masks to map it to the nearest label")
    return warnings
