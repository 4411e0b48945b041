"""Find image/mask pairs in a dataset folder, the way datasets ship them.

Layouts found by folder name (first match wins):
    Carvana:  DIR/train/<car>_<NN>.jpg  +  DIR/train_masks/<car>_<NN>_mask.gif
    generic:  DIR/images/<name>.<ext>   +  DIR/masks/<name>.<ext>      (also image/, imgs/ and mask/, labels/, label/)
A mask pairs with an image when its stem is the image's stem or the image's stem + ``_mask``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from unetseg.data.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
MASK_EXTENSIONS = (".png", ".gif", ".tif", ".tiff", ".bmp")

#: (images folder, masks folder) names tried in this order.
LAYOUTS: tuple[tuple[str, str], ...] = (
    ("train", "train_masks"),
    ("images", "masks"),
    ("image", "label"),
    ("images", "labels"),
    ("image", "mask"),
    ("imgs", "masks"),
)

_GROUPED_STEM = re.compile(r"^(.+)_\d+$")


@dataclass(frozen=True)
class Pair:
    """One training example: image path, mask path and the group it belongs to (Carvana: the car id)."""

    image: Path
    mask: Path
    group: str

    @property
    def stem(self) -> str:
        return self.image.stem


def find_folders(root: str | Path) -> tuple[Path, Path]:
    """Return the (images, masks) folders of a dataset folder, by the layouts in :data:`LAYOUTS`.

    Raises:
        DataError: when ``root`` does not exist or holds none of the known layouts.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    for images, masks in LAYOUTS:
        if (root / images).is_dir() and (root / masks).is_dir():
            return root / images, root / masks
    names = ", ".join(f"{i}/ + {m}/" for i, m in LAYOUTS)
    raise DataError(f"{root}: no image and mask folders found; expected one of: {names}")


def list_files(folder: Path, extensions: tuple[str, ...]) -> list[Path]:
    """Files of ``folder`` (not recursive, hidden files skipped) whose suffix is in ``extensions``, sorted."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in extensions)


def group_of(stem: str) -> str:
    """The split group of an image: ``<car>`` for Carvana's ``<car>_<NN>``, else the stem itself."""
    match = _GROUPED_STEM.match(stem)
    return match.group(1) if match else stem


def find_pairs(root: str | Path) -> list[Pair]:
    """Pair every image of a dataset folder with its mask.

    Returns:
        The pairs sorted by image name.

    Raises:
        DataError: naming the unpaired files when an image has no mask or a mask no image, or when a
            stem has two candidate masks.
    """
    image_dir, mask_dir = find_folders(root)
    images = list_files(image_dir, IMAGE_EXTENSIONS)
    if not images:
        raise DataError(f"{image_dir}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    masks_by_stem: dict[str, list[Path]] = {}
    for mask in list_files(mask_dir, MASK_EXTENSIONS):
        masks_by_stem.setdefault(mask.stem, []).append(mask)

    pairs, missing, used = [], [], set()
    for image in images:
        candidates = masks_by_stem.get(image.stem, []) + masks_by_stem.get(image.stem + "_mask", [])
        if len(candidates) > 1:
            raise DataError(f"{image}: more than one mask matches: {', '.join(str(c) for c in candidates)}")
        if not candidates:
            missing.append(image)
            continue
        used.add(candidates[0])
        pairs.append(Pair(image, candidates[0], group_of(image.stem)))
    orphans = sorted(m for ms in masks_by_stem.values() for m in ms if m not in used)
    problems = [f"{p}: no mask (looked for {p.stem}.* and {p.stem}_mask.* in {mask_dir})" for p in missing]
    problems += [f"{m}: mask without an image in {image_dir}" for m in orphans]
    if problems:
        shown = "; ".join(problems[:10]) + (f"; ... {len(problems) - 10} more" if len(problems) > 10 else "")
        raise DataError(shown if len(problems) == 1 else f"{len(problems)} unpaired files: {shown}")
    return pairs
