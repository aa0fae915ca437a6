"""argparse value types shared by every subcommand (standard library only)."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """Parse a positive integer option, with one message for every subcommand."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value
