"""Export a trained Keras model to ONNX (needs the ``export`` extra)."""
