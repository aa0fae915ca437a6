"""train/export keep TensorFlow's C++ log lines off the terminal, unless the user chose a level."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_onnx._tf_logging import quiet_tensorflow_logs
from mnist_onnx.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_sets_the_level_only_when_the_user_has_not() -> None:
    environ: dict[str, str] = {}
    quiet_tensorflow_logs(environ)
    assert environ == {"TF_CPP_MIN_LOG_LEVEL": "3"}
    chosen = {"TF_CPP_MIN_LOG_LEVEL": "0"}
    quiet_tensorflow_logs(chosen)
    assert chosen == {"TF_CPP_MIN_LOG_LEVEL": "0"}


def test_the_export_handler_sets_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # (train is checked end to end below: its handler imports TensorFlow, which takes seconds)
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    missing = str(tmp_path / "missing.keras")
    # 1: no such model; 4: the export extra is missing (a test-extra install). Either way the handler ran.
    assert main(["export", missing, "--out", str(tmp_path / "out.onnx")]) in (1, 4)
    assert os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "3"
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")
    assert main(["export", missing, "--out", str(tmp_path / "out.onnx")]) in (1, 4)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"


def test_importing_the_package_leaves_the_environment_alone() -> None:
    code = (
        "import os, mnist_onnx, mnist_onnx.cli; mnist_onnx.cli.build_parser(); "
        "print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'))"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert done.stdout.strip() == "None", done.stderr


@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None, reason="needs the 'train' extra: pip install '.[train]'"
)
def test_training_prints_no_tensorflow_error_lines(tmp_path: Path, train_sample: Path) -> None:
    # Without a GPU, TensorFlow's C++ runtime logs "E0000 ... failed call to cuInit" when it starts.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnist_onnx",
            "train",
            str(train_sample),
            "--epochs",
            "1",
            "--limit",
            "200",
            "--out",
            str(tmp_path / "run"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    noisy = [line for line in done.stderr.splitlines() if line.startswith(("E0000", "W0000")) or "cuInit" in line]
    assert not noisy, noisy
