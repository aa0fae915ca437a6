"""The documentation site builds without a warning, and what it cites exists."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings_handlers") is None,
    reason="needs the 'docs' extra: pip install '.[docs]'",
)
def test_docs_build_strict(tmp_path: Path) -> None:
    # --strict turns every warning into a failure: a broken link, a missing snippet, a docstring whose
    # parameters do not match the signature.
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    cli_page = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    for command in ("predict", "data", "train", "export", "quantize", "bench"):
        assert f"usage: mnist-onnx {command}" in cli_page, command


def _cited_tests(text: str) -> list[tuple[str, str]]:
    """(file, test) pairs cited as ``test_x.py::test_y``; a bare ``::test_z`` refers to the last file named."""
    cited, current = [], None
    for match in re.finditer(r"`(?:(test_\w+\.py))?::(test_\w+)`", text):
        current = match.group(1) or current
        assert current is not None, f"{match.group(0)} names no file"
        cited.append((current, match.group(2)))
    return cited


def test_every_test_the_guarantees_cite_exists() -> None:
    cited = _cited_tests((ROOT / "docs" / "guarantees.md").read_text(encoding="utf-8"))
    assert len(cited) > 20
    missing = []
    for file_name, test_name in cited:
        path = ROOT / "tests" / file_name
        if not path.is_file() or not re.search(rf"^def {test_name}\(", path.read_text(encoding="utf-8"), re.M):
            missing.append(f"{file_name}::{test_name}")
    assert not missing, f"docs/guarantees.md cites tests that do not exist: {missing}"


def test_cited_tests_parser() -> None:
    text = "`test_a.py::test_one`, `::test_two` and `test_b.py::test_three`"
    assert _cited_tests(text) == [("test_a.py", "test_one"), ("test_a.py", "test_two"), ("test_b.py", "test_three")]
