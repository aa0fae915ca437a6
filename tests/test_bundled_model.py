"""The models bundled in mnist_onnx/runtime/bundled: intact, self-describing, and as accurate as their card says.

onnxruntime and numpy only: these run in a runtime-only install too.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from mnist_onnx.runtime import metadata as meta
from mnist_onnx.runtime.kaggle_csv import read_kaggle_csv

ort = pytest.importorskip("onnxruntime")

BUNDLED = Path(__file__).resolve().parents[1] / "mnist_onnx" / "runtime" / "bundled"
CARD = BUNDLED / "model_card.json"

pytestmark = pytest.mark.skipif(not CARD.is_file(), reason="no bundled model in this checkout")


@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads(CARD.read_text(encoding="utf-8"))


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_bundled_model_matches_its_card(card, precision, holdout_sample):
    entry = card["files"][precision]
    data = (BUNDLED / entry["path"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    assert len(data) == entry["bytes"]

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    info = meta.parse_metadata(session.get_modelmeta().custom_metadata_map)
    assert info.precision == precision
    assert (info.input_layout, info.output_kind, info.class_labels) == ("NCHW", "probabilities", tuple("0123456789"))

    sample = read_kaggle_csv(holdout_sample)
    x = sample.images.transpose(0, 3, 1, 2)
    # The int8 model takes raw uint8 pixels (QuantOptions.uint8_input); fp32 takes pixels × pixel_scale.
    expected_input = "tensor(uint8)" if precision == "int8" else "tensor(float)"
    assert session.get_inputs()[0].type == expected_input
    if precision == "fp32":
        x = x.astype(np.float32) * np.float32(info.pixel_scale)
    probs = session.run(None, {session.get_inputs()[0].name: x})[0]
    accuracy = float((probs.argmax(axis=1) == sample.labels).mean())
    assert card["sample_accuracy"]["rows"] == len(sample)
    assert accuracy == card["sample_accuracy"][precision]


def test_card_records_what_the_issue_asks_for(card):
    assert {
        "files",
        "data",
        "recipe",
        "command_lines",
        "validation_accuracy",
        "holdout_accuracy",
        "parity",
        "quantization",
        "versions",
    } <= card.keys()
    assert card["holdout_accuracy"]["rows"] == 28000
    assert card["parity"]["passed"] and card["quantization"]["passed"]
    page = (BUNDLED / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "Do not use it to score a Kaggle submission" in page and "mnist-onnx train" in page
