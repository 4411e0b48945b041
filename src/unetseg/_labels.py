"""Parsing of stored mask values as users write them (torch-free, for config.py and the CLI)."""

from __future__ import annotations

from typing import Any


def label_value(text: Any) -> int:
    """A stored mask value: ``11``, ``"255"`` or a colour ``"#rrggbb"`` (colour-coded masks, packed 0xRRGGBB).

    Raises:
        ValueError: naming --ignore-index when the text is no mask value.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        text = str(text).strip()
        try:
            value = int(text[1:], 16) if text.startswith("#") and len(text) == 7 else int(text)
        except ValueError:
            raise ValueError(f"--ignore-index: {text!r} is not a mask value (a number such as 11 or 255, or #rrggbb "
                             f"for colour masks)") from None
    if not 0 <= value <= 0xFFFFFF:
        raise ValueError(f"--ignore-index: {value} is not a mask value (0-255, or #rrggbb for colour masks)")
    return value


def label_values(values: Any) -> list[int]:
    """Mask values from a scalar, ``"11,255"``, or a list of either."""
    items = values if isinstance(values, (list, tuple)) else [values]
    out = []
    for item in items:
        parts = str(item).split(",") if isinstance(item, str) else [item]
        out += [label_value(p) for p in parts if str(p).strip()]
    return out
