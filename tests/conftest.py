"""Shared fixtures: small committed samples of real MNIST digits, and tiny models trained on them."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[1]

# 1,000 rows of the real train.csv that `mnist-onnx data` builds (label + 784 pixels).
TRAIN_SAMPLE = DATA / "train_sample.csv.gz"
# 1,000 held-out rows (from test.csv, with their test_labels.csv answers), in train format.
# The same file ships inside the package as the embedded default of `mnist-onnx predict`.
HOLDOUT_SAMPLE = REPO / "mnist_onnx" / "runtime" / "bundled" / "sample.csv.gz"


@pytest.fixture(scope="session")
def train_sample() -> Path:
    return TRAIN_SAMPLE


@pytest.fixture(scope="session")
def holdout_sample() -> Path:
    return HOLDOUT_SAMPLE


@pytest.fixture(scope="session")
def tiny_training(tmp_path_factory: pytest.TempPathFactory):
    """The seed recipe, 1 epoch on the 1,000-row real sample: a real (weak) model in seconds."""
    pytest.importorskip("tensorflow", reason="needs the 'train' extra")
    from mnist_onnx.train import train

    out = tmp_path_factory.mktemp("tiny-train")
    return train(TRAIN_SAMPLE, out, recipe="seed", epochs=1, verbose=0)


@pytest.fixture(scope="session")
def tiny_keras_model_path(tiny_training) -> Path:
    return tiny_training.model_path
