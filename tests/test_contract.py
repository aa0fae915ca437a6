"""The model contract: layout, pixel scale, labels, output kind and batch size come from the model."""

from __future__ import annotations

import numpy as np
import pytest
from _models import FP32_MODEL, INT8_MODEL, small_model

from mnist_onnx.errors import ModelError
from mnist_onnx.runtime.kaggle_csv import PIXEL_COLUMNS
from mnist_onnx.runtime.predictor import DigitClassifier


def test_nchw_model_gives_the_same_answer_as_nhwc(holdout):
    nhwc = DigitClassifier(small_model("nhwc"), providers="cpu")
    nchw = DigitClassifier(small_model("nchw"), providers="cpu")
    assert (nhwc.contract.layout, nchw.contract.layout) == ("NHWC", "NCHW")
    np.testing.assert_array_equal(nchw.predict_proba(holdout.images), nhwc.predict_proba(holdout.images))


def test_logits_get_a_softmax(holdout):
    probabilities = DigitClassifier(small_model("nhwc"), providers="cpu")
    logits = DigitClassifier(small_model("logits"), providers="cpu")
    assert logits.contract.output_kind == "logits"
    result = logits.predict_proba(holdout.images)
    np.testing.assert_allclose(result.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(result, probabilities.predict_proba(holdout.images), rtol=0, atol=1e-6)


def test_metadata_drives_scale_labels_and_kind(holdout):
    # letters_logits: NHWC, pixel scale 0.5 (an odd scale, to see that it is the one applied),
    # labels "a".."j", output_kind logits, precision fp32 (tools/make_test_models.py).
    clf = DigitClassifier(small_model("letters_logits"), providers="cpu", precision="fp32")
    plain = DigitClassifier(small_model("nhwc"), providers="cpu")
    assert clf.contract.class_labels == tuple("abcdefghij") and clf.contract.pixel_scale == 0.5
    images = holdout.images[:20]
    expected = plain.session.run(None, {"x": images.astype(np.float32) * np.float32(0.5)})[0]
    np.testing.assert_allclose(clf.predict_proba(images), expected, rtol=0, atol=1e-6)
    assert list(clf.predict(images)) == [list("abcdefghij")[i] for i in expected.argmax(axis=1)]
    with pytest.raises(ModelError, match="expected precision int8, got fp32"):
        DigitClassifier(small_model("letters_logits"), providers="cpu", precision="int8")


def test_digit_string_labels_read_as_integers(holdout, holdout_sample):
    # `mnist-onnx export` writes the class labels as JSON strings "0".."9".
    clf = DigitClassifier(small_model("digit_strings"), providers="cpu")
    assert clf.class_labels == tuple(range(10))
    assert clf.predict(holdout.images[:5]).dtype == np.int64
    frame = clf.predict_csv(holdout_sample, proba=True)
    assert frame["Label"].dtype == np.int64 and "p9" in frame.columns
    assert frame.attrs["evaluation"].rows == len(holdout)


def test_fixed_batch_model_is_fed_in_its_own_batch_size(holdout):
    dynamic = DigitClassifier(small_model("nhwc"), providers="cpu")
    fixed = DigitClassifier(small_model("fixed_batch_4"), providers="cpu")
    assert fixed.contract.fixed_batch == 4
    np.testing.assert_array_equal(
        fixed.predict_proba(holdout.images[:11], batch_size=256), dynamic.predict_proba(holdout.images[:11])
    )


def test_uint8_input_model_gets_raw_pixels_and_rounded_floats(tmp_path):
    # A model that takes uint8 pixels and scales them itself (uint8_input: nchw_with_layout
    # wrapped by the exporter's take_uint8_input) gives the same answers as the float model
    # it wraps, from uint8 images and from float images alike.
    float_bytes = small_model("nchw_with_layout")
    a = DigitClassifier(float_bytes, providers="cpu")
    b = DigitClassifier(small_model("uint8_input"), providers="cpu")
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


def test_contract_without_output_kind_is_unknown_until_probed():
    from mnist_onnx.runtime.contract import probe_images, probed, read_contract
    from mnist_onnx.runtime.model_source import load_model
    from mnist_onnx.runtime.session import create_session

    source = load_model(small_model("logits"))
    session = create_session(source, providers="cpu")
    contract = read_contract(session, source)
    assert contract.output_kind == "unknown" and contract.layout == "NHWC" and contract.precision is None
    scores = session.run(None, {"x": probe_images().astype(np.float32) / 255})[0]
    known = probed(contract, scores, source.name)
    assert known.output_kind == "logits" and contract.output_kind == "unknown", "a new contract, not a changed one"
    with pytest.raises(ModelError, match=r"expected output shape \(2, 10\) for 2 images, got \(1, 10\)"):
        probed(contract, scores[:1], source.name)
    with pytest.raises(ModelError, match="expected float class scores, got int64"):
        probed(contract, scores.astype(np.int64), source.name)


def test_bundled_models_declare_their_contract():
    fp32 = DigitClassifier(FP32_MODEL, providers="cpu")
    int8 = DigitClassifier(INT8_MODEL, providers="cpu")
    contract = fp32.contract
    assert (contract.layout, contract.output_kind, contract.uint8_input) == ("NCHW", "probabilities", False)
    assert (int8.contract.precision, int8.contract.uint8_input) == ("int8", True)
    assert fp32.class_labels == int8.class_labels == tuple(range(10))
