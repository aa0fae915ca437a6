"""Measured defaults of the runtime, in a module the CLI can import without onnxruntime.

Figures from the 2-core development machine (AMD EPYC, onnxruntime 1.32 CPU,
the tutorial CNN exported by tf2onnx, fp32), shared with other jobs while
measured, so each speed figure is the best of interleaved rounds.

Batch size (``python benchmarks/runtime_predict_csv.py speed MODEL.onnx --csv
FIRST_8192_ROWS_OF_test.csv --rounds 15 --only ...`` and ``... memory ...
--times 1 --batch-size N``)::

    batch   predict_csv, 8,192 rows (best of 15)   peak RSS
            (no overlapped reading)
       64   3.62 s                                  217 MiB
      256   3.70 s                                  346 MiB
     1024   3.48 s                                  799 MiB

The speeds are within this machine's noise of each other, while onnxruntime's
memory arena grows with the batch (the convolution activations of a 1024-image
batch alone are hundreds of MiB), so the default is 256.  Session options
(threads, spinning, execution mode, optimization level) are measured in
:mod:`mnist_onnx.runtime.session`.
"""

#: Images per onnxruntime call.
DEFAULT_BATCH_SIZE = 256
#: Intra-op threads when ``threads=None``; 0 lets onnxruntime use one thread per physical core.
DEFAULT_THREADS = 0
#: Whether idle intra-op threads spin waiting for work (onnxruntime's default; fastest on free cores).
DEFAULT_SPINNING = True
