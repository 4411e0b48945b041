"""LabelMe's per-image JSON files (polygons, rectangles, circles; the image beside the file by ``imagePath`` or inside
it as ``imageData``) to a folder of image/mask pairs, rasterised by pycocotools as COCO polygons are.

Classes: those of a labels file in LabelMe's own ``labels.txt`` layout (one name a line; ``__ignore__`` becomes the
void value 255, ``_background_`` is 0) where given, else background 0 and the labels found, in sorted order from 1.
Shapes are drawn in the file's order, a later one on top (LabelMe's own ``shapes_to_label`` does so), and the
overlapping pixels are counted in the log.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from unetseg.data.errors import DataError, raise_problems
from unetseg.labels.write import ImportResult, palette_for, require, save_mask, staged, write_classes

logger = logging.getLogger(__name__)
#: Vertices of the polygon a LabelMe circle is drawn as.
CIRCLE_VERTICES = 64
VOID = 255


def _polygon(shape: dict[str, Any], where: str) -> list[float]:
    """A shape's outline as COCO polygon coordinates [x1, y1, ...], or a DataError naming ``where``."""
    kind = shape.get("shape_type") or "polygon"
    points = shape.get("points") or []
    if not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in points):
        raise DataError(f"{where}: points must be [x, y] pairs")
    if kind == "polygon":
        if len(points) < 3:
            raise DataError(f"{where}: a polygon with {len(points)} point(s), fewer than 3")
        return [float(c) for p in points for c in p]
    if kind == "rectangle":
        if len(points) != 2:
            raise DataError(f"{where}: a rectangle needs 2 corner points, not {len(points)}")
        (x0, y0), (x1, y1) = points
        return [x0, y0, x1, y0, x1, y1, x0, y1]
    if kind == "circle":
        if len(points) != 2:
            raise DataError(f"{where}: a circle needs its centre and a point on it, not {len(points)} points")
        (cx, cy), (px, py) = points
        r = math.hypot(px - cx, py - cy)
        angles = np.linspace(0, 2 * math.pi, CIRCLE_VERTICES, endpoint=False)
        return [float(v) for a in angles for v in (cx + r * math.cos(a), cy + r * math.sin(a))]
    raise DataError(f"{where}: shape type {kind!r} has no area (polygon, rectangle and circle do)")


def _read_labels(path: Path) -> dict[str, int]:
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    values: dict[str, int] = {}
    next_value = 0
    for name in names:
        if name == "__ignore__":
            values[name] = VOID
            continue
        values[name] = next_value
        next_value += 1
    if values.get("_background_", 0) != 0:
        raise DataError(f"{path}: _background_ must come first (after __ignore__): it is class 0")
    return values


def import_labelme(src: str | Path, out: str | Path, labels: str | Path | None = None, overwrite: bool = False,
                   progress: bool = False) -> ImportResult:
    """Import a folder of LabelMe JSON files as ``out/images`` (the images, copied or decoded from ``imageData``),
    ``out/masks`` (palette PNGs) and ``out/classes.csv``.

    Raises:
        DataError: one line naming the file and the shape: an image missing, a label not in ``labels``, a polygon of
            fewer than 3 points, a shape type without area; nothing is written then.
    """
    mask_api = require("pycocotools.mask")
    src = Path(src)
    files = sorted(src.glob("*.json")) if src.is_dir() else [src]
    if not files:
        raise DataError(f"{src}: no LabelMe .json files")
    given = _read_labels(Path(labels)) if labels is not None else None
    problems: list[str] = []
    parsed = []
    for path in files:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            problems.append(f"{path}: not a readable LabelMe JSON file ({err})")
            continue
        if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list):
            problems.append(f"{path}: not a LabelMe file (no 'shapes' list)")
            continue
        image: Image.Image | None = None
        image_path = path.parent / str(doc.get("imagePath") or "")
        if doc.get("imageData"):
            try:
                image = Image.open(io.BytesIO(base64.b64decode(doc["imageData"])))
                image.load()
            except Exception as err:  # noqa: BLE001 - any decoding failure is this file's fault
                problems.append(f"{path}: imageData does not decode as an image ({err})")
                continue
        elif not doc.get("imagePath") or not image_path.is_file():
            problems.append(f"{path}: its image {image_path} not found (and no imageData)")
            continue
        shapes = []
        for i, shape in enumerate(doc["shapes"]):
            where = f"{path} shape {i} ({shape.get('label', '?')!r})"
            if given is not None and shape.get("label") not in given:
                problems.append(f"{where}: label not in {labels}")
                continue
            try:
                shapes.append((str(shape.get("label")), _polygon(shape, where)))
            except DataError as err:
                problems.append(str(err))
        parsed.append((path, doc, image, image_path, shapes))
    raise_problems(problems)
    if given is None:
        found = sorted({label for *_, shapes in parsed for label, _ in shapes} - {"_background_"})
        values = {"_background_": 0, **{name: k + 1 for k, name in enumerate(found)}}
        if len(values) > VOID:
            raise DataError(f"{src}: {len(values)} labels, more than the {VOID} a mask holds")
    else:
        values = given
    classes = {v: ("background" if n == "_background_" else n) for n, v in values.items() if v != VOID}
    classes.setdefault(0, "background")
    palette = palette_for(classes)
    counts = {"shapes": 0, "overlap_pixels": 0, "embedded_images": 0}
    with staged(Path(out), overwrite) as stage:
        for path, doc, image, image_path, shapes in tqdm(parsed, desc="import labelme", unit="file",
                                                         disable=None if progress else True):
            target = image_path.name if image is None else f"{path.stem}.png"
            if (stage / "masks" / f"{Path(target).stem}.png").exists():
                raise DataError(f"{path}: its image {target} has the name of another file's (one mask per name)")
            if image is None:
                with Image.open(image_path) as opened:
                    size = opened.size
                name = image_path.name
                (stage / "images" / name).write_bytes(image_path.read_bytes())
            else:
                size, name = image.size, f"{path.stem}.png"
                image.save(stage / "images" / name)
                counts["embedded_images"] += 1
            w, h = size
            mask = np.zeros((h, w), np.uint8)
            covered = np.zeros((h, w), bool)
            for label, polygon in shapes:  # the file's order: a later shape on top
                drawn = mask_api.decode(mask_api.merge(mask_api.frPyObjects([polygon], h, w))).astype(bool)
                counts["overlap_pixels"] += int((covered & drawn).sum())
                mask[drawn] = values[label]
                covered |= drawn
                counts["shapes"] += 1
            save_mask(mask, stage / "masks" / f"{Path(name).stem}.png", palette)
        write_classes(classes, stage / "classes.csv")
    logger.info("import labelme: %d images (%d from imageData), %d shapes, %d pixels where shapes overlap (the later "
                "on top)%s -> %s", len(parsed), counts["embedded_images"], counts["shapes"], counts["overlap_pixels"],
                ", __ignore__ drawn as void 255 (train with --ignore-index 255)" if VOID in values.values() else "",
                out)
    return ImportResult(Path(out), len(parsed), classes, counts)
