"""Writing an imported dataset: every file into a temporary folder beside the target, renamed into place only once
all of it is written, so that a failed import leaves nothing half written."""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from unetseg.data.classes import _DEFAULT_COLOURS
from unetseg.data.errors import DataError


@dataclass
class ImportResult:
    """What an import wrote: the folder, its images, the classes (value -> name) and counts worth a log line."""

    out: Path
    images: int
    classes: dict[int, str]
    counts: dict[str, int] = field(default_factory=dict)


def colour_of(value: int) -> tuple[int, int, int]:
    """A class value's display colour: black for background (0), else the toolkit's default colours in turn."""
    return (0, 0, 0) if value == 0 else _DEFAULT_COLOURS[(value - 1) % len(_DEFAULT_COLOURS)]


def palette_for(classes: dict[int, str], colours: dict[int, tuple[int, int, int]] | None = None) -> list[int]:
    """A 256-entry PNG palette with each class's colour (``colours``, else the defaults) at its value (void 255
    white)."""
    palette = [0] * 768
    for value in classes:
        palette[3 * value:3 * value + 3] = (colours or {}).get(value) or colour_of(value)
    palette[765:768] = (255, 255, 255)
    return palette


def save_mask(mask: np.ndarray, path: Path, palette: list[int]) -> None:
    """A (H, W) uint8 class-value map as a palette PNG (mode "P": the values are the indices)."""
    image = Image.fromarray(mask.astype(np.uint8), mode="L")
    image.putpalette(palette)  # "L" becomes "P", the values kept
    image.save(path)


def write_classes(classes: dict[int, str], path: Path, colours: dict[int, tuple[int, int, int]] | None = None) -> None:
    """``value,name,colour`` rows, as the toolkit's classes files read (configs/camvid_classes.csv)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["value", "name", "colour"])
        for value, name in sorted(classes.items()):
            writer.writerow([value, name, "#%02x%02x%02x" % ((colours or {}).get(value) or colour_of(value))])


def place_image(source: Path, target: Path, link: bool) -> None:
    """The image as it is: a symbolic link to ``source`` (``link``) or a copy."""
    if link:
        os.symlink(source.resolve(), target)
    else:
        shutil.copy2(source, target)


@contextmanager
def staged(out: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary folder beside ``out`` to write into, renamed to ``out`` when the block ends without an error
    (removed otherwise).

    Raises:
        DataError: ``out`` exists and ``overwrite`` is not given.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise DataError(f"{out}: already exists (give --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (stage / "images").mkdir()
        (stage / "masks").mkdir()
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    stage.rename(out)


def require(module: str, extra: str = "labels") -> Callable:
    """Import ``module`` or fail with one line naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(f"{module} is not installed: pip install 'unetseg[{extra}]'") from None
