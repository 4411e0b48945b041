"""The one exception type for bad input data; its message names the file and what is wrong."""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data. ``str(err)`` is one line that names the file (or files) and the problem."""


def raise_problems(problems: list[str]) -> None:
    """Raise one DataError listing ``problems`` (each naming its file), the first in front; nothing when empty."""
    if problems:
        shown = "; ".join(problems[:10]) + (f"; ... {len(problems) - 10} more" if len(problems) > 10 else "")
        raise DataError(shown if len(problems) == 1 else f"{len(problems)} problems: {shown}")
