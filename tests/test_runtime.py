"""The onnxruntime runtime: parity with Keras on real digits, input forms, CSV streaming, errors, CLI."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import threading
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mnist_onnx.cli import main
from mnist_onnx.errors import CsvFormatError, MnistOnnxError, ModelError
from mnist_onnx.runtime import session as session_module
from mnist_onnx.runtime.cli import terminal_progress
from mnist_onnx.runtime.kaggle_csv import PIXEL_COLUMNS, read_kaggle_csv
from mnist_onnx.runtime.predictor import DigitClassifier, predict_csv
from mnist_onnx.runtime.session import (
    ProviderError,
    ProviderFallbackWarning,
    create_session,
    resolve_providers,
)

onnxruntime = pytest.importorskip("onnxruntime")

# Keras (TensorFlow with oneDNN) and onnxruntime (MLAS) sum the convolutions in
# different orders, which moves float32 probabilities by a few units in the last
# place (about 1e-7 observed).  1e-5 leaves room for that and still fails on any
# real difference: a wrong pixel scale or layout changes probabilities by >1e-2.
PROBABILITY_ATOL = 1e-5
HAS_CUDA = "CUDAExecutionProvider" in onnxruntime.get_available_providers()


# -- models -----------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_model_path(tiny_onnx_model_path: Path) -> Path:
    """The tiny trained Keras model exported by `mnist-onnx export` (NCHW, full metadata)."""
    return Path(tiny_onnx_model_path)


@pytest.fixture(scope="module")
def holdout(holdout_sample: Path):
    return read_kaggle_csv(holdout_sample)


@pytest.fixture(scope="module")
def keras_probabilities(tiny_keras_model_path: Path, holdout) -> np.ndarray:
    import keras

    model = keras.models.load_model(tiny_keras_model_path)
    x = holdout.images.astype(np.float32) / np.float32(255.0)
    return np.asarray(model.predict(x, batch_size=256, verbose=0))


@pytest.fixture(scope="module")
def classifier(onnx_model_path: Path) -> DigitClassifier:
    return DigitClassifier(onnx_model_path, providers="cpu")


def linear_model(
    input_shape=("N", 28, 28, 1),
    *,
    classes: int = 10,
    softmax: bool = True,
    extra_output: bool = False,
    extra_input: bool = False,
    metadata: dict[str, str] | None = None,
    seed: int = 0,
) -> bytes:
    """A tiny real ONNX classifier (Flatten -> MatMul [-> Softmax]) built with onnx.helper."""
    onnx = pytest.importorskip("onnx", reason="needs the 'export' extra to build test models")
    from onnx import TensorProto, helper, numpy_helper

    features = int(np.prod([d for d in input_shape[1:]]))
    weights = np.random.default_rng(seed).normal(0, 0.05, (features, classes)).astype(np.float32)
    nodes = [helper.make_node("Flatten", ["x"], ["flat"]), helper.make_node("MatMul", ["flat", "W"], ["scores"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [input_shape[0], classes])]
    nodes.append(helper.make_node("Softmax" if softmax else "Identity", ["scores"], ["y"]))
    if extra_output:
        outputs.append(helper.make_tensor_value_info("scores", TensorProto.FLOAT, [input_shape[0], classes]))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))]
    if extra_input:
        inputs.append(helper.make_tensor_value_info("unused", TensorProto.FLOAT, [1]))
    graph = helper.make_graph(nodes, "linear", inputs, outputs, [numpy_helper.from_array(weights, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


# -- parity with Keras on real digits -----------------------------------------


@pytest.mark.parametrize("batch_size", [7, 256])
def test_matches_keras_on_real_digits(classifier, holdout, keras_probabilities, batch_size):
    probabilities = classifier.predict_proba(holdout.images, batch_size=batch_size)
    assert probabilities.dtype == np.float32 and probabilities.shape == keras_probabilities.shape
    np.testing.assert_allclose(probabilities, keras_probabilities, rtol=0, atol=PROBABILITY_ATOL,
                               err_msg=f"onnxruntime vs Keras probabilities at batch size {batch_size}")
    np.testing.assert_array_equal(classifier.predict(holdout.images, batch_size=batch_size),
                                  keras_probabilities.argmax(axis=1))


# Keras' own tf2onnx shim probes `np.object`, which numpy 2.4 warns about.
@pytest.mark.filterwarnings("ignore:In the future `np.object`:FutureWarning")
def test_accepts_keras_own_onnx_export(tiny_keras_model_path, holdout, keras_probabilities, tmp_path):
    keras = pytest.importorskip("keras")
    pytest.importorskip("tf2onnx", reason="Keras' ONNX export needs tf2onnx (the 'export' extra)")
    model = keras.models.load_model(tiny_keras_model_path)
    model(holdout.images[:1].astype(np.float32))  # Keras refuses to export a model that was never called
    path = tmp_path / "keras-export.onnx"
    model.export(str(path), format="onnx", verbose=False)
    clf = DigitClassifier(path, providers="cpu")
    # What Keras 3.15 writes on this stack: NHWC input named after the Input layer, no metadata.
    assert clf.contract.layout == "NHWC" and clf.contract.output_kind == "probabilities"
    for batch_size in (7, 256):
        np.testing.assert_allclose(clf.predict_proba(holdout.images, batch_size=batch_size), keras_probabilities,
                                   rtol=0, atol=PROBABILITY_ATOL)


# -- predict(): input forms and validation -------------------------------------


def test_every_input_form_gives_the_same_answer(classifier, holdout):
    images = holdout.images[:50]
    expected = classifier.predict_proba(images)
    scaled = images.astype(np.float32) / np.float32(255.0)
    forms = {
        "uint8 (N,28,28)": images[..., 0],
        "uint8 (N,784)": images.reshape(50, 784),
        "float32 (N,28,28,1)": scaled,
        "float32 (N,784)": scaled.reshape(50, 784),
        "float64 (N,28,28)": images[..., 0] / 255.0,
        "list of lists": images.reshape(50, 784).tolist(),
        "DataFrame (N,784)": pd.DataFrame(images.reshape(50, 784).astype(np.uint8)),
    }
    for name, form in forms.items():
        if name == "list of lists":
            with pytest.raises(MnistOnnxError, match="got dtype int64"):
                classifier.predict_proba(form)
            continue
        np.testing.assert_allclose(classifier.predict_proba(form), expected, rtol=0, atol=1e-6, err_msg=name)
    assert classifier.predict(images).dtype == np.int64


def test_uint8_scaling_is_exactly_training_scaling(classifier):
    pixels = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(classifier._lut[pixels], pixels.astype(np.float32) / np.float32(255.0))


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((3, 28, 28), dtype=np.int64), "expected uint8 pixels 0-255 or float pixels in .0, 1., got dtype int64"),
        (np.zeros((3, 28, 28), dtype=bool), "got dtype bool"),
        (np.array([["a"] * 784]), "got dtype <U1"),
        (np.zeros((3, 27, 28), dtype=np.uint8), r"expected images shaped \(N, 28, 28\).*got \(3, 27, 28\)"),
        (np.zeros((3, 1, 28, 28), dtype=np.uint8), r"got \(3, 1, 28, 28\)"),
        (np.zeros((28, 28), dtype=np.uint8), r"got one image shaped \(28, 28\); pass images\[None\]"),
        (np.zeros((0, 28, 28), dtype=np.uint8), "expected at least one image, got an empty array"),
        (np.full((2, 784), np.nan, dtype=np.float32), "expected finite pixel values, got nan in image 0"),
        (np.full((2, 784), 255.0), "expected float pixels in .0, 1., got values from 255 to 255 .divide by 255"),
        (np.full((2, 784), -0.5), "got values from -0.5 to -0.5"),
    ],
)
def test_predict_rejects_bad_input(classifier, images, message):
    with pytest.raises(MnistOnnxError, match=message):
        classifier.predict(images)


def test_bad_batch_size(classifier, holdout):
    with pytest.raises(MnistOnnxError, match="expected batch_size to be a positive integer, got 0"):
        classifier.predict(holdout.images[:2], batch_size=0)


# -- predict_csv(): submission, evaluation, streaming ---------------------------


def test_submission_format(onnx_model_path, holdout_sample, holdout, classifier, tmp_path):
    out = tmp_path / "submission.csv"
    frame = predict_csv(holdout_sample, onnx_model_path, providers="cpu", output=out)
    text = out.read_text()
    lines = text.splitlines()
    assert lines[0] == "ImageId,Label"
    assert len(lines) == 1 + len(holdout) and text.endswith("\n")
    written = pd.read_csv(out)
    assert list(written.columns) == ["ImageId", "Label"]
    assert written["ImageId"].tolist() == list(range(1, len(holdout) + 1))
    np.testing.assert_array_equal(written["Label"], classifier.predict(holdout.images))
    pd.testing.assert_frame_equal(written, frame[["ImageId", "Label"]])
    assert sorted(out.parent.iterdir()) == [out], "no temporary file may be left behind"


def test_proba_columns(classifier, holdout_sample, holdout, tmp_path):
    out = tmp_path / "proba.csv"
    frame = classifier.predict_csv(holdout_sample, proba=True, output=out)
    expected_columns = ["ImageId", "Label"] + [f"p{d}" for d in range(10)] + ["confidence"]
    assert list(frame.columns) == expected_columns
    probabilities = frame[[f"p{d}" for d in range(10)]].to_numpy()
    np.testing.assert_allclose(probabilities, classifier.predict_proba(holdout.images), rtol=0, atol=0)
    np.testing.assert_array_equal(frame["confidence"], probabilities.max(axis=1))
    written = pd.read_csv(out)
    assert list(written.columns) == expected_columns
    np.testing.assert_allclose(written[[f"p{d}" for d in range(10)]], probabilities, rtol=1e-5)


def test_label_column_is_scored_not_used(classifier, holdout_sample, holdout, tmp_path):
    frame = classifier.predict_csv(holdout_sample)
    evaluation = frame.attrs["evaluation"]
    predicted = frame["Label"].to_numpy()
    assert evaluation.rows == len(holdout)
    assert evaluation.correct == int((predicted == holdout.labels).sum())
    assert evaluation.accuracy == pytest.approx(evaluation.correct / len(holdout))
    assert evaluation.accuracy > 0.5, "even the 1-epoch test model reads most real digits"
    confusion = evaluation.confusion_frame()
    assert confusion.shape == (10, 10) and int(confusion.to_numpy().sum()) == len(holdout)
    for true in range(10):
        assert confusion.loc[true].sum() == (holdout.labels == true).sum()
        for pred in range(10):
            assert confusion.loc[true, pred] == ((holdout.labels == true) & (predicted == pred)).sum()

    # The same pixels without the label column: identical predictions, no evaluation.
    test_csv = tmp_path / "test.csv"
    pixels = pd.DataFrame(holdout.images.reshape(len(holdout), 784), columns=[f"pixel{i}" for i in range(784)])
    pixels.to_csv(test_csv, index=False)
    unlabelled = classifier.predict_csv(test_csv)
    assert unlabelled.attrs["evaluation"] is None
    pd.testing.assert_frame_equal(unlabelled, frame, check_like=False)
    assert unlabelled.attrs["rows"] == len(holdout) and unlabelled.attrs["providers"] == ["CPUExecutionProvider"]


@pytest.mark.parametrize("overlap_reading", [False, True])
def test_streaming_in_many_chunks_equals_one_shot(classifier, holdout_sample, tmp_path, overlap_reading):
    one_shot = classifier.predict_csv(holdout_sample, proba=True, chunk_rows=100_000, batch_size=1000,
                                      output=tmp_path / "one.csv")
    seen: list[int] = []
    streamed = classifier.predict_csv(holdout_sample, proba=True, chunk_rows=37, batch_size=5,
                                      overlap_reading=overlap_reading, progress=seen.append,
                                      output=tmp_path / "many.csv")
    pd.testing.assert_frame_equal(streamed, one_shot)
    assert (tmp_path / "one.csv").read_bytes() == (tmp_path / "many.csv").read_bytes()
    # Progress after every chunk (or parallel block) of at most 37 rows, rising to 1000.
    steps = np.diff([0, *seen])
    assert seen[-1] == 1000 and steps.min() >= 1 and steps.max() <= 37
    if not overlap_reading:
        assert len(seen) == -(-1000 // 37)
    assert streamed.attrs["evaluation"].accuracy == one_shot.attrs["evaluation"].accuracy


@pytest.mark.parametrize("overlap_reading", [False, True])
def test_bad_row_late_in_the_file_leaves_no_submission(classifier, holdout_sample, tmp_path, overlap_reading):
    lines = gzip.decompress(holdout_sample.read_bytes()).decode().splitlines()
    fields = lines[900].split(",")
    fields[200] = "256"  # column pixel199 (after the label), data line 900 = file line 901
    lines[900] = ",".join(fields)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    out = tmp_path / "submission.csv"
    out.write_text("previous submission\n")
    with pytest.raises(CsvFormatError, match=r"bad\.csv, line 901, column pixel199: pixel 256 out of range"):
        classifier.predict_csv(bad, output=out, chunk_rows=64, overlap_reading=overlap_reading)
    assert out.read_text() == "previous submission\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "submission.csv"]
    # The blocks still in flight were dropped: the same classifier goes on working.
    assert len(classifier.predict_csv(holdout_sample)) == 1000


def test_reader_thread_stops_when_prediction_fails(classifier, holdout_sample, tmp_path):
    def interrupt(rows: int) -> None:
        raise KeyboardInterrupt

    out = tmp_path / "submission.csv"
    with pytest.raises(KeyboardInterrupt):
        classifier.predict_csv(holdout_sample, output=out, chunk_rows=50, overlap_reading=True, progress=interrupt)
    assert not any(t.name == "mnist-onnx-csv-reader" for t in threading.enumerate())
    assert list(tmp_path.iterdir()) == []
    assert len(classifier.predict_csv(holdout_sample, chunk_rows=50)) == 1000


@pytest.mark.parametrize("destination, message", [
    ("missing-dir/submission.csv", "directory .* does not exist"),
    (".", "is a directory, expected a file path"),
])
def test_unwritable_output(classifier, holdout_sample, tmp_path, destination, message):
    with pytest.raises(MnistOnnxError, match=message):
        classifier.predict_csv(holdout_sample, output=tmp_path / destination)


def test_session_is_reused(classifier, holdout):
    session = classifier.session
    classifier.predict(holdout.images[:3])
    classifier.predict(holdout.images[3:9])
    assert classifier.session is session


# -- what the model says about itself ------------------------------------------


def test_nchw_model_gives_the_same_answer_as_nhwc(holdout):
    nhwc = DigitClassifier(linear_model(("N", 28, 28, 1)), providers="cpu")
    nchw = DigitClassifier(linear_model(("N", 1, 28, 28)), providers="cpu")
    assert (nhwc.contract.layout, nchw.contract.layout) == ("NHWC", "NCHW")
    np.testing.assert_array_equal(nchw.predict_proba(holdout.images), nhwc.predict_proba(holdout.images))


def test_logits_get_a_softmax(holdout):
    probabilities = DigitClassifier(linear_model(softmax=True), providers="cpu")
    logits = DigitClassifier(linear_model(softmax=False), providers="cpu")
    assert logits.contract.output_kind == "logits"
    result = logits.predict_proba(holdout.images)
    np.testing.assert_allclose(result.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(result, probabilities.predict_proba(holdout.images), rtol=0, atol=1e-6)


def test_metadata_drives_scale_labels_and_kind(holdout):
    metadata = {
        "mnist_onnx.input_layout": "NHWC",
        "mnist_onnx.pixel_scale": "0.5",  # an odd scale, to see that it is the one applied
        "mnist_onnx.class_labels": json.dumps(list("abcdefghij")),
        "mnist_onnx.output_kind": "logits",
        "mnist_onnx.precision": "fp32",
    }
    clf = DigitClassifier(linear_model(softmax=False, metadata=metadata), providers="cpu", precision="fp32")
    plain = DigitClassifier(linear_model(softmax=True), providers="cpu")
    assert clf.contract.class_labels == tuple("abcdefghij") and clf.contract.pixel_scale == 0.5
    images = holdout.images[:20]
    expected = plain.session.run(None, {"x": images.astype(np.float32) * np.float32(0.5)})[0]
    np.testing.assert_allclose(clf.predict_proba(images), expected, rtol=0, atol=1e-6)
    assert list(clf.predict(images)) == [list("abcdefghij")[i] for i in expected.argmax(axis=1)]
    with pytest.raises(ModelError, match="expected precision int8, got fp32"):
        DigitClassifier(linear_model(metadata=metadata), providers="cpu", precision="int8")


def test_digit_string_labels_read_as_integers(holdout, holdout_sample):
    # `mnist-onnx export` writes the class labels as JSON strings "0".."9".
    metadata = {"mnist_onnx.class_labels": json.dumps(list("0123456789"))}
    clf = DigitClassifier(linear_model(metadata=metadata), providers="cpu")
    assert clf.class_labels == tuple(range(10))
    assert clf.predict(holdout.images[:5]).dtype == np.int64
    frame = clf.predict_csv(holdout_sample, proba=True)
    assert frame["Label"].dtype == np.int64 and "p9" in frame.columns
    assert frame.attrs["evaluation"].rows == len(holdout)


def test_int8_model(tiny_int8_model_path, quantizable_onnx_model_path, holdout):
    int8 = DigitClassifier(tiny_int8_model_path, providers="cpu", precision="int8")
    fp32 = DigitClassifier(quantizable_onnx_model_path, providers="cpu")
    assert (int8.contract.precision, fp32.contract.precision) == ("int8", "fp32")
    agreement = float((int8.predict(holdout.images) == fp32.predict(holdout.images)).mean())
    assert agreement >= 0.998, "the quantization gate let this model through at >= 99.8% agreement"
    with pytest.raises(ModelError, match="expected precision fp32, got int8"):
        DigitClassifier(tiny_int8_model_path, providers="cpu", precision="fp32")


def test_fixed_batch_model_is_fed_in_its_own_batch_size(holdout):
    dynamic = DigitClassifier(linear_model(("N", 28, 28, 1)), providers="cpu")
    fixed = DigitClassifier(linear_model((4, 28, 28, 1)), providers="cpu")
    assert fixed.contract.fixed_batch == 4
    np.testing.assert_array_equal(fixed.predict_proba(holdout.images[:11], batch_size=256),
                                  dynamic.predict_proba(holdout.images[:11]))


# -- bad models ------------------------------------------------------------------


def _bad_model_cases(onnx_model_path: Path, tmp_path: Path) -> dict[str, tuple[object, str]]:
    good = onnx_model_path.read_bytes()
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
    cases["random bytes"] = (file("noise.onnx", bytes([0xFF, 0xFF, 0xFF, 0xFF, 0x0F]) + bytes(range(200))),
                             "is not an ONNX model")
    cases["wrong input shape"] = (linear_model(("N", 32, 32, 1)), r"expected input shape N×28×28×1 or N×1×28×28, got N×32×32×1")
    cases["flat input"] = (linear_model(("N", 784)), r"expected input shape .*, got N×784")
    cases["two outputs"] = (linear_model(extra_output=True), "expected a model with 1 output .class scores., got 2: y, scores")
    cases["two inputs"] = (linear_model(extra_input=True), "expected a model with 1 input .images., got 2: x, unused")
    cases["twelve classes"] = (linear_model(classes=12), r"expected 10 output classes \(digits 0-9\), got 12")
    cases["bad layout metadata"] = (linear_model(metadata={"mnist_onnx.input_layout": "NWHC"}),
                                    "mnist_onnx.input_layout: expected NCHW or NHWC, got 'NWHC'")
    cases["layout contradicts shape"] = (linear_model(metadata={"mnist_onnx.input_layout": "NCHW"}),
                                         "metadata says NCHW but the input shape is N×28×28×1")
    cases["bad labels metadata"] = (linear_model(metadata={"mnist_onnx.class_labels": "[1, 1]"}),
                                    "expected a JSON list of distinct labels")
    return cases


CASE_NAMES = ["missing", "directory", "empty", "truncated", "csv", "keras zip", "random bytes", "wrong input shape",
              "flat input", "two outputs", "two inputs", "twelve classes", "bad layout metadata",
              "layout contradicts shape", "bad labels metadata"]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_model_gets_its_own_message(onnx_model_path, tmp_path, case):
    model, message = _bad_model_cases(onnx_model_path, tmp_path)[case]
    with pytest.raises(ModelError, match=message):
        DigitClassifier(model, providers="cpu")


def test_bad_model_from_the_cli_is_one_line(onnx_model_path, tmp_path, capsys):
    model, _ = _bad_model_cases(onnx_model_path, tmp_path)["truncated"]
    assert main(["predict", "--model", str(model)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "truncated ONNX model" in captured.err
    assert "Traceback" not in captured.err


# -- the bundled model -------------------------------------------------------------


@pytest.fixture
def fake_bundle(tmp_path, monkeypatch):
    """A bundled-model folder in tmp_path with a card and a small real model."""
    data = linear_model()
    (tmp_path / "digit_cnn.onnx").write_bytes(data)
    card = {"files": {"fp32": {"path": "digit_cnn.onnx", "sha256": hashlib.sha256(data).hexdigest(),
                               "bytes": len(data)}}}
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    monkeypatch.setattr(session_module, "_bundled_dir", lambda: tmp_path)
    return tmp_path


def test_bundled_model_is_checked_against_its_card(fake_bundle, holdout):
    clf = DigitClassifier(providers="cpu")
    assert clf.model_name == "bundled fp32 model digit_cnn.onnx" and clf.contract.precision == "fp32"
    assert clf.predict(holdout.images[:3]).shape == (3,)
    with pytest.raises(ModelError, match="model card has no files.int8"):
        DigitClassifier(providers="cpu", precision="int8")
    (fake_bundle / "digit_cnn.onnx").write_bytes(linear_model(seed=1))
    with pytest.raises(ModelError, match=r"bundled fp32 model .*digit_cnn\.onnx: expected sha256 [0-9a-f]{64} "
                                         r"\(model card\), got [0-9a-f]{64}; the installation is damaged"):
        DigitClassifier(providers="cpu")


def test_missing_bundle_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(session_module, "_bundled_dir", lambda: tmp_path)
    with pytest.raises(ModelError, match="this installation has no bundled model .*pass a model file instead"):
        predict_csv("unused.csv")


# -- providers -------------------------------------------------------------------


def test_provider_names():
    assert resolve_providers("cpu") == ["CPUExecutionProvider"]
    assert resolve_providers("auto") == (["CUDAExecutionProvider", "CPUExecutionProvider"] if HAS_CUDA
                                         else ["CPUExecutionProvider"])
    assert resolve_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


@pytest.mark.parametrize("request_, message", [
    (["NoSuchExecutionProvider"], "execution provider NoSuchExecutionProvider is not available"),
    ("gpu", "expected providers 'auto', 'cpu', 'cuda' or a list of onnxruntime provider names, got 'gpu'"),
    ([], "expected at least one execution provider, got an empty list"),
])
def test_provider_errors_list_what_is_available(request_, message):
    with pytest.raises(ProviderError, match=message) as info:
        resolve_providers(request_)
    if "not available" in message:
        assert f"available: {', '.join(onnxruntime.get_available_providers())}" in str(info.value)


@pytest.mark.skipif(HAS_CUDA, reason="CUDAExecutionProvider is available here")
def test_cuda_without_onnxruntime_gpu_says_how_to_get_it(onnx_model_path):
    with pytest.raises(ProviderError, match=r"CUDAExecutionProvider is not available .*onnxruntime-gpu.*"
                                            r"available: .*CPUExecutionProvider"):
        DigitClassifier(onnx_model_path, providers="cuda")


@pytest.mark.parametrize("installed, expected", [
    ({"onnxruntime"}, "CUDA needs the onnxruntime-gpu wheel instead of onnxruntime: pip uninstall -y onnxruntime "
                      "onnxruntime-gpu && pip install 'onnxruntime-gpu[cuda,cudnn]'"),
    ({"onnxruntime", "onnxruntime-gpu"}, "onnxruntime and onnxruntime-gpu are both installed and overwrite each "
                                         "other's files; keep only the GPU wheel: pip uninstall -y onnxruntime"),
    ({"onnxruntime-gpu"}, "onnxruntime-gpu is installed but does not offer CUDA here"),
])
def test_cuda_hint_depends_on_the_installed_wheels(monkeypatch, installed, expected):
    from importlib import metadata

    def version(dist):
        if dist not in installed:
            raise metadata.PackageNotFoundError(dist)
        return "1.32.0"

    monkeypatch.setattr(metadata, "version", version)
    from mnist_onnx.runtime.session import cuda_install_hint

    assert cuda_install_hint().startswith(expected)


def test_silent_cuda_fallback_is_reported(monkeypatch):
    # Pretend this onnxruntime build offers CUDA: the session really comes up on the CPU
    # (as onnxruntime-gpu does when the CUDA libraries cannot be loaded), which must be said.
    real = onnxruntime.get_available_providers()
    monkeypatch.setattr(session_module.ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", *[p for p in real if p != "CUDAExecutionProvider"]])
    if HAS_CUDA:
        pytest.skip("a real CUDA provider is available; the fallback cannot be provoked this way")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        session = create_session(linear_model(), providers="cuda")
    assert session.get_providers() == ["CPUExecutionProvider"]
    fallback = [w for w in caught if issubclass(w.category, ProviderFallbackWarning)]
    assert len(fallback) == 1 and "CUDA was requested but <" in str(fallback[0].message)
    assert "runs on CPUExecutionProvider" in str(fallback[0].message)


def test_session_options_are_applied():
    session = create_session(linear_model(), providers="cpu", threads=1, spinning=False, optimization="basic")
    options = session.get_session_options()
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
    assert options.graph_optimization_level == onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert options.execution_mode == onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    with pytest.raises(MnistOnnxError, match="expected threads to be a positive integer or None, got 0"):
        create_session(linear_model(), providers="cpu", threads=0)


def test_uint8_input_model_gets_raw_pixels_and_rounded_floats(tmp_path):
    # A model that takes uint8 pixels and scales them itself gives the same answers as the
    # float model it wraps, from uint8 images and from float images alike.
    onnx = pytest.importorskip("onnx", reason="needs the 'export' extra to build test models")
    from mnist_onnx.export import graph as g

    float_bytes = linear_model(("N", 1, 28, 28), metadata={"mnist_onnx.input_layout": "NCHW"})
    uint8_model = onnx.load_from_string(float_bytes)
    g.take_uint8_input(uint8_model, 1 / 255)
    onnx.checker.check_model(uint8_model, full_check=True)
    a = DigitClassifier(float_bytes, providers="cpu")
    b = DigitClassifier(uint8_model.SerializeToString(), providers="cpu")
    assert b.contract.uint8_input and not a.contract.uint8_input
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(40, 28, 28, 1), dtype=np.uint8)
    np.testing.assert_allclose(b.predict_proba(pixels), a.predict_proba(pixels), rtol=0, atol=1e-6)
    # Floats go to the nearest pixel value: exactly the uint8 answer.
    near = pixels.astype(np.float32) / 255 + rng.uniform(-0.4, 0.4, pixels.shape).astype(np.float32) / 255
    np.testing.assert_array_equal(b.predict_proba(np.clip(near, 0, 1)), b.predict_proba(pixels))
    path = tmp_path / "in.csv"
    path.write_text(",".join(PIXEL_COLUMNS) + "\n" + "\n".join(",".join(map(str, p.ravel())) for p in pixels) + "\n")
    np.testing.assert_array_equal(b.predict_csv(path)["Label"].to_numpy(), a.predict(pixels))


def test_io_binding_path_gives_the_same_answer(onnx_model_path, holdout, classifier):
    # The CUDA path binds inputs and outputs with IOBinding/OrtValue; run the same
    # code with the CPU as the device, so it is checked on machines without a GPU.
    bound = DigitClassifier(onnx_model_path, providers="cpu")
    bound._bound_device = ("cpu", 0)
    np.testing.assert_array_equal(bound.predict_proba(holdout.images, batch_size=100),
                                  classifier.predict_proba(holdout.images, batch_size=100))


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDAExecutionProvider available: needs the onnxruntime-gpu wheel "
                                         "(README, 'GPU') on a machine with an NVIDIA GPU")
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_cuda_matches_cpu(precision, holdout, holdout_sample, tmp_path):
    # The bundled models, so that this runs on a GPU machine without TensorFlow.
    cpu = DigitClassifier(precision=precision, providers="cpu")
    gpu = DigitClassifier(precision=precision, providers="cuda")
    assert gpu.providers[0] == "CUDAExecutionProvider", gpu.providers
    expected = cpu.predict_proba(holdout.images)
    for batch_size in (7, 256, None):  # None: the CUDA default batch
        got = gpu.predict_proba(holdout.images, batch_size=batch_size)
        # TF32 is off by default (session.CUDA_DEFAULT_OPTIONS): measured on an H100, 8.3e-7 (fp32)
        # and 2.4e-7 (int8) from the CPU; the exporter's parity limit is 1e-5.
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1))
    frame = gpu.predict_csv(holdout_sample, output=tmp_path / "gpu.csv")
    assert frame.attrs["providers"][0] == "CUDAExecutionProvider"
    np.testing.assert_array_equal(frame["Label"].to_numpy(), cpu.predict(holdout.images))


def test_cuda_sessions_get_the_measured_provider_options(monkeypatch):
    seen = []

    class Recorder:
        def __init__(self, data, sess_options=None, providers=None, **kwargs):
            seen.append(providers)
            raise RuntimeError("recorded")

    monkeypatch.setattr(session_module.ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(session_module.ort, "InferenceSession", Recorder)
    for providers in ("cuda", [("CUDAExecutionProvider", {"use_tf32": "1"}), "CPUExecutionProvider"]):
        with pytest.raises(Exception):
            create_session(linear_model(), providers=providers, cuda_device=1)
    assert seen[0][0] == ("CUDAExecutionProvider", {"device_id": 1, "use_tf32": "0"})
    assert seen[-1][0] == ("CUDAExecutionProvider", {"device_id": 1, "use_tf32": "1"})  # the caller's option wins


# -- CLI -------------------------------------------------------------------------


def test_cli_default_run_needs_or_uses_the_bundled_model(capsys):
    code = main(["predict"])
    captured = capsys.readouterr()
    if (Path(session_module._bundled_dir()) / "model_card.json").exists():
        assert code == 0, captured.err
        assert "predicted 1,000 rows of the bundled sample with bundled fp32 model" in captured.out
        assert "accuracy" in captured.out and "images/s" in captured.out
    else:
        assert code == 1
        assert captured.err.startswith("mnist-onnx predict: error: this installation has no bundled model")
        assert captured.err.count("\n") == 1


def test_cli_predicts_and_writes_a_submission(onnx_model_path, holdout_sample, tmp_path, capsys):
    out = tmp_path / "submission.csv"
    code = main(["predict", str(holdout_sample), "--model", str(onnx_model_path), "--out", str(out),
                 "--batch-size", "100", "--threads", "1", "--provider", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err == ""
    assert f"predicted 1,000 rows of {holdout_sample} with {onnx_model_path} on CPUExecutionProvider" in captured.out
    assert "images/s" in captured.out and "accuracy " in captured.out and "match the file's label column" in captured.out
    assert f"wrote {out} (ImageId, Label; 1,000 rows)" in captured.out
    assert out.read_text().startswith("ImageId,Label\n1,")


def test_cli_quiet_prints_nothing(onnx_model_path, holdout_sample, tmp_path, capsys):
    out = tmp_path / "submission.csv"
    assert main(["predict", str(holdout_sample), "--model", str(onnx_model_path), "--out", str(out), "-q"]) == 0
    assert capsys.readouterr() == ("", "")
    assert len(out.read_text().splitlines()) == 1001


@pytest.mark.parametrize("arguments, message", [
    (["--proba"], "--proba adds columns to the --out file: give --out PATH too"),
    (["--provider", "cpu", "MISSING.csv"], "MISSING.csv: no such file"),
    (["--model", "MISSING.onnx"], "MISSING.onnx: no such model file"),
    (["--out", "no-such-dir/sub.csv"], "directory no-such-dir does not exist"),
])
def test_cli_user_errors_are_one_line(onnx_model_path, arguments, message, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    if "--model" not in arguments:
        arguments = [*arguments, "--model", str(onnx_model_path)]
    assert main(["predict", *arguments]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("mnist-onnx predict: error: ") and message in captured.err
    assert captured.err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_cli_bad_csv_names_line_and_column_and_writes_nothing(onnx_model_path, tmp_path, capsys):
    bad = tmp_path / "test.csv"
    bad.write_text(",".join(f"pixel{i}" for i in range(784)) + "\n" + ",".join(["0"] * 783 + ["x"]) + "\n")
    out = tmp_path / "submission.csv"
    assert main(["predict", str(bad), "--model", str(onnx_model_path), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "test.csv, line 2, column pixel783: expected an integer 0-255, got 'x'" in err
    assert not out.exists()


@pytest.mark.skipif(HAS_CUDA, reason="CUDAExecutionProvider is available here")
def test_cli_cuda_unavailable_lists_providers(onnx_model_path, capsys):
    assert main(["predict", "--model", str(onnx_model_path), "--provider", "cuda"]) == 1
    err = capsys.readouterr().err
    assert "CUDAExecutionProvider is not available" in err and "available: " in err and err.count("\n") == 1


def test_cli_bad_option_values_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as info:
        main(["predict", "--batch-size", "0"])
    assert info.value.code == 2
    assert "expected a positive integer, got 0" in capsys.readouterr().err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal_and_only_on_long_runs():
    now = [0.0]
    terminal = _Terminal()
    progress = terminal_progress(terminal, clock=lambda: now[0])
    progress(4096)  # within the first second: silent
    assert terminal.getvalue() == ""
    now[0] = 2.0
    progress(8192)
    assert terminal.getvalue() == "\rpredicting: 8,192 rows, 4,096 rows/s"
    progress.close()
    assert terminal.getvalue().endswith("\r\033[K")

    pipe = io.StringIO()
    progress = terminal_progress(pipe, clock=lambda: now[0] + 10)
    progress(8192)
    progress.close()
    assert pipe.getvalue() == ""


@pytest.mark.parametrize("spinning, entry", [(None, "1"), (False, "0"), (True, "1")])
def test_spinning_reaches_the_session(spinning, entry):
    clf = DigitClassifier(providers="cpu", spinning=spinning)
    assert clf.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == entry


def test_large_inputs_run_data_parallel_with_the_same_answers(holdout):
    # threads=2 splits a large input over two concurrent single-threaded runs; one
    # thread runs it as before.  Each image's computation is the same either way.
    parallel = DigitClassifier(providers="cpu", threads=2)
    serial = DigitClassifier(providers="cpu", threads=1)
    small = parallel.predict_proba(holdout.images[:7])  # fewer than 4 images per worker: one intra-op call
    assert parallel._serial_session is None
    np.testing.assert_array_equal(small, serial.predict_proba(holdout.images[:7]))
    for batch_size in (5, 64, 1000):
        np.testing.assert_array_equal(parallel.predict_proba(holdout.images, batch_size=batch_size),
                                      serial.predict_proba(holdout.images, batch_size=batch_size))
    assert parallel._serial_session is not None and serial._serial_session is None
