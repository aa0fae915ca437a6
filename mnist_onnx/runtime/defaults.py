"""Measured defaults of the runtime, in a module the CLI can import without onnxruntime.

The figures behind each value are in ``mnist_onnx/runtime/session.py`` and
``benchmarks/``.
"""

#: Images per onnxruntime call.
DEFAULT_BATCH_SIZE = 256
#: Intra-op threads when ``threads=None``; 0 lets onnxruntime use one thread per physical core.
DEFAULT_THREADS = 0
#: Whether idle intra-op threads spin waiting for work.
DEFAULT_SPINNING = True
