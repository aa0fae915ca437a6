"""The onnxruntime-only runtime: no TensorFlow, tf2onnx or onnx imports here."""
