"""The whole benchmark: build every contender from one Keras model, measure, and write the report."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import __version__
from ..errors import MnistOnnxError
from ..runtime.kaggle_csv import read_kaggle_csv
from . import contenders as cs
from .machine import cpu_info, versions
from .report import targets, write_all
from .runner import FLOP_PER_IMAGE, BenchConfig, accuracy_of, cold_start, end_to_end, predictions_of, time_contenders

__all__ = ["run_benchmark"]


def _labels_for(test_csv: Path, labels_csv: Path | None) -> tuple[np.ndarray, np.ndarray]:
    batch = read_kaggle_csv(test_csv)
    if batch.labels is not None:
        return batch.images, batch.labels.astype(np.int64)
    if labels_csv is None:
        raise MnistOnnxError(f"{test_csv}: has no label column; pass the answers (ImageId,Label) to score accuracy")
    import pandas as pd

    answers = pd.read_csv(labels_csv)
    if list(answers.columns) != ["ImageId", "Label"] or len(answers) != len(batch):
        raise MnistOnnxError(f"{labels_csv}: expected ImageId,Label with {len(batch)} rows")
    return batch.images, answers["Label"].to_numpy(np.int64)


def run_benchmark(
    keras_model: str | os.PathLike[str],
    test_csv: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    calibration_csv: str | os.PathLike[str],
    test_labels_csv: str | os.PathLike[str] | None = None,
    onnx_model: str | os.PathLike[str] | None = None,
    int8_model: str | os.PathLike[str] | None = None,
    config: BenchConfig | None = None,
    threads: int | None = None,
    cold_start_repeats: int = 3,
    end_to_end_repeats: int = 3,
    gpu: bool | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Benchmark our runtime (fp32, int8) against Keras and LiteRT, all from ``keras_model``.

    Args:
        keras_model: The trained ``.keras`` model every contender comes from.
        test_csv: Rows to score (a Kaggle test.csv, or a train-format file with labels);
            also the file of the end-to-end run.
        out_dir: Where ``results.json``, ``results.md``, ``results.png`` and the converted models go.
        calibration_csv: Training rows for int8 calibration (ours and LiteRT alike).
        test_labels_csv: Answers for ``test_csv`` when it has no label column.
        onnx_model, int8_model: Reuse these ONNX models (they must come from ``keras_model``);
            exported and quantized afresh when omitted.
        config: Batch sizes, warm-up and rounds.
        threads: Threads for every contender (None: each runtime's default).
        gpu: Also run our runtime on CUDA (None: when a CUDA provider is available).
        progress: Status-line callback.

    Returns:
        The results dictionary that was written as JSON.
    """
    import keras

    from ..export import export_onnx, quantize_int8
    from ..runtime.predictor import predict_csv

    emit = progress or (lambda _m: None)
    config = config or BenchConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    models = out / "models"
    models.mkdir(exist_ok=True)
    test_csv, calibration_csv = Path(test_csv), Path(calibration_csv)
    images, labels = _labels_for(test_csv, Path(test_labels_csv) if test_labels_csv else None)

    if onnx_model is None:
        emit("exporting the Keras model to ONNX (with the parity gate)")
        onnx_model = models / "model.onnx"
        export_onnx(keras_model, onnx_model)
    if int8_model is None:
        emit("quantizing to int8 (with the accuracy gate)")
        int8_model = models / "model.int8.onnx"
        quantize_int8(onnx_model, int8_model, calibration=calibration_csv)
    emit("converting to LiteRT fp32 and int8 with TensorFlow's TFLite converter")
    calib = read_kaggle_csv(calibration_csv).images[:200]
    tflite = cs.convert_litert(keras_model, models, calib)

    model = keras.models.load_model(keras_model)
    contenders = [
        cs.ours(onnx_model, "fp32", threads=threads),
        cs.ours(int8_model, "int8", threads=threads),
        cs.keras_call(model),
        cs.keras_predict(model),
        cs.litert(tflite["fp32"], "fp32", threads=threads),
        cs.litert(tflite["int8"], "int8", threads=threads),
    ]
    if gpu is None:
        import onnxruntime as ort

        gpu = "CUDAExecutionProvider" in ort.get_available_providers()
    if gpu:
        contenders.append(cs.ours(onnx_model, "fp32", providers="cuda"))

    emit(f"accuracy of every contender on {len(images):,} rows")
    probs = {c.name: predictions_of(c, images) for c in contenders}
    accuracy = {name: accuracy_of(p, labels) for name, p in probs.items()}
    reference = probs["keras-predict"].argmax(axis=1)
    agreement = {name: float((p.argmax(axis=1) == reference).mean()) for name, p in probs.items()}

    emit(f"latency and throughput at batch sizes {list(config.batch_sizes)}, interleaved")
    timings = time_contenders(contenders, images, config, progress)

    emit("end to end: read + infer + write over the whole file")

    def ours_e2e(precision: str, path: Path) -> Callable[[Path, Path], Any]:
        return lambda csv, dest: predict_csv(csv, path, threads=threads, output=dest, providers="cpu")

    def pandas_keras(csv: Path, dest: Path) -> None:
        import pandas as pd

        frame = pd.read_csv(csv)
        pixels = frame[[c for c in frame.columns if c.startswith("pixel")]].to_numpy(np.float32) / 255.0
        predicted = model.predict(pixels.reshape(-1, 28, 28, 1), batch_size=512, verbose=0).argmax(axis=1)
        pd.DataFrame({"ImageId": np.arange(1, len(predicted) + 1), "Label": predicted}).to_csv(dest, index=False)

    e2e = end_to_end(test_csv, {
        "ours-fp32": ours_e2e("fp32", Path(onnx_model)),
        "ours-int8": ours_e2e("int8", Path(int8_model)),
        "pandas+keras-predict": pandas_keras,
    }, repeats=end_to_end_repeats)

    cold: dict[str, Any] = {}
    if cold_start_repeats:
        emit("cold start and peak memory, each in fresh processes")
        cold = {
            "ours": cold_start("ours", int8_model, repeats=cold_start_repeats),
            "keras": cold_start("keras", keras_model, repeats=cold_start_repeats),
            "litert": cold_start("litert", tflite["int8"], repeats=cold_start_repeats),
        }

    results: dict[str, Any] = {
        "mnist_onnx": __version__,
        "machine": {"cpu": cpu_info()},
        "versions": versions(),
        "model": {"keras": str(keras_model), "onnx": str(onnx_model), "int8": str(int8_model),
                  "litert": {k: str(v) for k, v in tflite.items()}},
        "config": {"batch_sizes": list(config.batch_sizes), "warmup": config.warmup, "rounds": config.rounds,
                   "threads": threads, "rows": int(len(images))},
        "contenders": {c.name: {"family": c.family, "precision": c.precision, **c.meta} for c in contenders},
        "flop_per_image": FLOP_PER_IMAGE,
        "accuracy": accuracy,
        "argmax_agreement_with_keras": agreement,
        "timings": {name: {str(b): cell for b, cell in cells.items()} for name, cells in timings.items()},
        "end_to_end_s": e2e,
        "end_to_end_rows": f"{test_csv.name} ({len(images):,} rows)",
        "cold_start": cold,
    }
    results["targets"] = targets(results)
    paths = write_all(results, out)
    emit(f"wrote {paths['json']}, {paths['markdown']}, {paths['chart']}")
    return results
