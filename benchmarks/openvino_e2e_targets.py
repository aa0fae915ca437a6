"""End to end over a Kaggle test.csv, interleaved rounds: pandas + Keras model.predict, pandas + LiteRT int8,
and our int8 model on the CPU provider, OpenVINO and auto (read + infer + write a submission each).

Usage::

    python benchmarks/openvino_e2e_targets.py TEST_CSV TEST_LABELS_CSV MODEL.keras MODEL.int8.tflite \\
        INT8.onnx FP32.onnx OUT.json [ROUNDS]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mnist_onnx._fileio import atomic_path
from mnist_onnx.bench import contenders as cs
from mnist_onnx.bench.openvino_contenders import openvino_end_to_end
from mnist_onnx.bench.runner import end_to_end
from mnist_onnx.runtime.kaggle_csv import PIXEL_COLUMNS
from mnist_onnx.runtime.predictor import predict_csv


def main() -> None:
    test, labels_csv, keras_path, tflite_int8, int8, fp32, out = sys.argv[1:8]
    rounds = int(sys.argv[8]) if len(sys.argv) > 8 else 2
    import keras

    model = keras.models.load_model(keras_path)

    def pandas_keras(csv: Path, dest: Path) -> None:
        pixels = pd.read_csv(csv)[list(PIXEL_COLUMNS)].to_numpy(np.float32) / np.float32(255.0)
        predicted = model.predict(pixels.reshape(-1, 28, 28, 1), batch_size=512, verbose=0).argmax(axis=1)
        with atomic_path(dest, suffix=".csv") as tmp:
            pd.DataFrame({"ImageId": np.arange(1, len(predicted) + 1), "Label": predicted}).to_csv(tmp, index=False)

    def ours_cpu(csv: Path, dest: Path) -> Any:
        return predict_csv(csv, int8, output=dest, providers="cpu")

    runs = {
        "ours-int8-cpu": ours_cpu,
        **openvino_end_to_end(fp32, int8, cs.litert(tflite_int8, "int8").predict, None),
        "pandas+keras-predict": pandas_keras,
    }
    labels = pd.read_csv(labels_csv)["Label"].to_numpy()
    results = end_to_end(Path(test), runs, repeats=rounds, labels=labels)
    for name, cell in results.items():
        print(f"{name:24s} median {cell['median_s']:.2f} s, best {cell['best_s']:.2f} s, accuracy {cell['accuracy']}")
    Path(out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
