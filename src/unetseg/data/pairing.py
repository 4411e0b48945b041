"""Find image/mask pairs in a dataset folder, the way datasets ship them.

Folders, found by name under ``--data DIR`` (first match wins) or named with ``--images`` / ``--masks``:
    Carvana:  DIR/train/<car>_<NN>.jpg  +  DIR/train_masks/<car>_<NN>_mask.gif
    generic:  DIR/{images,image,imgs}/  +  DIR/{masks,mask,labels,label}/
Pairing rules, tried in this order: same stem (``image/7.png`` + ``label/7.png``), stem + ``_mask`` (Carvana), or, for names
that differ, user patterns with an ``{id}`` placeholder (DRIVE: ``{id}_training.tif`` + ``{id}_manual1.gif``) or a CSV of
pairs. Whatever the rule, every image must have exactly one mask and every mask an image.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

from unetseg.config import DataConfig
from unetseg.data.errors import DataError, raise_problems

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
MASK_EXTENSIONS = (".png", ".gif", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg")  # JPEG masks are checked for grey values

IMAGE_FOLDERS = ("train", "images", "image", "imgs")
MASK_FOLDERS = ("train_masks", "masks", "mask", "labels", "label")

#: Carvana's file names: a 12-hex-digit car id and the angle, ``0cdf5b5d0ce1_01``.
_CARVANA_STEM = re.compile(r"^([0-9a-f]{12})_\d{2}$")


@dataclass(frozen=True)
class Pair:
    """One example: image, mask, optional ignore mask (non-zero = pixels that count), its split group, and
    ``split="val"`` for a pair of the validation folders (--val-data / --val-images)."""

    image: Path
    mask: Path
    group: str
    ignore: Path | None = None
    split: str = ""

    @property
    def stem(self) -> str:
        return self.image.stem


@dataclass
class Pairing:
    """The pairs found, the rule that paired them, and every problem (one line each, naming the file)."""

    pairs: list[Pair]
    rule: str
    problems: list[str] = field(default_factory=list)

    def raise_problems(self) -> None:
        """Raise one DataError listing the problems, the first one in front."""
        raise_problems(self.problems)


def find_folders(root: str | Path) -> tuple[Path, Path]:
    """Return the (images, masks) folders of a dataset folder, by the names in IMAGE_FOLDERS / MASK_FOLDERS.

    Raises:
        DataError: when ``root`` does not exist or holds none of the known layouts.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    images = next((root / n for n in IMAGE_FOLDERS if (root / n).is_dir()), None)
    masks = next((root / n for n in MASK_FOLDERS if (root / n).is_dir()), None)
    if images is None or masks is None:
        raise DataError(f"{root}: no image and mask folders found; expected one of {'/, '.join(IMAGE_FOLDERS)}/ and one "
                        f"of {'/, '.join(MASK_FOLDERS)}/, or name them with --images DIR --masks DIR")
    return images, masks


def list_files(folder: Path, extensions: tuple[str, ...]) -> list[Path]:
    """Files of ``folder`` (not recursive, hidden files skipped) whose suffix is in ``extensions``, sorted."""
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in extensions)


def group_of(stem: str, pattern: str = "") -> str:
    """The split group of an image, so that related images stay on one side of the split: with ``pattern`` (a
    regular expression searched in the stem) its first group, or the whole match; else the car id for Carvana's
    ``<car id>_<NN>`` names; else the stem itself (every image its own group).

    Raises:
        DataError: when ``pattern`` is not a valid regular expression.
    """
    if pattern:
        try:
            match = re.search(pattern, stem)
        except re.error as err:
            raise DataError(f"--group-pattern {pattern!r} is not a regular expression: {err}") from None
        return ((match.group(1) if match.groups() else None) or match.group(0)) if match else stem
    match = _CARVANA_STEM.match(stem)
    return match.group(1) if match else stem


def _pattern(pattern: str) -> re.Pattern[str]:
    """``"{id}_manual1.gif"`` -> a regex on file names with the named group ``id``."""
    if "{id}" not in pattern:
        raise DataError(f"pattern {pattern!r} has no {{id}} placeholder, e.g. '{{id}}_manual1.gif'")
    return re.compile("^" + re.escape(pattern).replace(re.escape("{id}"), "(?P<id>.+?)") + "$", re.IGNORECASE)


