"""Measured defaults of the runtime, in a module the CLI can import without onnxruntime.

Figures from the 2-core development machine (AMD EPYC with AVX-512 and VNNI,
onnxruntime 1.32 CPU).  Session options (threads, spinning, execution mode,
optimization level) are measured in :mod:`mnist_onnx.runtime.session`.

Batch size on the CPU: ``predict_csv`` over the 28,000-row test.csv with the
bundled models, end to end (read + infer + write), the data-parallel path
(each worker parses and predicts blocks of 256 lines), 4 interleaved rounds
(int8) and 2 (fp32), 2026-11-27::

    batch   int8 best / median   fp32 best / median
        8   1.95 s / 2.05 s      5.45 s / 5.48 s
       16   1.85 s / 2.00 s      5.47 s / 5.49 s
       32   1.97 s / 2.06 s      5.46 s / 5.56 s
       64   2.12 s / 2.14 s      5.60 s / 5.61 s

and in another run 1.75 s at 16 against 1.95 s at 64 (int8).  Each worker's
single-threaded run keeps a small batch's activations in its core's cache, so
16 is the default.  (With the earlier reader thread and intra-op threads,
speed was flat from 32 to 256 and 64 was the default.)
"""

import os

#: Images per onnxruntime call on the CPU.
DEFAULT_BATCH_SIZE = 16
#: Images per onnxruntime call on CUDA.  Measured on one H100 (bundled models,
#: ``benchmarks/gpu_check.py``): fp32 46,030 img/s at batch 16, 216,794 at 256,
#: 255,183 at 1,024 and 125,374 at 8,192; int8 30,482 / 360,065 / 472,911 / 263,464.
DEFAULT_CUDA_BATCH_SIZE = 1024
#: Images per onnxruntime call on OpenVINO, which parallelizes one call over the
#: cores by itself.  Measured on a 2-core Xeon with AMX (bundled int8 model,
#: quiet): 22.0k images/s at 512 against 17.7k at 16; see benchmarks/openvino.md.
DEFAULT_OPENVINO_BATCH_SIZE = 512
#: Intra-op threads when ``threads=None``; 0 lets onnxruntime use one thread per physical core.
DEFAULT_THREADS = 0
#: Large inputs on the CPU are split into this many images per worker at least
#: before they are predicted by concurrent single-threaded runs (see
#: :class:`mnist_onnx.runtime.predictor.DigitClassifier`); smaller ones run as
#: one call with intra-op threads, which has the lower latency.
MIN_IMAGES_PER_WORKER = 4
#: Raw CSV lines a worker parses and predicts as one task in ``predict_csv``
#: (data-parallel path): small enough that the last tasks end together,
#: large enough that handing them out costs nothing measurable.
CSV_BLOCK_ROWS = 256
#: Blocks handed out ahead of the one being written, per worker.
BLOCKS_IN_FLIGHT_PER_WORKER = 4
#: Whether idle intra-op threads spin waiting for work (onnxruntime's default; fastest on free cores).
DEFAULT_SPINNING = True


def physical_cores() -> int:
    """Physical cores this process may run on (Linux topology), else the logical CPU count.

    >>> physical_cores() >= 1
    True
    """
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)
    cores = set()
    for cpu in allowed:
        topology = f"/sys/devices/system/cpu/cpu{cpu}/topology"
        try:
            with open(f"{topology}/physical_package_id") as package, open(f"{topology}/core_id") as core:
                cores.add((package.read().strip(), core.read().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))
