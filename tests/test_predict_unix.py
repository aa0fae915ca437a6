"""``mnist-onnx predict`` behaves like a Unix tool: pipes, short errors, nothing lost or overwritten.

Each test runs the real command in a subprocess and checks what a user sees: stdout, stderr, the exit
code and the files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "mnist_onnx" / "runtime" / "bundled" / "sample.csv.gz"


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mnist_onnx", "predict", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env={**os.environ, **(env or {})}, timeout=300)


@pytest.fixture(scope="module")
def sample_frame() -> pd.DataFrame:
    return pd.read_csv(SAMPLE).head(40)


@pytest.mark.parametrize(("separator", "name"), [(";", "semicolons"), ("\t", "tabs"), ("|", "vertical bars")])
def test_another_separator_is_named_in_one_short_line(tmp_path: Path, sample_frame: pd.DataFrame, separator: str,
                                                        name: str) -> None:
    path = tmp_path / "digits.csv"
    sample_frame.to_csv(path, sep=separator, index=False)
    done = run(str(path))
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and len(lines[0]) < 200, done.stderr
    assert f"line 1: the columns are separated by {name}" in lines[0]


def test_a_long_header_cell_is_cut(tmp_path: Path, sample_frame: pd.DataFrame) -> None:
    path = tmp_path / "digits.csv"
    sample_frame.rename(columns={"label": "x" * 5000}).to_csv(path, index=False)
    done = run(str(path))
    assert done.returncode == 1
    line, = done.stderr.splitlines()
    assert len(line) < 250 and "'xxxx" in line and "..." in line


def test_a_long_cell_is_cut(tmp_path: Path, sample_frame: pd.DataFrame) -> None:
    frame = sample_frame.astype(object)
    frame.iloc[3, 100] = "7" * 5000
    path = tmp_path / "digits.csv"
    frame.to_csv(path, index=False)
    done = run(str(path))
    assert done.returncode == 1
    line, = done.stderr.splitlines()
    assert len(line) < 250 and "line 5, column pixel99" in line and "..." in line
