"""MkDocs hook: the parts of the site that are generated from the code at build time.

- ``reference/cli.md``: every ``mnist-onnx`` command's ``--help`` text, taken from the
  argparse parser itself, so the CLI reference cannot drift from the code.
- Figures that live beside the benchmark results (``benchmarks/results/*.png``) are
  added to the site under ``assets/benchmarks/`` so pages can show them without a copy
  in ``docs/``.
- ``assets/report/``: what ``mnist-onnx predict --report`` draws for the bundled model
  on the bundled sample, made by running that command, so the pictures in the guide
  are the ones a user gets.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CLI_MARKER = "<!-- generated: cli-reference -->"
HELP_WIDTH = "100"  # argparse wraps at $COLUMNS; fixed so the page is the same on every machine


def _help_texts() -> list[tuple[str, str]]:
    """(command, help text) for ``mnist-onnx`` and each of its subcommands, in registration order."""
    sys.path.insert(0, str(ROOT))
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_WIDTH
    try:
        from mnist_onnx.cli import build_parser

        parser = build_parser()
        texts = [("mnist-onnx", parser.format_help())]
        for action in parser._actions:  # argparse keeps subparsers only here
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    texts.append((f"mnist-onnx {name}", sub.format_help()))
        return texts
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous
        sys.path.remove(str(ROOT))


def _cli_reference() -> str:
    parts = []
    for command, text in _help_texts():
        parts.append(f"## `{command}`\n\n```text\n{text.rstrip()}\n```\n")
    return "\n".join(parts)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if CLI_MARKER in markdown:
        return markdown.replace(CLI_MARKER, _cli_reference())
    return markdown


_TEMPORARY: list[Path] = []  # removed once the site is written


def _report_pictures() -> list[Path]:
    """Run ``mnist-onnx predict --report`` on the bundled sample; the PNGs it draws."""
    folder = Path(tempfile.mkdtemp(prefix="mnist-onnx-docs-"))
    _TEMPORARY.append(folder)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "mnist_onnx", "predict", "--report", str(folder), "--out", str(folder / "sample.csv")],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"mnist-onnx predict --report failed while building the docs: {done.stderr.strip()}")
    return sorted(folder.glob("*.png"))


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    for figure in sorted((ROOT / "benchmarks" / "results").glob("*.png")):
        files.append(File.generated(config, f"assets/benchmarks/{figure.name}", abs_src_path=str(figure)))
    for picture in _report_pictures():
        files.append(File.generated(config, f"assets/report/{picture.name}", abs_src_path=str(picture)))
    return files


def on_post_build(config: Any) -> None:
    while _TEMPORARY:
        shutil.rmtree(_TEMPORARY.pop(), ignore_errors=True)
