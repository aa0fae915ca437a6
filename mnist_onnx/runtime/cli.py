"""Options of this area's subcommands (standard library imports only)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001 - argparse's own type
    """Add this area's subcommands to the ``mnist-onnx`` parser."""
