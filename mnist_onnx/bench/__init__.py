"""Benchmarks: our runtime against Keras and LiteRT on the same model and machine, in one run.

TensorFlow and LiteRT are benchmark-only dependencies (the ``bench`` extra);
nothing in the runtime imports them.  Entry points: ``mnist-onnx bench`` and
``benchmarks/run.py``.
"""
