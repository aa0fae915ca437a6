"""DigitClassifier and predict_csv on the bundled models: input forms, CSV streaming, evaluation, output."""

from __future__ import annotations

import gzip
import threading

import numpy as np
import pandas as pd
import pytest
from _models import FP32_MODEL, HAS_CUDA, INT8_MODEL

from mnist_onnx.errors import CsvFormatError, MnistOnnxError, ModelError
from mnist_onnx.runtime.predictor import DigitClassifier, predict_csv


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
    forms["int64 (N,28,28) (pd.read_csv(...).values)"] = images[..., 0].astype(np.int64)
    forms["uint8 (N,1,28,28) (PyTorch)"] = images[..., 0][:, None]
    for name, form in forms.items():
        np.testing.assert_allclose(classifier.predict_proba(form), expected, rtol=0, atol=1e-6, err_msg=name)
    assert classifier.predict(images).dtype == np.int64


def test_uint8_scaling_is_exactly_training_scaling(classifier):
    pixels = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(classifier._to_input._lut[pixels], pixels.astype(np.float32) / np.float32(255.0))


@pytest.mark.parametrize(
    "images, message",
    [
        (np.full((3, 28, 28), 256, dtype=np.int64), "expected integer pixels 0-255, got values from 256 to 256"),
        (np.full((3, 28, 28), -1, dtype=np.int8), "expected integer pixels 0-255, got values from -1 to -1"),
        (np.zeros((3, 28, 28), dtype=bool), "got dtype bool"),
        (np.array([["a"] * 784]), "got dtype <U1"),
        (np.zeros((3, 27, 28), dtype=np.uint8), r"expected images shaped \(N, 28, 28\).*got \(3, 27, 28\)"),
        (np.zeros((3, 2, 28, 28), dtype=np.uint8), r"got \(3, 2, 28, 28\)"),
        # pd.read_csv("train.csv").values keeps the label column: say so, not just the shapes
        (np.zeros((3, 785), dtype=np.int64), r"got \(3, 785\): .*label first.*drop"),
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


def test_submission_format(fp32_model_path, holdout_sample, holdout, classifier, tmp_path):
    out = tmp_path / "submission.csv"
    frame = predict_csv(holdout_sample, fp32_model_path, providers="cpu", output=out)
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
    assert evaluation.accuracy > 0.5, "the bundled model reads real digits"
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
    one_shot = classifier.predict_csv(
        holdout_sample, proba=True, chunk_rows=100_000, batch_size=1000, output=tmp_path / "one.csv"
    )
    seen: list[int] = []
    streamed = classifier.predict_csv(
        holdout_sample,
        proba=True,
        chunk_rows=37,
        batch_size=5,
        overlap_reading=overlap_reading,
        progress=seen.append,
        output=tmp_path / "many.csv",
    )
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


@pytest.mark.parametrize(
    "destination, message",
    [("missing-dir/submission.csv", "directory .* does not exist"), (".", "is a directory, expected a file path")],
)
def test_unwritable_output(classifier, holdout_sample, tmp_path, destination, message):
    with pytest.raises(MnistOnnxError, match=message):
        classifier.predict_csv(holdout_sample, output=tmp_path / destination)


def test_session_is_reused(classifier, holdout):
    session = classifier.session
    classifier.predict(holdout.images[:3])
    classifier.predict(holdout.images[3:9])
    assert classifier.session is session


def test_int8_model(holdout):
    int8 = DigitClassifier(INT8_MODEL, providers="cpu", precision="int8")
    fp32 = DigitClassifier(FP32_MODEL, providers="cpu")
    assert (int8.contract.precision, fp32.contract.precision) == ("int8", "fp32")
    agreement = float((int8.predict(holdout.images) == fp32.predict(holdout.images)).mean())
    assert agreement >= 0.998, "the quantization gate let the bundled int8 model through at >= 99.8% agreement"
    with pytest.raises(ModelError, match="expected precision fp32, got int8"):
        DigitClassifier(INT8_MODEL, providers="cpu", precision="fp32")


def test_io_binding_path_gives_the_same_answer(fp32_model_path, holdout, classifier):
    # The CUDA path binds inputs and outputs with IOBinding/OrtValue; run the same
    # code with the CPU as the device, so it is checked on machines without a GPU.
    bound = DigitClassifier(fp32_model_path, providers="cpu")
    bound._bound_device = ("cpu", 0)
    np.testing.assert_array_equal(
        bound.predict_proba(holdout.images, batch_size=100), classifier.predict_proba(holdout.images, batch_size=100)
    )


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
        np.testing.assert_array_equal(
            parallel.predict_proba(holdout.images, batch_size=batch_size),
            serial.predict_proba(holdout.images, batch_size=batch_size),
        )
    assert parallel._serial_session is not None and serial._serial_session is None


@pytest.mark.skipif(
    not HAS_CUDA,
    reason="no CUDAExecutionProvider available: needs the onnxruntime-gpu wheel "
    "(README, 'GPU') on a machine with an NVIDIA GPU",
)
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
