"""The runtime works without TensorFlow: an import-boundary check and a fresh, TF-free virtual environment."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("tensorflow", "keras", "tf2onnx", "onnx")


@pytest.fixture(scope="module")
def small_model() -> Path:
    """A real (untrained) committed ONNX digit classifier: Flatten -> MatMul -> Softmax (tools/make_test_models.py)."""
    return Path(__file__).parent / "data" / "models" / "nhwc.onnx"


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=600, **kwargs)


def test_importing_the_package_loads_no_runtime_dependency():
    code = (
        "import sys, mnist_onnx, mnist_onnx.runtime, mnist_onnx.cli; "
        f"print(sorted(m for m in ('onnxruntime', 'numpy', 'pandas', *{HEAVY!r}) if m in sys.modules))"
    )
    result = _run([sys.executable, "-c", code])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_predict_csv_imports_no_tensorflow_tf2onnx_or_onnx(small_model, holdout_sample, tmp_path):
    code = textwrap.dedent(f"""
        import json, sys
        from mnist_onnx import predict_csv
        frame = predict_csv({str(holdout_sample)!r}, {str(small_model)!r}, providers="cpu",
                            output={str(tmp_path / "submission.csv")!r}, proba=True)
        print(json.dumps({{"rows": len(frame), "loaded": sorted(m for m in {HEAVY!r} if m in sys.modules)}}))
    """)
    result = _run([sys.executable, "-c", code])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {"rows": 1000, "loaded": []}


def test_fresh_virtualenv_without_extras(small_model, holdout_sample, tmp_path):
    """pip install the package (no extras) into an empty venv: no TensorFlow, and predict works."""
    # Build the wheel from a copy of the sources, so the checkout gets no build/ or egg-info.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "mnist_onnx", source / "mnist_onnx", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    built = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            str(source),
        ]
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("mnist_onnx-*.whl")

    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)])  # no --system-site-packages: TensorFlow must not be seen
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    # Dependencies resolve from the package's own metadata (numpy, pandas, onnxruntime).
    installed = _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)])
    assert installed.returncode == 0, installed.stdout + installed.stderr

    check = _run([str(python), "-c", f"import importlib.util as u; print([m for m in {HEAVY!r} if u.find_spec(m)])"])
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == "[]", "TensorFlow, Keras, tf2onnx or onnx was installed without an extra"

    cli = venv / "bin" / "mnist-onnx"
    site = _run(
        [
            str(python),
            "-c",
            "import mnist_onnx.runtime, pathlib; print(pathlib.Path(mnist_onnx.runtime.__file__).parent / 'bundled')",
        ]
    ).stdout.strip()
    if (Path(site) / "model_card.json").exists():
        # The README's first command: the bundled model over the bundled sample.
        first = _run([str(cli), "predict"], cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        assert "predicted 1,000 rows of the bundled sample" in first.stdout and "accuracy" in first.stdout
    out = tmp_path / "submission.csv"
    predicted = _run(
        [str(cli), "predict", str(holdout_sample), "--model", str(small_model), "--out", str(out)], cwd=tmp_path
    )
    assert predicted.returncode == 0, predicted.stderr
    assert "predicted 1,000 rows" in predicted.stdout and "CPUExecutionProvider" in predicted.stdout
    assert out.read_text().splitlines()[0] == "ImageId,Label"

    api = _run(
        [
            str(python),
            "-c",
            textwrap.dedent(f"""
        import sys
        from mnist_onnx import predict_csv
        frame = predict_csv({str(holdout_sample)!r}, {str(small_model)!r})
        assert "tensorflow" not in sys.modules
        print(len(frame), frame.attrs["evaluation"].rows)
    """),
        ],
        cwd=tmp_path,
    )
    assert api.returncode == 0, api.stderr
    assert api.stdout.split() == ["1000", "1000"]
