"""``mnist-onnx predict`` over image files and folders, and ``mnist-onnx inspect``."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

DATA = Path(__file__).parent / "data"
IMAGES = DATA / "images"
CASES = DATA / "cases"
ZOO = CASES / "model-expects-0-255" / "mnist_zoo_like.onnx"
BUNDLED = Path(__file__).resolve().parents[1] / "mnist_onnx" / "runtime" / "bundled" / "digit_cnn.onnx"


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mnist_onnx", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning"},
    )


def _label(path: str) -> int:
    return int(Path(path).stem.rsplit("_", 1)[1])


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of real digit pictures with a subfolder, a text file and a misnamed PNG."""
    root = tmp_path_factory.mktemp("digits")
    for name in ("uci_0051_0.jpg", "uci_0002_1.jpg", "mnist_scan_0060_2.png", "format_4.bmp"):
        shutil.copy(IMAGES / name, root / name)
    (root / "nested").mkdir()
    shutil.copy(IMAGES / "format_9.gif", root / "nested" / "format_9.gif")
    shutil.copy(IMAGES / "png_named_jpg_5.jpg", root / "nested" / "png_named_jpg_5.jpg")
    (root / "notes.txt").write_text("not an image")
    return root


def test_folder_sorted_to_stdout(folder: Path) -> None:
    run = _cli("predict", str(folder))
    assert run.returncode == 0, run.stderr
    frame = pd.read_csv(io.StringIO(run.stdout))
    assert list(frame.columns) == ["path", "Label"]
    assert frame["path"].tolist() == sorted(str(p) for p in folder.iterdir() if p.suffix in (".jpg", ".png", ".bmp"))
    assert frame["Label"].tolist() == [_label(p) for p in frame["path"]]
    assert "predicted 4 images" in run.stderr


