"""The whole benchmark: build every contender from one Keras model, measure, and write the report."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from .._extras import require
from .._fileio import atomic_path, sha256_file
from ..data import read_answers
from ..errors import MnistOnnxError
from ..runtime.kaggle_csv import PIXEL_COLUMNS, read_kaggle_csv
from . import contenders as cs
from .machine import cpu_info, gpu_info, versions
from .openvino_contenders import bf16_features, openvino_contenders, openvino_end_to_end, openvino_targets
from .report import targets, write_all
from .runner import FLOP_PER_IMAGE, BenchConfig, accuracy_of, cold_start, end_to_end, predictions_of, time_contenders

__all__ = ["run_benchmark", "KERAS_E2E_BATCH_SIZE"]

#: Batch size of ``model.predict`` in the pandas + Keras end-to-end run.
KERAS_E2E_BATCH_SIZE = 512


def _labelled_rows(test_csv: Path, labels_csv: Path | None) -> tuple[np.ndarray, np.ndarray]:
    batch = read_kaggle_csv(test_csv)
    if batch.labels is not None:
        return batch.images, batch.labels.astype(np.int64)
    if labels_csv is None:
        raise MnistOnnxError(f"{test_csv}: has no label column; pass its answers (ImageId,Label) to score accuracy")
    return batch.images, read_answers(labels_csv, len(batch), of=test_csv)


def _write_test_rows(images: np.ndarray, path: Path) -> None:
    """The first rows of the test file as a Kaggle test.csv of their own (for the end-to-end run)."""
    import pandas as pd

    frame = pd.DataFrame(images.reshape(len(images), 784), columns=list(PIXEL_COLUMNS))
    with atomic_path(path, suffix=".csv") as tmp:
        frame.to_csv(tmp, index=False)


def _check_source(contender: cs.Contender, keras_model: Path, keras_sha256: str) -> None:
    recorded = contender.meta.get("source_sha256")
    if recorded is not None and recorded != keras_sha256:
        raise MnistOnnxError(
            f"the {contender.precision} ONNX model was exported from another Keras model than "
            f"{keras_model} (its metadata records sha256 {recorded[:12]}..., the file has "
            f"{keras_sha256[:12]}...); every contender must come from the same model"
        )


def _configure_tensorflow(tf: Any, threads: int | None, notes: list[str]) -> str:
    """Keras on the CPU (the GPU is our runtime's alone) with ``threads``; returns the thread note."""
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TensorFlow refuses once its runtime is initialized
        if tf.config.get_visible_devices("GPU"):
            notes.append("Keras could see a GPU (TensorFlow was initialized before the benchmark started).")
    if threads is None:
        return "TensorFlow's default (one per logical core)"
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        return "TensorFlow's default (it was already initialized in this process, so --threads could not apply)"
    return f"{threads} intra-op"


@dataclass
class _Inputs:
    """The checked inputs of one benchmark run: paths, the labelled rows and the output folders."""

    keras_path: Path
    keras_sha256: str
    test_path: Path  # the file the end-to-end run reads: test_csv, or a copy of its first rows
    calibration_path: Path
    images: np.ndarray  # uint8 N×28×28×1
    labels: np.ndarray  # int64 N
    out: Path
    models: Path


@dataclass
class _Lineup:
    """Every contender, built from one Keras model, and the files they were built from."""

    contenders: list[cs.Contender]
    keras_model: Any
    onnx_model: Path
    int8_model: Path
    tflite: dict[str, Path]
    litert_threads: int


def _read_inputs(
    keras_model: str | os.PathLike[str],
    test_csv: str | os.PathLike[str],
    test_labels_csv: str | os.PathLike[str] | None,
    calibration_csv: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    rows: int | None,
) -> _Inputs:
    keras_path, test_path = Path(keras_model), Path(test_csv)
    out = Path(out_dir)
    models = out / "models"
    models.mkdir(parents=True, exist_ok=True)
    images, labels = _labelled_rows(test_path, Path(test_labels_csv) if test_labels_csv else None)
    if rows is not None and rows < len(images):
        images, labels = images[:rows], labels[:rows]
        test_path = out / "test_rows.csv"
        _write_test_rows(images, test_path)
    return _Inputs(keras_path, sha256_file(keras_path), test_path, Path(calibration_csv), images, labels, out, models)


def _our_models(
    inputs: _Inputs,
    onnx_model: str | os.PathLike[str] | None,
    int8_model: str | os.PathLike[str] | None,
    calibration_rows: int,
    emit: Callable[[str], None],
) -> tuple[Path, Path]:
    """The fp32 and int8 ONNX models: those given, else exported and quantized with their gates."""
    from ..export import export_onnx, quantize_int8

    if onnx_model is None:
        emit("exporting the Keras model to ONNX (with the parity gate)")
        onnx_model = export_onnx(inputs.keras_path, inputs.models / "model.onnx", progress=emit).onnx_path
    if int8_model is None:
        emit("quantizing to int8 (with the accuracy gate)")
        int8_model = quantize_int8(
            onnx_model,
            inputs.models / "model.int8.onnx",
            calibration_csv=inputs.calibration_path,
            calibration_rows=calibration_rows,
            measure_speed=False,
            progress=emit,
        ).onnx_path
    return Path(onnx_model), Path(int8_model)


def _gpu_contender(
    onnx_model: Path, threads: int | None, gpu: bool | None, has_cuda: bool, notes: list[str]
) -> cs.Contender | None:
    """Our fp32 runtime on CUDA, or None with a note saying why not (an error when ``gpu`` is True)."""
    from ..runtime.session import ProviderFallbackWarning

    if gpu is False:
        notes.append("GPU figures skipped (--no-gpu).")
        return None
    if not has_cuda:
        notes.append(
            "GPU figures skipped: this onnxruntime offers no CUDAExecutionProvider "
            "(they need onnxruntime-gpu and a visible GPU)."
        )
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("error", ProviderFallbackWarning)
        try:
            return cs.ours(onnx_model, "fp32", threads=threads, providers="cuda")
        except ProviderFallbackWarning as exc:
            if gpu:
                raise MnistOnnxError(f"CUDA did not start: {exc}") from None
            notes.append(f"GPU figures skipped: {exc}")
            return None


def _build_lineup(
    inputs: _Inputs,
    keras: Any,
    onnx_model: str | os.PathLike[str] | None,
    int8_model: str | os.PathLike[str] | None,
    calibration_rows: int,
    threads: int | None,
    gpu: bool | None,
    has_cuda: bool,
    notes: list[str],
    emit: Callable[[str], None],
) -> _Lineup:
    from ..export.quantize import read_calibration_images

    onnx_path, int8_path = _our_models(inputs, onnx_model, int8_model, calibration_rows, emit)
    ours = [cs.ours(onnx_path, "fp32", threads=threads), cs.ours(int8_path, "int8", threads=threads)]
    for contender in ours:
        _check_source(contender, inputs.keras_path, inputs.keras_sha256)

    emit("converting to LiteRT fp32 and int8 with TensorFlow's TFLite converter")
    calibration = read_calibration_images(inputs.calibration_path, calibration_rows)
    tflite = cs.convert_litert(inputs.keras_path, inputs.models, calibration)
    litert_threads = threads or cs.default_threads()
    model = keras.models.load_model(inputs.keras_path)
    contenders = [
        *ours,
        cs.keras_call(model),
        cs.keras_predict(model),
        cs.litert(tflite["fp32"], "fp32", threads=litert_threads),
        cs.litert(tflite["int8"], "int8", threads=litert_threads),
    ]
    contenders += openvino_contenders(onnx_path, int8_path, threads, notes)
    on_gpu = _gpu_contender(onnx_path, threads, gpu, has_cuda, notes)
    if on_gpu is not None:
        contenders.append(on_gpu)
    return _Lineup(contenders, model, onnx_path, int8_path, tflite, litert_threads)


def _accuracy(lineup: _Lineup, inputs: _Inputs) -> tuple[dict[str, float], dict[str, float]]:
    """Each contender's accuracy, and its argmax agreement with Keras ``model.predict``."""
    probs = {c.name: predictions_of(c, inputs.images) for c in lineup.contenders}
    accuracy = {name: accuracy_of(p, inputs.labels) for name, p in probs.items()}
    reference = probs["keras-predict"].argmax(axis=1)
    agreement = {name: float((p.argmax(axis=1) == reference).mean()) for name, p in probs.items()}
    return accuracy, agreement


def _end_to_end(lineup: _Lineup, inputs: _Inputs, threads: int | None, repeats: int) -> dict[str, Any]:
    """Read + infer + write over the test file: ours (fp32, int8) against pandas + Keras ``model.predict``."""
    from ..runtime.predictor import predict_csv

    def ours_e2e(path: Path) -> Callable[[Path, Path], Any]:
        return lambda csv, dest: predict_csv(csv, path, threads=threads, output=dest, providers="cpu")

    def pandas_keras(csv: Path, dest: Path) -> None:
        import pandas as pd

        frame = pd.read_csv(csv)
        pixels = frame[list(PIXEL_COLUMNS)].to_numpy(np.float32) / np.float32(255.0)
        predicted = lineup.keras_model.predict(
            pixels.reshape(-1, 28, 28, 1), batch_size=KERAS_E2E_BATCH_SIZE, verbose=0
        ).argmax(axis=1)
        submission = pd.DataFrame({"ImageId": np.arange(1, len(predicted) + 1), "Label": predicted})
        with atomic_path(dest, suffix=".csv") as tmp:
            submission.to_csv(tmp, index=False)

    return end_to_end(
        inputs.test_path,
        {
            "ours-fp32": ours_e2e(lineup.onnx_model),
            "ours-int8": ours_e2e(lineup.int8_model),
            **openvino_end_to_end(
                lineup.onnx_model,
                lineup.int8_model,
                next(c for c in lineup.contenders if c.name == "litert-int8").predict,
                threads,
            ),
            "pandas+keras-predict": pandas_keras,
        },
        repeats=repeats,
        labels=inputs.labels,
    )


def _cold_starts(lineup: _Lineup, inputs: _Inputs, threads: int | None, repeats: int) -> dict[str, Any]:
    """Cold start and peak memory of every CPU contender's runtime, each in fresh processes."""
    runs = (
        ("ours-fp32", "ours", lineup.onnx_model, threads),
        ("ours-int8", "ours", lineup.int8_model, threads),
        ("keras", "keras", inputs.keras_path, threads),
        ("litert-fp32", "litert", lineup.tflite["fp32"], lineup.litert_threads),
        ("litert-int8", "litert", lineup.tflite["int8"], lineup.litert_threads),
    )
    return {name: cold_start(kind, path, threads=n, repeats=repeats) for name, kind, path, n in runs}


def _config_record(
    config: BenchConfig,
    inputs: _Inputs,
    lineup: _Lineup,
    threads: int | None,
    tf_threads: str,
    calibration_rows: int,
    end_to_end_repeats: int,
    cold_start_repeats: int,
) -> dict[str, Any]:
    from ..runtime.defaults import DEFAULT_BATCH_SIZE

    rounds_note = (
        f"{config.warmup} warm-up calls, then at least {config.rounds} rounds in which every contender, "
        f"in a shuffled order, runs a block of at least {config.block_calls} timed calls "
        f"({config.block_seconds:g} s) after a {config.settle_seconds:g} s pause and one untimed call"
    )
    if config.min_seconds:
        rounds_note += f" and {config.min_seconds:g} s per batch size"
    return {
        "batch_sizes": list(config.batch_sizes),
        "warmup": config.warmup,
        "rounds": config.rounds,
        "min_seconds": config.min_seconds,
        "block_calls": config.block_calls,
        "block_seconds": config.block_seconds,
        "settle_seconds": config.settle_seconds,
        "rounds_note": rounds_note,
        "threads": threads,
        "threads_note": (
            f"ours {threads or 'onnxruntime default (one per physical core)'}, "
            f"LiteRT {lineup.litert_threads}, Keras {tf_threads}"
        ),
        "rows": int(len(inputs.images)),
        "calibration_csv": str(inputs.calibration_path),
        "calibration_rows": calibration_rows,
        "end_to_end_repeats": end_to_end_repeats,
        "cold_start_repeats": cold_start_repeats,
        "keras_e2e_batch_size": KERAS_E2E_BATCH_SIZE,
        "ours_e2e_batch_size": DEFAULT_BATCH_SIZE,
    }


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
    rows: int | None = None,
    calibration_rows: int = 1000,
    threads: int | None = None,
    cold_start_repeats: int = 3,
    end_to_end_repeats: int = 3,
    gpu: bool | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Benchmark our runtime (fp32, int8) against Keras and LiteRT, all from ``keras_model``.

    Args:
        keras_model: The trained ``.keras`` model every contender comes from.
        test_csv: Held-out rows: a Kaggle test.csv (with ``test_labels_csv``) or a
            train-format file with labels.  Accuracy is scored on them, timing
            uses their first images, and the end-to-end run reads the file.
        out_dir: Where ``results.json``, ``results.md``, ``results.png`` and the
            converted models (``models/``) go.
        calibration_csv: Training rows (Kaggle train.csv) whose first
            ``calibration_rows`` calibrate both int8 models, ours and LiteRT's.
        test_labels_csv: Answers (``ImageId,Label``) for ``test_csv`` when it has no label column.
        onnx_model, int8_model: Reuse these models (their metadata must name
            ``keras_model`` as their source); exported with the parity gate and
            quantized with the accuracy gate when omitted.
        config: Batch sizes, warm-up and rounds.
        rows: Use only the first ``rows`` rows of ``test_csv`` (the end-to-end run
            then reads a copy of just those rows).
        calibration_rows: Training images that calibrate the int8 models.
        threads: Threads for every contender (None: onnxruntime's and TensorFlow's
            defaults; LiteRT gets one per physical core, like onnxruntime).
            Keras always runs on the CPU: TensorFlow is shown no GPU.
        cold_start_repeats: Fresh processes per cold-start measurement (0 skips it).
        end_to_end_repeats: Interleaved rounds of the end-to-end run (0 skips it).
        gpu: Also run our fp32 runtime on CUDA: True requires it, None adds it
            when onnxruntime offers CUDA, False never.
        progress: Called with one status line per stage.

    Returns:
        The results dictionary that was written as ``results.json``.

    Raises:
        MissingExtraError: If TensorFlow, Keras or LiteRT is missing (the ``bench`` extra).
        GateError: If a fresh export or quantization fails its gate.
        MnistOnnxError: On unusable inputs, models of another Keras model, or
            ``gpu=True`` without CUDA.
    """
    tf = require("tensorflow", "bench")
    keras = require("keras", "bench")
    require("ai_edge_litert.interpreter", "bench")
    from ..runtime.session import CUDA

    emit = progress or (lambda _m: None)
    config = config or BenchConfig()
    notes: list[str] = []
    if not Path(keras_model).is_file():
        raise MnistOnnxError(f"{keras_model}: no such file, expected a trained .keras model")
    gpu_facts = gpu_info()
    has_cuda = CUDA in gpu_facts["onnxruntime_providers"]
    if gpu and not has_cuda:
        raise MnistOnnxError(
            "GPU figures need onnxruntime-gpu with a visible GPU (pip install 'mnist-onnx[gpu]'); "
            f"this onnxruntime offers {', '.join(gpu_facts['onnxruntime_providers'])}"
        )
    tf_threads = _configure_tensorflow(tf, threads, notes)
    inputs = _read_inputs(keras_model, test_csv, test_labels_csv, calibration_csv, out_dir, rows)
    emit(f"{len(inputs.images):,} labelled held-out rows from {test_csv}")

    lineup = _build_lineup(inputs, keras, onnx_model, int8_model, calibration_rows, threads, gpu, has_cuda, notes, emit)

    emit(f"accuracy of every contender on {len(inputs.images):,} rows")
    accuracy, agreement = _accuracy(lineup, inputs)

    emit(
        f"latency and throughput at batch sizes {', '.join(map(str, config.batch_sizes))}, "
        f"{len(lineup.contenders)} contenders interleaved"
    )
    timings = time_contenders(lineup.contenders, inputs.images, config, progress)

    e2e: dict[str, Any] = {}
    if end_to_end_repeats:
        emit(f"end to end: read + infer + write over {inputs.test_path.name} ({len(inputs.images):,} rows)")
        e2e = _end_to_end(lineup, inputs, threads, end_to_end_repeats)
    cold: dict[str, Any] = {}
    if cold_start_repeats:
        emit("cold start and peak memory, each in fresh processes")
        cold = _cold_starts(lineup, inputs, threads, cold_start_repeats)

    results: dict[str, Any] = {
        "mnist_onnx": __version__,
        "machine": {"cpu": cpu_info(), "gpu": gpu_facts},
        "versions": versions(),
        "model": {
            "keras": str(inputs.keras_path),
            "keras_sha256": inputs.keras_sha256,
            "onnx": str(lineup.onnx_model),
            "int8": str(lineup.int8_model),
            "litert": {k: str(v) for k, v in lineup.tflite.items()},
        },
        "config": _config_record(
            config, inputs, lineup, threads, tf_threads, calibration_rows, end_to_end_repeats, cold_start_repeats
        ),
        "contenders": {c.name: {"family": c.family, "precision": c.precision, **c.meta} for c in lineup.contenders},
        "flop_per_image": FLOP_PER_IMAGE,
        "accuracy": accuracy,
        "argmax_agreement_with_keras": agreement,
        "timings": {name: {str(b): cell for b, cell in cells.items()} for name, cells in timings.items()},
        "end_to_end": e2e,
        "end_to_end_rows": f"{inputs.test_path.name} ({len(inputs.images):,} rows)",
        "cold_start": cold,
        "notes": notes,
    }
    results["machine"]["cpu"]["bf16_features"] = bf16_features()
    results["targets"] = targets(results) + openvino_targets(results)
    paths = write_all(results, inputs.out)
    emit(f"wrote {paths['json']}, {paths['markdown']}, {paths['chart']}")
    return results
