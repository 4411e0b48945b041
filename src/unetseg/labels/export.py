"""Predictions in the labelling tools' own formats, for correcting there (model-assisted labelling): one COCO file
(``predict --format coco``: an instances JSON whose annotations carry a ``score``, which CVAT, Label Studio and
``unetseg import coco`` read) or CVAT's "Segmentation mask 1.1" layout (``predict --format cvat``, which CVAT and
``unetseg import cvat`` read).

Classes and ids: where class 0 is the background (binary runs, ``--background 0``, a class named "background"),
it is left out and class ``k`` is category / label ``k``; otherwise every class is an object and class ``k`` is
category ``k + 1`` (COCO's ids start at 1), while CVAT's labelmap lists the classes in order (class ``k`` on line
``k``). ``unetseg import`` of either gives back the predicted classes, pixel for pixel.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from unetseg._atomic import atomic_write_text
from unetseg.labels.write import colour_of, require

#: File names of the layouts.
COCO_FILE = "predictions.coco.json"
CVAT_MASKS, CVAT_OBJECTS, CVAT_LIST = "SegmentationClass", "SegmentationObject", "ImageSets/Segmentation/default.txt"
BACKGROUND_NAMES = {"background", "_background_", "bg"}


def has_background(num_classes: int, background: int | None, names: list[str] | None) -> bool:
    """Whether class 0 is the background (left out of the tools' annotations)."""
    if num_classes == 1 or background == 0:
        return True
    return bool(names) and names[0].strip().lower() in BACKGROUND_NAMES


class CocoWriter:
    """Collects each image's classes as compressed RLE annotations (one per image and class, ``score`` the class's
    mean probability over its pixels) and writes one COCO file at the end, atomically. Thread-safe ``add``.

    Args:
        names: the class names by index (class 0 first).
        background: whether class 0 is the background (no annotation of its own).
    """

    def __init__(self, names: list[str], background: bool) -> None:
        self.mask_api = require("pycocotools.mask")
        self.offset = 0 if background else 1
        first = 1 if background else 0
        self.categories = [{"id": k + self.offset, "name": names[k], "supercategory": ""}
                           for k in range(first, len(names))]
        self.classes = range(first, len(names))
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self._lock = threading.Lock()

    def add(self, path: Path, classes: np.ndarray, scores: dict[int, float]) -> None:
        """One image's class map (H, W) and each present class's mean probability."""
        height, width = classes.shape
        encoded = []
        for k in self.classes:
            region = classes == k
            if not region.any():
                continue
            rle = self.mask_api.encode(np.asfortranarray(region.astype(np.uint8)))
            x, y, w, h = self.mask_api.toBbox(rle).tolist()
            encoded.append({"category_id": k + self.offset, "segmentation": {"size": [height, width], "counts":
                            rle["counts"].decode("ascii")}, "area": int(region.sum()), "bbox": [x, y, w, h],
                            "iscrowd": 0, "score": round(float(scores.get(k, 1.0)), 6)})
        with self._lock:
            image_id = len(self.images) + 1
            self.images.append({"id": image_id, "file_name": path.name, "width": width, "height": height})
            for ann in encoded:
                self.annotations.append({"id": len(self.annotations) + 1, "image_id": image_id, **ann})

    def write(self, path: Path, source: str) -> Path:
        """The COCO file: images in the order given, annotations numbered from 1."""
        order = sorted(range(len(self.images)), key=lambda i: self.images[i]["file_name"])
        renumber = {self.images[i]["id"]: n for n, i in enumerate(order, 1)}
        images = [{**self.images[i], "id": renumber[self.images[i]["id"]]} for i in order]
        annotations = sorted(({**a, "image_id": renumber[a["image_id"]]} for a in self.annotations),
                             key=lambda a: (a["image_id"], a["category_id"]))
        for n, ann in enumerate(annotations, 1):
            ann["id"] = n
        atomic_write_text(path, json.dumps({
            "info": {"description": f"unetseg predictions of {source}", "date_created": time.strftime("%Y-%m-%d")},
            "images": images, "annotations": annotations, "categories": self.categories}) + "\n")
        return path


def voc_colours(count: int = 256) -> np.ndarray:
    """Pascal VOC's colour map (index -> RGB by the bits of the index, 1 -> (128, 0, 0)), which VOC and CVAT use for
    the object (instance) masks."""
    table = np.zeros((count, 3), np.uint8)
    for index in range(count):
        value, rgb = index, [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << (7 - bit)
            value >>= 3
        table[index] = rgb
    return table


VOC_COLOURS = voc_colours()


class CvatWriter:
    """CVAT's "Segmentation mask 1.1" layout in ``out``: ``labelmap.txt`` (the classes in order, with their colours),
    ``SegmentationClass/<stem>.png`` (RGB, each class in its colour), ``SegmentationObject/<stem>.png`` (each
    present class one object, in VOC's instance colours) and ``ImageSets/Segmentation/default.txt``.

    Args:
        colours: ``#rrggbb`` per class (a classes file's), else the toolkit's colours (class 0 black when it is the
            background).
    """

    def __init__(self, out: Path, names: list[str], background: bool, colours: list[str] | None = None) -> None:
        self.out = Path(out)
        if colours and len(colours) == len(names):
            table = [tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in colours]
        else:
            table = [colour_of(k if background else k + 1) for k in range(len(names))]
        if len(set(table)) < len(table):  # CVAT tells classes apart by colour
            table = [colour_of(k if background else k + 1) for k in range(len(names))]
        self.colours = np.array(table, dtype=np.uint8)
        self.names, self.background = names, background
        for sub in (CVAT_MASKS, CVAT_OBJECTS):
            (self.out / sub).mkdir(parents=True, exist_ok=True)
        self.stems: list[str] = []
        self._lock = threading.Lock()

    def add(self, path: Path, classes: np.ndarray) -> None:
        Image.fromarray(self.colours[classes]).save(self.out / CVAT_MASKS / f"{path.stem}.png")
        # one object per present class (class 0 too where it is an object), numbered in class order and painted in
        # VOC's instance colours, which CVAT's reader (Datumaro's VocInstColormap) maps back to the numbers
        objects = np.zeros(classes.shape, np.uint8)
        present = np.unique(classes).tolist()
        for n, k in enumerate([k for k in present if k > 0 or not self.background], 1):
            objects[classes == k] = n
        Image.fromarray(VOC_COLOURS[objects]).save(self.out / CVAT_OBJECTS / f"{path.stem}.png")
        with self._lock:
            self.stems.append(path.stem)

    def write(self) -> Path:
        lines = ["# label:color_rgb:parts:actions"] + [f"{name}:{','.join(map(str, c))}::" for name, c in
                                                       zip(self.names, self.colours.tolist())]
        atomic_write_text(self.out / "labelmap.txt", "\n".join(lines) + "\n")
        (self.out / CVAT_LIST).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out / CVAT_LIST, "\n".join(sorted(self.stems)) + "\n")
        return self.out