def test_recursive_glob_and_files_mixed_in_input_order(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "pred.csv"
    run = _cli(
        "predict",
        str(IMAGES / "format_8.webp"),
        f"{folder}/**/*.gif",
        str(folder / "nested"),
        "--recursive",
        "--proba",
        "--out",
        str(out),
    )
    assert run.returncode == 0, run.stderr
    frame = pd.read_csv(out)
    assert frame["path"].tolist() == [
        str(IMAGES / "format_8.webp"),
        str(folder / "nested" / "format_9.gif"),
        str(folder / "nested" / "format_9.gif"),
        str(folder / "nested" / "png_named_jpg_5.jpg"),
    ]
    assert frame["Label"].tolist() == [8, 9, 9, 5]
    assert list(frame.columns) == ["path", "Label"] + [f"p{i}" for i in range(10)] + ["confidence"]
    np.testing.assert_allclose(frame[[f"p{i}" for i in range(10)]].sum(axis=1), 1.0, atol=1e-4)


def test_save_prepared_and_report(folder: Path, tmp_path: Path) -> None:
    run = _cli(
        "predict",
        str(folder),
        "--save-prepared",
        str(tmp_path / "seen"),
        "--report",
        str(tmp_path / "rep"),
        "--out",
        str(tmp_path / "p.csv"),
    )
    assert run.returncode == 0, run.stderr
    saved = sorted((tmp_path / "seen").iterdir())
    assert [p.name for p in saved] == [
        "0_format_4.png",
        "1_mnist_scan_0060_2.png",
        "2_uci_0002_1.png",
        "3_uci_0051_0.png",
    ]
    assert all(Image.open(p).size == (28, 28) for p in saved)
    sheet = Image.open(tmp_path / "rep" / "contact_sheet.png")
    assert sheet.format == "PNG" and sheet.size[0] > 400


@pytest.mark.parametrize("option", ["--save-prepared", "--report"])
def test_unusable_output_folder_leaves_no_predictions_behind(folder: Path, tmp_path: Path, option: str) -> None:
    # The folder is a file: the run fails, and used to leave --out written behind it.
    blocker = tmp_path / "taken"
    blocker.write_text("a file, not a folder")
    out = tmp_path / "p.csv"
    run = _cli("predict", str(folder), option, str(blocker), "--out", str(out))
    assert run.returncode == 1 and run.stderr.count("\n") == 1 and str(blocker) in run.stderr
    assert not out.exists()


def test_no_preprocess_and_invert(tmp_path: Path) -> None:
    light_on_dark = tmp_path / "digit.png"
    Image.open(IMAGES / "mnist_0000_3.png").save(light_on_dark)
    as_is = _cli("predict", str(light_on_dark), "--no-preprocess", "--invert", "no")
    assert as_is.returncode == 0 and as_is.stdout.splitlines()[1] == f"{light_on_dark},3"
    forced = _cli(
        "predict", str(light_on_dark), "--no-preprocess", "--invert", "yes", "--save-prepared", str(tmp_path / "seen")
    )
    assert forced.returncode == 0, forced.stderr
    seen = np.asarray(Image.open(tmp_path / "seen" / "0_digit.png"))
    assert np.array_equal(seen, 255 - np.asarray(Image.open(light_on_dark)))


@pytest.mark.parametrize(
    ("content", "what"),
    [
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3 binary", "is a PDF document"),
        (b"\x00\x01\x02\x03\xff\xfe\xfd binary", "is binary data"),
    ],
)
def test_neither_csv_nor_image_is_one_line(tmp_path: Path, content: bytes, what: str) -> None:
    path = tmp_path / "scan.pdf"
    path.write_bytes(content)
    run = _cli("predict", str(path))
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1 and what in run.stderr and "Kaggle CSV" in run.stderr and "PNG" in run.stderr


def test_csvs_and_images_are_not_mixed(tmp_path: Path) -> None:
    run = _cli("predict", str(CASES / "common" / "test40.csv"), str(IMAGES / "format_4.bmp"))
    assert run.returncode == 1 and "separate runs" in run.stderr


def test_image_options_need_images() -> None:
    run = _cli("predict", str(CASES / "common" / "test40.csv"), "--save-prepared", "x")
    assert run.returncode == 1 and "--save-prepared is for image inputs" in run.stderr
    # --report serves both: a contact sheet for images, the confusion matrix for a labelled CSV
    run = _cli("predict", str(CASES / "common" / "test40.csv"), "--report", "x")
    assert run.returncode == 1 and "needs labels" in run.stderr


def test_invert_auto_is_not_silently_ignored_on_a_csv(tmp_path: Path) -> None:
    # `--invert auto` used to be taken as "no" for a CSV: dark-on-light rows scored 20%, exit 0.
    frame = pd.read_csv(CASES / "common" / "train40.csv")
    frame.iloc[:, 1:] = 255 - frame.iloc[:, 1:]
    inverted = tmp_path / "inverted.csv"
    frame.to_csv(inverted, index=False)
    run = _cli("predict", str(inverted), "--invert", "auto", "--out", str(tmp_path / "out.csv"))
    assert run.returncode == 1, run.stdout
    assert run.stderr.count("\n") == 1 and "--invert yes" in run.stderr
    assert not (tmp_path / "out.csv").exists()


def test_inspect_names_where_each_part_comes_from() -> None:
    run = _cli("inspect", str(ZOO))
    assert run.returncode == 0, run.stderr
    assert "pixel_scale: 1/255 (default)" in run.stdout
    assert "'Input3' 1×1×28×28 float32" in run.stdout
    assert "warning: " in run.stderr and "--pixel-scale 1" in run.stderr
    fixed = _cli("inspect", str(ZOO), "--pixel-scale", "1")
    assert "pixel_scale: 1 (flag)" in fixed.stdout and "warning" not in fixed.stderr
    accuracy = float(fixed.stdout.split("(bundled sample): ")[1].split("%")[0])
    assert accuracy >= 85
    bundled = _cli("inspect", str(BUNDLED))
    assert "metadata (mnist_onnx.pixel_scale)" in bundled.stdout and "99." in bundled.stdout
    assert bundled.stderr == ""


def test_an_image_run_shows_a_progress_bar_on_a_terminal(folder: Path, tmp_path: Path, monkeypatch) -> None:
    from mnist_onnx.cli import main
    from mnist_onnx.runtime import _predict_io

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    real = _predict_io.ProgressBar
    monkeypatch.setattr(  # no start-up delay, so the four pictures show
        _predict_io,
        "ProgressBar",
        lambda stream, total, **kw: real(stream, total, **{**kw, "delay_s": 0, "min_interval_s": 0}),
    )
    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    assert main(["predict", str(folder), "--out", str(tmp_path / "predictions.csv")]) == 0
    drawn = screen.getvalue()
    assert "preparing" in drawn and "4/4" in drawn and "images" in drawn
    assert len(pd.read_csv(tmp_path / "predictions.csv")) == 4


def test_prepare_images_reports_each_picture_done() -> None:
    from mnist_onnx.runtime.image_predict import prepare_images

    done: list[int] = []
    prepare_images([IMAGES / "format_4.bmp"] * 3, progress=done.append)
    assert done == [1, 2, 3]
