"""The tutorial CNN, exactly as the Kaggle Digit Recognizer kernel builds it."""

from __future__ import annotations

from typing import Any

from .._extras import require

__all__ = ["build_model", "INPUT_SHAPE", "NUM_CLASSES"]

INPUT_SHAPE = (28, 28, 1)
NUM_CLASSES = 10


def build_model() -> Any:
    """Build the tutorial's Keras CNN (uncompiled).

    Conv2D(32, 5x5, same, relu) -> Conv2D(64, 5x5, same, relu) -> MaxPooling2D(2x2)
    -> Dropout(0.25) -> Flatten -> Dense(128, relu) -> Dropout(0.5) -> Dense(10, softmax).

    The input is 28x28x1 float32 already scaled to [0, 1] (pixel / 255); the
    scaling stays outside the network, as in the tutorial, and is recorded in
    the exported ONNX model's metadata.

    Returns:
        A ``keras.Sequential`` model named ``digit_cnn``.
    """
    keras = require("keras", "train")
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(shape=INPUT_SHAPE, name="image"),
            layers.Conv2D(32, (5, 5), padding="same", activation="relu", name="conv1"),
            layers.Conv2D(64, (5, 5), padding="same", activation="relu", name="conv2"),
            layers.MaxPooling2D(pool_size=(2, 2), name="pool"),
            layers.Dropout(0.25, name="dropout1"),
            layers.Flatten(name="flatten"),
            layers.Dense(128, activation="relu", name="dense1"),
            layers.Dropout(0.5, name="dropout2"),
            layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities"),
        ],
        name="digit_cnn",
    )
