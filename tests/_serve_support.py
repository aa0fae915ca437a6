"""Helpers shared by the serve tests: real digits, request bodies, a classifier that waits to be told."""

from __future__ import annotations

import gzip
import io
import json
import threading
from pathlib import Path

import numpy as np

SAMPLE = Path(__file__).resolve().parents[1] / "mnist_onnx" / "runtime" / "bundled" / "sample.csv.gz"


def sample_digits(n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The bundled held-out sample: uint8 (n, 28, 28) images and their labels."""
    rows = np.loadtxt(
        io.StringIO(gzip.decompress(SAMPLE.read_bytes()).decode()),
        delimiter=",",
        skiprows=1,
        dtype=np.int64,
        max_rows=n,
        ndmin=2,
    )
    return rows[:, 1:].astype(np.uint8).reshape(-1, 28, 28), rows[:, 0]


def sample_csv_bytes(rows: int, *, labels: bool = False) -> bytes:
    """The first ``rows`` rows of the bundled sample as a Kaggle CSV (test.csv form unless ``labels``)."""
    lines = gzip.decompress(SAMPLE.read_bytes()).decode().splitlines()[: rows + 1]
    if not labels:
        lines = [line.split(",", 1)[1] for line in lines]
    return ("\n".join(lines) + "\n").encode()


def binary_infer_body(
    images: np.ndarray, *, datatype: str = "UINT8", outputs: list[dict] | None = None, **parameters: object
) -> tuple[bytes, dict[str, str]]:
    """A binary-tensor-data inference request for ``images`` and its headers."""
    data = np.ascontiguousarray(images).tobytes()
    request: dict = {
        "inputs": [
            {
                "name": "image",
                "datatype": datatype,
                "shape": list(images.shape),
                "parameters": {"binary_data_size": len(data)},
            }
        ]
    }
    if outputs is not None:
        request["outputs"] = outputs
    if parameters:
        request["parameters"] = parameters
    header = json.dumps(request).encode()
    return header + data, {"Inference-Header-Content-Length": str(len(header))}


def json_infer_body(images: np.ndarray, *, datatype: str = "UINT8", **extra: object) -> dict:
    """A JSON inference request for ``images``."""
    return {
        "inputs": [
            {"name": "image", "datatype": datatype, "shape": list(images.shape), "data": images.reshape(-1).tolist()}
        ],
        **extra,
    }


def read_binary_outputs(content: bytes, header_length: int) -> dict[str, np.ndarray]:
    """Decode a binary inference response into {output name: array}."""
    answer = json.loads(content[:header_length])
    offset, arrays = header_length, {}
    for out in answer["outputs"]:
        size = out["parameters"]["binary_data_size"]
        dtype = {"FP32": "<f4", "INT64": "<i8"}[out["datatype"]]
        arrays[out["name"]] = np.frombuffer(content[offset : offset + size], dtype=dtype).reshape(out["shape"])
        offset += size
    return arrays


def png_bytes(pixels: np.ndarray) -> bytes:
    """``pixels`` (uint8, 2-D) as a PNG file."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


class GatedClassifier:
    """A real classifier whose predictions, once ``gate_on()`` is called, wait until ``release()``.

    Records the number of images of every call made after ``gate_on()``, so a
    test can tell which requests were computed.
    """

    def __init__(self, real: object) -> None:
        self.real = real
        self.class_labels = real.class_labels  # type: ignore[attr-defined]
        self.calls: list[int] = []
        self.started = threading.Event()
        self._gate = threading.Event()
        self._gate.set()
        self._gated = False

    def gate_on(self) -> None:
        self._gate.clear()
        self._gated = True

    def release(self) -> None:
        self._gate.set()

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        if self._gated:
            self.calls.append(len(images))
            self.started.set()
            self._gate.wait(60)  # bounded: a broken test fails instead of hanging
        return self.real.predict_proba(images)  # type: ignore[attr-defined]
