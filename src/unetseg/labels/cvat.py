"""CVAT's "Segmentation mask 1.1" export (``SegmentationClass/*.png`` in the colours of ``labelmap.txt``) and Pascal
VOC's ``SegmentationClass`` (palette PNGs whose indices are the classes, 255 the void border) to a folder of pairs.

With a ``labelmap.txt`` (``name:r,g,b:parts:actions`` a line) the classes are its lines in order, each mask colour
becomes its line's index and keeps its colour; without one the masks must be palette PNGs and their indices are kept
(VOC's 21 class names where they fit), 255 stays void (train with ``--ignore-index 255``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from unetseg.data.classes import pack_colour
from unetseg.data.errors import DataError, raise_problems
from unetseg.labels.write import ImportResult, palette_for, place_image, save_mask, staged, write_classes

logger = logging.getLogger(__name__)
VOID = 255
#: Pascal VOC 2012's classes, by index.
VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def read_labelmap(path: Path) -> list[tuple[str, tuple[int, int, int]]]:
    """CVAT's / VOC's ``labelmap.txt``: (name, colour) per line in order, ``#`` lines left out.

    Raises:
        DataError: naming the file and line: no colour, a colour repeated.
    """
    entries: list[tuple[str, tuple[int, int, int]]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, rest = line.partition(":")
        try:
            colour = tuple(int(c) for c in rest.split(":")[0].split(","))
        except ValueError:
            colour = ()
        if len(colour) != 3 or not all(0 <= c <= 255 for c in colour):
            raise DataError(f"{path} line {number}: {line.strip()!r} is not name:r,g,b:parts:actions")
        if any(colour == c for _, c in entries):
            raise DataError(f"{path} line {number}: colour {colour} is already {name!r}'s")
        entries.append((name.strip(), colour))  # type: ignore[arg-type]
    if not entries:
        raise DataError(f"{path}: lists no labels")
    return entries


def _image_for(stem: str, folders: list[Path]) -> Path | None:
    for folder in folders:
        for ext in IMAGE_EXTENSIONS:
            for candidate in (folder / f"{stem}{ext}", folder / f"{stem}{ext.upper()}"):
                if candidate.is_file():
                    return candidate
    return None


def import_cvat(src: str | Path, out: str | Path, images: str | Path | None = None, link: bool = False,
                overwrite: bool = False, progress: bool = False) -> ImportResult:
    """Import a CVAT "Segmentation mask 1.1" (or VOC) export folder as ``out/images``, ``out/masks`` and
    ``out/classes.csv``; images from ``images``, else the export's ``JPEGImages/``.

    Raises:
        DataError: one line naming the file: no SegmentationClass folder, a colour not in ``labelmap.txt``, a mask
            without its image, a VOC mask that is not a palette PNG; nothing is written then.
    """
    src = Path(src)
    masks_dir = src / "SegmentationClass"
    if not masks_dir.is_dir():
        raise DataError(f"{src}: no SegmentationClass/ folder (a CVAT 'Segmentation mask 1.1' or VOC export)")
    mask_files = sorted(masks_dir.glob("*.png"))
    if not mask_files:
        raise DataError(f"{masks_dir}: no PNG masks")
    folders = [Path(images)] if images is not None else [src / "JPEGImages", src / "images", src]
    labelmap = src / "labelmap.txt"
    entries = read_labelmap(labelmap) if labelmap.is_file() else None
    lookup = {pack_colour(c): k for k, (_, c) in enumerate(entries)} if entries else {}
    problems: list[str] = []
    converted = []
    found: set[int] = set()
    for path in mask_files:
        image = _image_for(path.stem, folders)
        if image is None:
            problems.append(f"{path}: no image {path.stem}.* in {', '.join(str(f) for f in folders)}")
            continue
        with Image.open(path) as opened:
            if entries is not None:
                rgb = np.asarray(opened.convert("RGB")).astype(np.int64)
                packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
                colours, inverse = np.unique(packed, return_inverse=True)
                unknown = [c for c in colours.tolist() if c not in lookup]
                if unknown:
                    shown = ", ".join("#%06x" % c for c in unknown[:5])
                    problems.append(f"{path}: colour(s) {shown} not in {labelmap}")
                    continue
                mask = np.array([lookup[c] for c in colours.tolist()], np.uint8)[inverse.reshape(packed.shape)]
            else:
                if opened.mode not in ("P", "L"):
                    problems.append(f"{path}: mode {opened.mode}; without a labelmap.txt the masks must be palette "
                                    f"PNGs whose indices are the classes (VOC)")
                    continue
                mask = np.asarray(opened).astype(np.uint8)
            if Image.open(image).size != opened.size:
                problems.append(f"{path}: {opened.size[0]}x{opened.size[1]} but its image {image.name} is "
                                f"{Image.open(image).size[0]}x{Image.open(image).size[1]}")
                continue
        found |= set(np.unique(mask).tolist())
        converted.append((path, image, mask))
    raise_problems(problems)
    if entries is not None:
        classes = {k: name for k, (name, _) in enumerate(entries)}
        colours = {k: c for k, (_, c) in enumerate(entries)}
    else:
        values = sorted(found - {VOID})
        classes = {v: VOC_CLASSES[v] if v < len(VOC_CLASSES) else f"class{v}" for v in range(max(values) + 1)}
        colours = None
    palette = palette_for(classes, colours)
    with staged(Path(out), overwrite) as stage:
        for path, image, mask in tqdm(converted, desc="import cvat", unit="img", disable=None if progress else True):
            place_image(image, stage / "images" / image.name, link)
            save_mask(mask, stage / "masks" / f"{path.stem}.png", palette)
        write_classes(classes, stage / "classes.csv", colours)
    void = VOID in found and entries is None
    logger.info("import cvat: %d images (%s), %d classes (%s)%s -> %s", len(converted), "linked" if link else "copied",
                len(classes), "labelmap.txt" if entries else "the masks' palette indices",
                ", void 255 kept (train with --ignore-index 255)" if void else "", out)
    return ImportResult(Path(out), len(converted), classes, {"void": int(void)})
