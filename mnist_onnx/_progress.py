"""Status lines for the CLI: on a terminal, or silent.  Libraries take a callback instead."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO


def status_printer(quiet: bool = False, stream: TextIO | None = None) -> Callable[[str], None] | None:
    """Return a callable that prints one status line to stderr, or None when ``quiet``."""
    if quiet:
        return None
    out = stream or sys.stderr

    def emit(message: str) -> None:
        print(message, file=out, flush=True)

    return emit
