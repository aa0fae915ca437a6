"""Benchmarks: our runtime against Keras and LiteRT on the same model and machine, in one run.

TensorFlow and LiteRT are benchmark-only dependencies (the ``bench`` extra);
nothing in the runtime imports them, and this package loads them only when a
benchmark runs.  Entry points: ``mnist-onnx bench`` (:mod:`.cli`),
:func:`mnist_onnx.bench.suite.run_benchmark`, and ``benchmarks/bench_all.py``.
"""
