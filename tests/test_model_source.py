"""Loading models: files that are not ONNX models, broken signatures, and the bundled models' card."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from _models import small_model

from mnist_onnx.cli import main
from mnist_onnx.errors import ModelError
from mnist_onnx.runtime import model_source
from mnist_onnx.runtime.predictor import DigitClassifier, predict_csv


def _bad_model_cases(fp32_model_path: Path, tmp_path: Path) -> dict[str, tuple[object, str]]:
    good = fp32_model_path.read_bytes()
    cases: dict[str, tuple[object, str]] = {}

    def file(name: str, data: bytes) -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path

    cases["missing"] = (tmp_path / "nope.onnx", r"nope\.onnx: no such model file")
    cases["directory"] = (tmp_path, "is a directory, expected an .onnx file")
    cases["empty"] = (file("empty.onnx", b""), r"empty\.onnx: is empty \(0 bytes\), expected an ONNX model")
    cases["truncated"] = (file("half.onnx", good[: len(good) // 2]), r"half\.onnx: truncated ONNX model")
    cases["csv"] = (file("test.onnx", b"pixel0,pixel1\n0,0\n"), "is a text file, expected a binary ONNX model")
    cases["keras zip"] = (file("model.onnx", b"PK\x03\x04" + bytes(100)), r"is a zip archive \(a \.keras model\?\)")
    cases["random bytes"] = (
        file("noise.onnx", bytes([0xFF, 0xFF, 0xFF, 0xFF, 0x0F]) + bytes(range(200))),
        "is not an ONNX model",
    )
    cases["wrong input shape"] = (
        small_model("input_32x32"),
        r"expected input shape N×28×28×1, N×1×28×28, N×28×28 or N×784, got N×32×32×1",
    )
    # Two N×10 outputs: which one holds the class scores is the user's call.
    cases["two outputs"] = (
        small_model("two_outputs"),
        r"got 2 outputs: y \(N×10\), scores \(N×10\); name the one to use \(--output NAME",
    )
    cases["two inputs"] = (small_model("two_inputs"), "expected a model with 1 input .images., got 2: x, unused")
    cases["twelve classes"] = (small_model("twelve_classes"), r"expected 10 output classes \(digits 0-9\), got 12")
    cases["bad layout metadata"] = (
        small_model("layout_nwhc"),
        "mnist_onnx.input_layout: expected NCHW or NHWC, got 'NWHC'",
    )
    cases["layout contradicts shape"] = (
        small_model("layout_says_nchw"),
        "metadata says NCHW but the input shape is N×28×28×1",
    )
    cases["bad labels metadata"] = (small_model("duplicate_labels"), "expected a JSON list of distinct labels")
    return cases


CASE_NAMES = [
    "missing",
    "directory",
    "empty",
    "truncated",
    "csv",
    "keras zip",
    "random bytes",
    "wrong input shape",
    "two outputs",
    "two inputs",
    "twelve classes",
    "bad layout metadata",
    "layout contradicts shape",
    "bad labels metadata",
]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_model_gets_its_own_message(fp32_model_path, tmp_path, case):
    model, message = _bad_model_cases(fp32_model_path, tmp_path)[case]
    with pytest.raises(ModelError, match=message):
        DigitClassifier(model, providers="cpu")


def test_bad_model_from_the_cli_is_one_line(fp32_model_path, tmp_path, capsys):
    model, _ = _bad_model_cases(fp32_model_path, tmp_path)["truncated"]
    assert main(["predict", "--model", str(model)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "truncated ONNX model" in captured.err
    assert "Traceback" not in captured.err


@pytest.fixture
def fake_bundle(tmp_path, monkeypatch):
    """A bundled-model folder in tmp_path with a card and a small real model."""
    data = small_model("nhwc")
    (tmp_path / "digit_cnn.onnx").write_bytes(data)
    card = {
        "files": {"fp32": {"path": "digit_cnn.onnx", "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}}
    }
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    monkeypatch.setattr(model_source, "bundled_dir", lambda: tmp_path)
    return tmp_path


def test_bundled_model_is_checked_against_its_card(fake_bundle, holdout):
    clf = DigitClassifier(providers="cpu")
    assert clf.model_name == "bundled fp32 model digit_cnn.onnx" and clf.contract.precision == "fp32"
    assert clf.predict(holdout.images[:3]).shape == (3,)
    with pytest.raises(ModelError, match="model card has no files.int8"):
        DigitClassifier(providers="cpu", precision="int8")
    (fake_bundle / "digit_cnn.onnx").write_bytes(small_model("nhwc_seed1"))
    with pytest.raises(
        ModelError,
        match=r"bundled fp32 model .*digit_cnn\.onnx: expected sha256 [0-9a-f]{64} "
        r"\(model card\), got [0-9a-f]{64}; the installation is damaged",
    ):
        DigitClassifier(providers="cpu")


def test_missing_bundle_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(model_source, "bundled_dir", lambda: tmp_path)
    with pytest.raises(ModelError, match="this installation has no bundled model .*pass a model file instead"):
        predict_csv("unused.csv")