def _ids(files: list[Path], pattern: str | None, problems: list[str], what: str) -> dict[str, list[Path]]:
    """``id -> files`` by pattern, or by stem (and stem minus ``_mask`` for masks) without one."""
    by_id: dict[str, list[Path]] = {}
    regex = _pattern(pattern) if pattern else None
    for path in files:
        if regex is not None:
            match = regex.match(path.name)
            if match is None:
                problems.append(f"{path}: {what} name does not match the pattern {pattern!r}")
                continue
            key = match.group("id")
        else:
            key = path.stem
        by_id.setdefault(key, []).append(path)
    return by_id


def _from_csv(csv_path: Path, base: Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    rows, problems = [], []
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"image", "mask"} <= set(reader.fieldnames):
            raise DataError(f"{csv_path}: a pairs CSV needs the header columns 'image' and 'mask'")
        for i, row in enumerate(reader, start=2):
            image, mask = (Path(row[k]) if Path(row[k]).is_absolute() else base / row[k] for k in ("image", "mask"))
            for path in (image, mask):
                if not path.is_file():
                    problems.append(f"{path}: file not found ({csv_path} line {i})")
            rows.append((image, mask))
    return rows, problems


def pair_files(cfg: DataConfig, image_extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> Pairing:
    """Pair the images and masks that ``cfg`` points at (``data`` folder, or ``images`` / ``masks`` folders, with
    optional ``image_pattern`` / ``mask_pattern``, or ``pairs_csv``), collecting every problem rather than stopping.
    The pairs of validation folders (``val_data`` or ``val_images`` / ``val_masks``, the same rules) follow, marked
    ``split="val"``.

    Raises:
        DataError: when a folder is missing or holds no images (the validation folders: no pairs either).
    """
    pairing = _pair_files(cfg, image_extensions)
    if cfg.has_val_folders():
        where = "--val-data " + cfg.val_data if cfg.val_data else f"--val-images {cfg.val_images}"
        if cfg.ignore_masks and not cfg.val_ignore_masks:  # never a training image's field of view
            raise DataError(f"{cfg.ignore_masks}: ignore masks with validation folders ({where}): give "
                            f"--val-ignore-masks DIR, the validation images' own ignore masks")
        val_cfg = dataclasses.replace(cfg, data=cfg.val_data, images=cfg.val_images, masks=cfg.val_masks,
                                      pairs_csv="", val_data="", val_images="", val_masks="",
                                      ignore_masks=cfg.val_ignore_masks, val_ignore_masks="")
        try:
            val = _pair_files(val_cfg)
        except DataError as err:
            raise DataError(f"{err} ({where})") from None
        if not val.pairs:
            raise DataError(f"{cfg.val_data or cfg.val_images}: no validation image/mask pairs ({where}); "
                            + (val.problems[0] if val.problems else "the folder is empty"))
        pairing = Pairing(pairing.pairs + [dataclasses.replace(p, split="val") for p in val.pairs],
                          pairing.rule, pairing.problems + val.problems)
    return pairing


def _pair_files(cfg: DataConfig, image_extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> Pairing:
    problems: list[str] = []
    if cfg.pairs_csv:
        csv_path = Path(cfg.pairs_csv)
        if not csv_path.is_file():
            raise DataError(f"{csv_path}: pairs CSV not found")
        rows, problems = _from_csv(csv_path, csv_path.parent)
        pairs = [Pair(i, m, group_of(i.stem, cfg.group_pattern)) for i, m in rows]
        rule = f"CSV {csv_path}"
        seen: dict[Path, int] = {}
        for image, mask in rows:
            for path in (image, mask):
                seen[path] = seen.get(path, 0) + 1
        problems += [f"{p}: listed {n} times in {csv_path}" for p, n in seen.items() if n > 1]
    else:
        if cfg.images or cfg.masks:
            if not (cfg.images and cfg.masks):
                raise DataError("--images and --masks go together: name both folders")
            image_dir, mask_dir = Path(cfg.images), Path(cfg.masks)
        else:
            image_dir, mask_dir = find_folders(cfg.data)
        images = _ids(list_files(image_dir, image_extensions), cfg.image_pattern or None, problems, "image")
        masks = _ids(list_files(mask_dir, MASK_EXTENSIONS), cfg.mask_pattern or None, problems, "mask")
        if not images and not problems:
            raise DataError(f"{image_dir}: no images ({', '.join(image_extensions)})")
        pairs, rules, used = [], set(), set()
        for key, found in sorted(images.items()):
            if len(found) > 1:
                problems.append(f"{found[0]}: duplicate stem, also {', '.join(p.name for p in found[1:])}")
                continue
            if cfg.image_pattern or cfg.mask_pattern:
                candidates, rule = masks.get(key, []), f"patterns {cfg.image_pattern or '{id}.*'} + {cfg.mask_pattern or '{id}.*'}"
            else:
                same, suffixed = masks.get(key, []), masks.get(key + "_mask", [])
                candidates, rule = (same, "same stem") if same else (suffixed, "stem + _mask")
            if len(candidates) > 1:
                problems.append(f"{found[0]}: more than one mask matches: {', '.join(str(c) for c in candidates)}")
                used.update(candidates)
                continue
            if not candidates:
                problems.append(f"{found[0]}: no mask in {mask_dir}" + ("" if cfg.mask_pattern else
                                f" (looked for {key}.* and {key}_mask.*)"))
                continue
            used.add(candidates[0])
            rules.add(rule)
            # a --group-pattern searches the file's stem; else the pattern's {id} (the stem without a pattern) decides
            group = group_of(found[0].stem, cfg.group_pattern) if cfg.group_pattern else group_of(key)
            pairs.append(Pair(found[0], candidates[0], group))
        problems += [f"{m}: mask without an image in {image_dir}" for ms in masks.values() for m in ms if m not in used]
        rule = " and ".join(sorted(rules)) or "none"
    if cfg.ignore_masks:
        pairs = _attach_ignore(pairs, cfg, problems)
    return Pairing(pairs, rule, problems)


def ignore_masks_for(images: list[Path], cfg: DataConfig, problems: list[str]) -> list[Path | None]:
    """The ignore mask of each image (``ignore_pattern`` with the image's id, or the image's stem) in
    ``cfg.ignore_masks``; None, with a problem naming the image, where there is not exactly one."""
    folder = Path(cfg.ignore_masks)
    files = _ids(list_files(folder, MASK_EXTENSIONS), cfg.ignore_pattern or None, problems, "ignore mask")
    image_regex = _pattern(cfg.image_pattern) if cfg.image_pattern else None
    out: list[Path | None] = []
    for image in images:
        key = image.stem
        if image_regex is not None and (match := image_regex.match(image.name)):
            key = match.group("id")
        found = files.get(key, [])
        if len(found) != 1:
            problems.append(f"{image}: {'no' if not found else 'more than one'} ignore mask in {folder}")
        out.append(found[0] if len(found) == 1 else None)
    return out


def _attach_ignore(pairs: list[Pair], cfg: DataConfig, problems: list[str]) -> list[Pair]:
    """Give each pair its ignore mask; pairs without exactly one are left out (and named in ``problems``)."""
    ignores = ignore_masks_for([p.image for p in pairs], cfg, problems)
    return [dataclasses.replace(p, ignore=ignore) for p, ignore in zip(pairs, ignores) if ignore is not None]


def find_pairs(data: str | Path | DataConfig, image_extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> list[Pair]:
    """Pair every image with its mask: a dataset folder by its layout, or everything a :class:`DataConfig` names
    (``image_extensions``: the files that count as images; ``unetseg score`` pairs predicted masks, any mask's).

    Returns:
        The pairs sorted by image id.

    Raises:
        DataError: listing every unpaired, duplicate or ambiguous file, the first one in front.
    """
    pairing = pair_files(data if isinstance(data, DataConfig) else DataConfig(data=str(data)), image_extensions)
    pairing.raise_problems()
    return pairing.pairs
