"""Classes and their conventions, in one place: names, display colours, ignored ("void") values and classes files.

The checker, the losses' class weights, the metrics tables, predictions and the report all read these; nothing
else keeps a class list.

A classes file is CSV or JSON:
    CSV with a header naming ``value``, ``name`` and optionally ``colour`` (``#rrggbb`` or ``r g b``), or ``name``
    with ``r``, ``g``, ``b`` columns (CamVid's ``class_dict.csv``: colour-coded masks, classes in row order);
    JSON as a list of ``{"value": 0, "name": "sky", "colour": "#808080"}`` or a mapping ``{"0": "sky", ...}``.
Ignored values (``--ignore-index``) are stored mask values that count in neither the loss nor any metric (CamVid 11,
Pascal VOC and Cityscapes 255); the model never predicts them.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from unetseg.data.errors import DataError

#: Names that datasets give their "count nowhere" value.
VOID_NAMES = {"void", "unlabelled", "unlabeled", "ignore", "ignored", "dontcare", "don't care", "dont care",
              "unknown", "none"}
#: Pascal VOC's and Cityscapes' void value: beside a small label set it is almost never a class.
USUAL_VOID = 255

#: Display colours of classes without one (tab20-like, distinct on photos); class 0 of binary data is black.
_DEFAULT_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
                    (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (174, 199, 232),
                    (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148),
                    (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229))


@dataclass(frozen=True)
class ClassEntry:
    """An entry of a classes file: the stored mask value (a grey level or palette index; the row's index where the
    file gives colours only), the class name, and its colour (for colour-coded masks: the stored colour)."""

    value: int
    name: str
    colour: tuple[int, int, int] | None = None

    def stored(self, mode: str) -> int:
        """The value masks of ``mode`` store for this class: its colour packed as 0xRRGGBB for colour-coded ("RGB")
        masks (-1 without a colour), else its value."""
        if mode == "RGB":
            return pack_colour(self.colour) if self.colour is not None else -1
        return self.value


def parse_colour(text: str, where: str) -> tuple[int, int, int]:
    """``"#ff8000"``, ``"255 128 0"``, ``"255,128,0"`` or ``[255, 128, 0]`` -> (255, 128, 0).

    Raises:
        DataError: naming ``where`` when the text is no colour.
    """
    if isinstance(text, (list, tuple)):
        parts = [str(p) for p in text]
    else:
        text = str(text).strip()
        if re.fullmatch(r"#?[0-9a-fA-F]{6}", text):
            h = text.lstrip("#")
            return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
        parts = [p for p in re.split(r"[\s,;/]+", text) if p]
    try:
        rgb = tuple(int(p) for p in parts)
    except ValueError:
        rgb = ()
    if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        raise DataError(f"{where}: colour {text!r} is not #rrggbb or three values 0-255")
    return rgb  # type: ignore[return-value]


def pack_colour(rgb: Sequence[int]) -> int:
    """(r, g, b) -> ``0xRRGGBB``, the stored value of a colour in colour-coded masks."""
    return (int(rgb[0]) << 16) | (int(rgb[1]) << 8) | int(rgb[2])


def read_classes_file(path: str | Path) -> list[ClassEntry]:
    """The classes a CSV or JSON file lists, in order.

    Raises:
        DataError: one line naming the file: unreadable, no rows, a name missing or repeated, a value repeated, a bad
            colour.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: classes file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: classes file unreadable: {err}") from None
    entries = _from_json(text, path) if path.suffix.lower() == ".json" or text.lstrip()[:1] in "[{" else \
        _from_csv(text, path)
    if not entries:
        raise DataError(f"{path}: the classes file lists no classes")
    names = [e.name.strip().lower() for e in entries]
    if any(not n for n in names):
        raise DataError(f"{path}: class {names.index('') + 1} has no name")
    for seen, what in ((names, "name"), ([e.value for e in entries], "value")):
        repeated = next((x for i, x in enumerate(seen) if x in seen[:i]), None)
        if repeated is not None:
            raise DataError(f"{path}: class {what} {repeated!r} is listed twice")
    return entries


def _from_csv(text: str, path: Path) -> list[ClassEntry]:
    rows = list(csv.reader(line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")))
    if not rows:
        return []
    header = [h.strip().lower() for h in rows[0]]
    colour_key = next((h for h in ("colour", "color", "rgb") if h in header), None)
    rgb_cols = all(c in header for c in ("r", "g", "b"))
    if "name" not in header or not ("value" in header or "id" in header or rgb_cols):
        raise DataError(f"{path}: a classes CSV needs a header with 'value' (or 'id') and 'name' columns, and "
                        f"optionally 'colour'; or 'name', 'r', 'g', 'b' for colour-coded masks")
    entries = []
    for line, row in enumerate(rows[1:], start=2):
        cells = dict(zip(header, (c.strip() for c in row)))
        where = f"{path} line {line}"
        colour = None
        if rgb_cols:
            colour = parse_colour(" ".join(cells.get(c, "") for c in ("r", "g", "b")), where)
        elif colour_key and cells.get(colour_key):
            colour = parse_colour(cells[colour_key], where)
        raw = cells.get("value", cells.get("id", ""))
        if raw == "" and colour is not None:  # classes in row order (colour-coded masks store the colour)
            value = len(entries)
        else:
            try:
                value = int(raw)
            except ValueError:
                raise DataError(f"{where}: value {raw!r} is not a whole number") from None
        entries.append(ClassEntry(value, cells.get("name", ""), colour))
    return entries


def _from_json(text: str, path: Path) -> list[ClassEntry]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON: {err}") from None
    if isinstance(data, dict) and "classes" in data:
        data = data["classes"]
    items = [{"value": k, **(v if isinstance(v, dict) else {"name": v})} for k, v in data.items()] \
        if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise DataError(f"{path}: expected a list of classes or a mapping value -> name")
    entries = []
    for i, item in enumerate(items):
        where = f"{path} class {i + 1}"
        if not isinstance(item, dict):
            item = {"value": i, "name": item}
        colour = item.get("colour", item.get("color"))
        colour = parse_colour(colour, where) if colour is not None else None
        raw = item.get("value", item.get("id", i))  # classes in list order where no value is given
        try:
            value = int(raw)
        except (TypeError, ValueError):
            raise DataError(f"{where}: value {raw!r} is not a whole number") from None
        entries.append(ClassEntry(value, str(item.get("name", "")), colour))
    return entries


def is_void_name(name: str) -> bool:
    """True for the names datasets give their "count nowhere" value (void, unlabelled, ignore, ...)."""
    return name.strip().lower() in VOID_NAMES


def default_names(num_labels: int) -> list[str]:
    """Names of classes without given names: background / foreground for binary data, else ``class k``."""
    return ["background", "foreground"] if num_labels == 2 else [f"class {k}" for k in range(num_labels)]


def class_names(names: Sequence[str] | None, num_labels: int) -> list[str]:
    """The given names, or the default ones where none (or a wrong count) are given."""
    return list(names) if names and len(names) == num_labels else default_names(num_labels)


def default_colour(k: int, num_labels: int) -> tuple[int, int, int]:
    """A display colour for class ``k`` of ``num_labels`` when the data gives none."""
    if num_labels == 2:
        return ((0, 0, 0), (255, 255, 255))[k]
    return _DEFAULT_COLOURS[k % len(_DEFAULT_COLOURS)]


def hex_colour(rgb: Sequence[int]) -> str:
    """(255, 128, 0) -> ``"#ff8000"``."""
    return "#" + "".join(f"{int(c):02x}" for c in rgb[:3])
