"""COCO annotations (instances JSON: polygons, uncompressed and compressed RLE, ``iscrowd``; a Label Studio or CVAT
export in COCO format too) to a folder of image/mask pairs, rasterised by pycocotools: the same pixels COCO's own
evaluation sees.

Categories become classes with their ids kept: a mask pixel's value is its category id, 0 is background (pixels no
annotation covers, and images without annotations), and ``classes.csv`` lists ``value,name,colour``. Where
instances overlap, the smaller is drawn on top (the larger first), and the overlapping pixels are counted in the
log; crowd regions (``iscrowd`` 1) are their category's, as pycocotools draws them.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from unetseg.data.errors import DataError, raise_problems
from unetseg.labels.write import ImportResult, palette_for, place_image, require, save_mask, staged, write_classes

logger = logging.getLogger(__name__)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: COCO file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a readable COCO JSON file ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or \
            not isinstance(data.get("categories"), list):
        raise DataError(f"{path}: not a COCO file (it needs 'images' and 'categories' lists)")
    return data


def _rle_of(segmentation: Any, height: int, width: int, where: str, mask_api: Any) -> Any:
    """One annotation's segmentation as one compressed RLE of the image, or a DataError naming ``where``."""
    if isinstance(segmentation, list):  # polygons: [x1, y1, x2, y2, ...] each
        if not segmentation:
            raise DataError(f"{where}: empty segmentation")
        for polygon in segmentation:
            if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
                points = len(polygon) // 2 if isinstance(polygon, list) else 0
                raise DataError(f"{where}: a polygon with {points} point(s), fewer than 3 (or an odd coordinate "
                                f"count)")
        return mask_api.merge(mask_api.frPyObjects(segmentation, height, width))
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        size = list(segmentation["size"])
        if size != [height, width]:
            raise DataError(f"{where}: RLE of size {size[1] if len(size) > 1 else '?'}x{size[0] if size else '?'} "
                            f"but the image is {width}x{height}")
        counts = segmentation["counts"]
        if isinstance(counts, list):  # uncompressed
            return mask_api.frPyObjects(segmentation, height, width)
        return {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    raise DataError(f"{where}: segmentation is neither polygons nor an RLE")


def import_coco(json_file: str | Path, out: str | Path, images: str | Path | None = None, link: bool = False,
                overwrite: bool = False, skip_missing: bool = False, progress: bool = False) -> ImportResult:
    """Import a COCO instances file as ``out/images``, ``out/masks`` (palette PNGs of category ids) and
    ``out/classes.csv``.

    Args:
        json_file: the annotations.
        images: the folder the ``file_name`` entries are relative to (default: ``images/`` beside the JSON file where
            it exists, else the JSON file's folder).
        link: symbolic links to the images instead of copies.
        skip_missing: import the other images where some in the file are missing on disk (each named in the log)
            instead of failing.

    Raises:
        DataError: one line naming the file and, where there is one, the annotation: a category id not in
            ``categories`` or outside 1-254, a polygon with fewer than 3 points, an RLE whose size is not the
            image's, an image missing on disk or of another size than the file says; nothing is written then.
    """
    mask_api = require("pycocotools.mask")
    json_file = Path(json_file)
    data = _read_json(json_file)
    root = Path(images) if images is not None else \
        json_file.parent / "images" if (json_file.parent / "images").is_dir() else json_file.parent
    problems: list[str] = []
    classes: dict[int, str] = {}
    for cat in data["categories"]:
        cid = cat.get("id") if isinstance(cat, dict) else None
        if not isinstance(cid, int) or not 1 <= cid <= 254:
            problems.append(f"{json_file}: category {cat!r}: its id must be an integer 1-254 (0 is background, 255 "
                            f"void in the masks)")
            continue
        classes[cid] = str(cat.get("name") or f"class{cid}")
    entries: dict[Any, dict[str, Any]] = {}
    for image in data["images"]:
        if not isinstance(image, dict) or not {"id", "file_name", "height", "width"} <= image.keys():
            problems.append(f"{json_file}: image entry {image!r} lacks id, file_name, height or width")
            continue
        entries[image["id"]] = image
    by_image: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for ann in data.get("annotations", []):
        where = f"{json_file} annotation {ann.get('id', '?')}"
        if ann.get("category_id") not in classes:
            problems.append(f"{where}: category_id {ann.get('category_id')!r} is not in categories")
        elif ann.get("image_id") not in entries:
            problems.append(f"{where}: image_id {ann.get('image_id')!r} is not in images")
        else:
            image = entries[ann["image_id"]]
            try:
                rle = _rle_of(ann.get("segmentation"), image["height"], image["width"], where, mask_api)
            except DataError as err:
                problems.append(str(err))
                continue
            by_image[ann["image_id"]].append({**ann, "rle": rle})
    raise_problems(problems)
    present, stems = [], {}
    for image in entries.values():
        path = root / image["file_name"]
        stem = Path(image["file_name"]).stem
        if not path.is_file():
            problems.append(f"{path}: image {image['id']} of {json_file.name} not found")
            continue
        if stem in stems:
            problems.append(f"{path}: its name repeats {stems[stem]} (one mask per name)")
            continue
        with Image.open(path) as opened:
            if opened.size != (image["width"], image["height"]):
                problems.append(f"{path}: {opened.size[0]}x{opened.size[1]} but {json_file.name} says "
                                f"{image['width']}x{image['height']}")
                continue
        stems[stem] = path
        present.append((image, path, stem))
    missing = [p for p in problems if p.endswith("not found")]
    if skip_missing and len(missing) == len(problems):
        for line in missing:
            logger.warning("warning: %s: skipped (--skip-missing)", line)
        problems = []
    raise_problems(problems)
    classes = {0: "background", **classes}  # the pixels no annotation covers
    palette = palette_for(classes)
    counts = {"annotations": 0, "crowd": 0, "overlap_pixels": 0, "images_with_overlaps": 0, "unannotated": 0,
              "skipped": len(missing) if skip_missing else 0}
    with staged(Path(out), overwrite) as stage:
        for image, path, stem in tqdm(present, desc="import coco", unit="img", disable=None if progress else True):
            h, w = image["height"], image["width"]
            drawn = []
            for ann in by_image.get(image["id"], []):
                decoded = mask_api.decode(ann["rle"]).astype(bool)
                drawn.append((int(decoded.sum()), ann["category_id"], decoded))
                counts["crowd"] += bool(ann.get("iscrowd"))
            mask = np.zeros((h, w), np.uint8)
            covered = np.zeros((h, w), bool)
            overlap = 0
            for _, category, decoded in sorted(drawn, key=lambda d: -d[0]):  # the larger first: the smaller on top
                overlap += int((covered & decoded).sum())
                mask[decoded] = category
                covered |= decoded
            counts["annotations"] += len(drawn)
            counts["overlap_pixels"] += overlap
            counts["images_with_overlaps"] += overlap > 0
            counts["unannotated"] += not drawn
            place_image(path, stage / "images" / path.name, link)
            save_mask(mask, stage / "masks" / f"{stem}.png", palette)
        write_classes(classes, stage / "classes.csv")
    logger.info("import coco: %d images (%s), %d annotations (%d crowd), %d images without annotations (all "
                "background), %d pixels in %d images where instances overlap (the smaller drawn on top)%s -> %s",
                len(present), "linked" if link else "copied", counts["annotations"], counts["crowd"],
                counts["unannotated"], counts["overlap_pixels"], counts["images_with_overlaps"],
                f", {counts['skipped']} missing images skipped" if counts["skipped"] else "", out)
    return ImportResult(Path(out), len(present), classes, counts)
