"""Where the runtime tests find their models: the bundled ones and small committed ONNX files.

The small files in ``data/models`` are built by ``tools/make_test_models.py``
(which needs the onnx package); the tests only read them, so they run on the
base install without TensorFlow, tf2onnx or onnx.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = Path(__file__).parent / "data" / "models"
BUNDLED = REPO / "mnist_onnx" / "runtime" / "bundled"
#: The bundled models (the real Kaggle CNN, fp32 and its int8 quantization).
FP32_MODEL = BUNDLED / "digit_cnn.onnx"
INT8_MODEL = BUNDLED / "digit_cnn.int8.onnx"

# What to install for tests that need more than the base install.
NEEDS_TRAIN = "needs the 'train' extra: pip install 'mnist-onnx[train]'"
NEEDS_EXPORT = "needs the 'export' extra: pip install 'mnist-onnx[export]'"
NEEDS_RAY = "needs the 'ray' extra: pip install 'mnist-onnx[ray]'"
NEEDS_TEST = "needs the 'test' extra: pip install 'mnist-onnx[test]'"


def small_model(name: str) -> bytes:
    """The bytes of ``data/models/<name>.onnx`` (a tiny Flatten -> MatMul classifier; see the tool)."""
    return (MODELS / f"{name}.onnx").read_bytes()


def _has_cuda() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


HAS_CUDA = _has_cuda()
