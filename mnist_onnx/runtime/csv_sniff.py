"""Recognising the MNIST CSVs that are not Kaggle's: no header row, or another separator.

Besides Kaggle's ``label,pixel0,...,pixel783`` files, the most common "MNIST in
CSV" files (``mnist_train.csv`` / ``mnist_test.csv``, widely mirrored) have no
header row: each line is the label followed by 784 pixels.  Files re-saved by a
spreadsheet in some locales use semicolons or tabs.  Standard library only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["HeaderlessLayout", "headerless_layout", "other_pixel_header", "separator_problem"]

PIXELS = 784
_INTEGER = re.compile(r"\s*\d+(\.0*)?\s*")
_SEPARATORS = {";": "semicolons (;)", "\t": "tabs", "|": "vertical bars (|)", " ": "spaces"}


@dataclass(frozen=True)
class HeaderlessLayout:
    """A first line that is data, not a header.

    Attributes:
        has_labels: The line has 785 fields, the first one a digit 0-9 (the label).
        note: One line for the user saying how the file is read.
    """

    has_labels: bool
    note: str


def headerless_layout(first_line: str) -> HeaderlessLayout | None:
    """Whether a CSV's first line is a data row of a header-less MNIST CSV.

    Args:
        first_line: The file's first line, decoded, without its line ending.

    Returns:
        The layout when the line holds 785 integers with a first one 0-9
        (label + pixels) or 784 integers (pixels only); else None.

    >>> headerless_layout("7," + ",".join(["0"] * 784)).has_labels
    True
    >>> headerless_layout(",".join(["0"] * 784)).has_labels
    False
    >>> headerless_layout("label," + ",".join(f"pixel{i}" for i in range(784))) is None
    True
    """
    fields = first_line.split(",")
    if len(fields) not in (PIXELS, PIXELS + 1) or not all(_INTEGER.fullmatch(f) for f in fields):
        return None
    if len(fields) == PIXELS + 1:
        if not 0 <= float(fields[0]) <= 9:
            return None
        return HeaderlessLayout(True, "no header row: read as an MNIST CSV with the label first and 784 pixels")
    return HeaderlessLayout(False, "no header row: read as 784 pixels a row, without labels")


# Other spellings of the 784 row-major pixel names seen in shared MNIST CSVs, with how each is described.
_OTHER_PIXEL_NAMES = (
    (tuple(f"{row}x{col}" for row in range(1, 29) for col in range(1, 29)), "'1x1'...'28x28' (row x column)"),
    (tuple(f"pixel{i}" for i in range(1, PIXELS + 1)), "'pixel1'...'pixel784' (counted from 1)"),
)


def other_pixel_header(names: list[str]) -> HeaderlessLayout | None:
    """Whether a header names the 784 pixels another common way than Kaggle's ``pixel0..pixel783``.

    Args:
        names: The header's fields, stripped.

    Returns:
        The layout (``has_labels`` when a ``label`` column comes first) with a
        note for the user, or None.

    >>> other_pixel_header(["label"] + [f"{r}x{c}" for r in range(1, 29) for c in range(1, 29)]).has_labels
    True
    >>> other_pixel_header(["label"] + [f"pixel{i}" for i in range(784)]) is None
    True
    """
    has_labels = len(names) == PIXELS + 1 and names[0] == "label"
    pixels = tuple(names[1:] if has_labels else names)
    for spelling, described in _OTHER_PIXEL_NAMES:
        if pixels == spelling:
            return HeaderlessLayout(
                has_labels,
                f"header names the pixels {described}: read as Kaggle's "
                f"{'label + ' if has_labels else ''}pixel0...pixel783, row by row",
            )
    return None


def separator_problem(first_line: str) -> str | None:
    """Say which separator a CSV seems to use when it is not the comma.

    Args:
        first_line: The file's first line, decoded, without its line ending.

    Returns:
        A short problem description naming the separator, or None when commas
        separate the fields (or no other separator is plausible).

    >>> separator_problem(";".join(["label"] + [f"pixel{i}" for i in range(784)]))
    'fields are separated by semicolons (;), expected commas; save the file as comma-separated'
    >>> separator_problem("label,pixel0,pixel1") is None
    True
    """
    if first_line.count(",") >= PIXELS - 1:
        return None
    for separator, name in _SEPARATORS.items():
        if first_line.strip().count(separator) >= PIXELS - 1:
            return f"fields are separated by {name}, expected commas; save the file as comma-separated"
    return None
