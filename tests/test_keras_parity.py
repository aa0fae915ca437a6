"""The runtime against Keras on real digits: a model trained and exported during the run (needs TensorFlow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _models import NEEDS_EXPORT

from mnist_onnx.runtime.predictor import DigitClassifier

# Keras (TensorFlow with oneDNN) and onnxruntime (MLAS) sum the convolutions in
# different orders, which moves float32 probabilities by a few units in the last
# place (about 1e-7 observed).  1e-5 leaves room for that and still fails on any
# real difference: a wrong pixel scale or layout changes probabilities by >1e-2.
PROBABILITY_ATOL = 1e-5


@pytest.fixture(scope="module")
def tiny_classifier(tiny_onnx_model_path: Path) -> DigitClassifier:
    """The tiny trained Keras model exported by `mnist-onnx export` (NCHW, full metadata)."""
    return DigitClassifier(tiny_onnx_model_path, providers="cpu")


@pytest.fixture(scope="module")
def keras_probabilities(tiny_keras_model_path: Path, holdout) -> np.ndarray:
    import keras

    model = keras.models.load_model(tiny_keras_model_path)
    x = holdout.images.astype(np.float32) / np.float32(255.0)
    return np.asarray(model.predict(x, batch_size=256, verbose=0))


@pytest.mark.parametrize("batch_size", [7, 256])
def test_matches_keras_on_real_digits(tiny_classifier, holdout, keras_probabilities, batch_size):
    probabilities = tiny_classifier.predict_proba(holdout.images, batch_size=batch_size)
    assert probabilities.dtype == np.float32 and probabilities.shape == keras_probabilities.shape
    np.testing.assert_allclose(
        probabilities,
        keras_probabilities,
        rtol=0,
        atol=PROBABILITY_ATOL,
        err_msg=f"onnxruntime vs Keras probabilities at batch size {batch_size}",
    )
    np.testing.assert_array_equal(
        tiny_classifier.predict(holdout.images, batch_size=batch_size), keras_probabilities.argmax(axis=1)
    )


# Keras' own tf2onnx shim probes `np.object`, which numpy 2.4 warns about.
@pytest.mark.filterwarnings("ignore:In the future `np.object`:FutureWarning")
def test_accepts_keras_own_onnx_export(tiny_keras_model_path, holdout, keras_probabilities, tmp_path):
    keras = pytest.importorskip("keras")
    pytest.importorskip("tf2onnx", reason=NEEDS_EXPORT + " (Keras' ONNX export uses tf2onnx)")
    model = keras.models.load_model(tiny_keras_model_path)
    model(holdout.images[:1].astype(np.float32))  # Keras refuses to export a model that was never called
    path = tmp_path / "keras-export.onnx"
    model.export(str(path), format="onnx", verbose=False)
    clf = DigitClassifier(path, providers="cpu")
    # What Keras 3.15 writes on this stack: NHWC input named after the Input layer, no metadata.
    assert clf.contract.layout == "NHWC" and clf.contract.output_kind == "probabilities"
    for batch_size in (7, 256):
        np.testing.assert_allclose(
            clf.predict_proba(holdout.images, batch_size=batch_size), keras_probabilities, rtol=0, atol=PROBABILITY_ATOL
        )
