"""The one exception type for bad input data; its message names the file and what is wrong."""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data. ``str(err)`` is one line that names the file (or files) and the problem."""
