"""Build the small ONNX classifiers the runtime tests use, and write them to a folder.

Each is a real, valid ONNX model (Flatten -> MatMul [-> Softmax]) whose weights
are a small random block tiled to the input size, so a file is well under 1 KB.
They test how the runtime reads a model's signature and metadata (layouts,
logits, labels, fixed batch sizes, uint8 inputs, broken signatures), not
accuracy: accuracy is tested on the bundled models.

Needs the onnx package (the 'export' extra); the tests themselves only read
the committed files.  Usage::

    python tools/make_test_models.py tests/data/models
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

_TILE_ROWS = 16  # weight rows stored; tiled to the number of input features

LETTERS = {
    "mnist_onnx.input_layout": "NHWC",
    "mnist_onnx.pixel_scale": "0.5",  # an odd scale, to see that it is the one applied
    "mnist_onnx.class_labels": json.dumps(list("abcdefghij")),
    "mnist_onnx.output_kind": "logits",
    "mnist_onnx.precision": "fp32",
}

#: name -> keyword arguments of linear_model (plus "retype" for signatures that lie).
VARIANTS: dict[str, dict[str, Any]] = {
    "nhwc": {},
    "nhwc_seed1": {"seed": 1},
    "nchw": {"input_shape": ("N", 1, 28, 28)},
    "nchw_with_layout": {"input_shape": ("N", 1, 28, 28), "metadata": {"mnist_onnx.input_layout": "NCHW"}},
    "logits": {"softmax": False},
    "letters_logits": {"softmax": False, "metadata": LETTERS},
    "digit_strings": {"metadata": {"mnist_onnx.class_labels": json.dumps(list("0123456789"))}},
    "fixed_batch_4": {"input_shape": (4, 28, 28, 1)},
    "input_32x32": {"input_shape": ("N", 32, 32, 1)},
    "input_flat": {"input_shape": ("N", 784)},
    "two_outputs": {"extra_output": True},
    "two_inputs": {"extra_input": True},
    "twelve_classes": {"classes": 12},
    "layout_nwhc": {"metadata": {"mnist_onnx.input_layout": "NWHC"}},
    "layout_says_nchw": {"metadata": {"mnist_onnx.input_layout": "NCHW"}},
    "duplicate_labels": {"metadata": {"mnist_onnx.class_labels": "[1, 1]"}},
    # Signatures that lie about the graph behind them.
    "twelve_classes_symbolic": {"classes": 12, "retype": {"classes": "C"}},
    "float16_input_declared": {"retype": {"input_type": TensorProto.FLOAT16}},
    "int64_output_declared": {"retype": {"output_type": TensorProto.INT64}},
}


def linear_model(
    input_shape: tuple[Any, ...] = ("N", 28, 28, 1),
    *,
    classes: int = 10,
    softmax: bool = True,
    extra_output: bool = False,
    extra_input: bool = False,
    metadata: dict[str, str] | None = None,
    seed: int = 0,
) -> onnx.ModelProto:
    """A tiny real ONNX classifier: Flatten -> MatMul with tiled random weights [-> Softmax]."""
    features = int(np.prod(input_shape[1:]))
    block = np.random.default_rng(seed).normal(0, 0.05, (_TILE_ROWS, classes)).astype(np.float32)
    repeats = np.array([features // _TILE_ROWS, 1], dtype=np.int64)
    nodes = [
        helper.make_node("Tile", ["W_block", "repeats"], ["W"]),
        helper.make_node("Flatten", ["x"], ["flat"]),
        helper.make_node("MatMul", ["flat", "W"], ["scores"]),
        helper.make_node("Softmax" if softmax else "Identity", ["scores"], ["y"]),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [input_shape[0], classes])]
    if extra_output:
        outputs.append(helper.make_tensor_value_info("scores", TensorProto.FLOAT, [input_shape[0], classes]))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))]
    if extra_input:
        inputs.append(helper.make_tensor_value_info("unused", TensorProto.FLOAT, [1]))
    initializers = [numpy_helper.from_array(block, "W_block"), numpy_helper.from_array(repeats, "repeats")]
    graph = helper.make_graph(nodes, "linear", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model, full_check=True)
    return model


def retyped(
    model: onnx.ModelProto, *, input_type: int | None = None, output_type: int | None = None, classes: str | None = None
) -> onnx.ModelProto:
    """Change the declared input/output element types or the class dimension, not the graph."""
    if input_type is not None:
        model.graph.input[0].type.tensor_type.elem_type = input_type
    if output_type is not None:
        model.graph.output[0].type.tensor_type.elem_type = output_type
    if classes is not None:
        model.graph.output[0].type.tensor_type.shape.dim[1].dim_param = classes
    return model


def build(name: str) -> onnx.ModelProto:
    """The variant called ``name``; ``uint8_input`` wraps ``nchw_with_layout`` as the exporter does."""
    if name == "uint8_input":
        from mnist_onnx.export import graph

        model = build("nchw_with_layout")
        graph.take_uint8_input(model, 1 / 255)
        onnx.checker.check_model(model, full_check=True)
        return model
    options = dict(VARIANTS[name])
    retype = options.pop("retype", None)
    model = linear_model(**options)
    return retyped(model, **retype) if retype else model


def main() -> None:
    """Write every variant to ``FOLDER/<name>.onnx``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where to write the .onnx files")
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    for name in [*VARIANTS, "uint8_input"]:
        path = args.folder / f"{name}.onnx"
        path.write_bytes(build(name).SerializeToString())
        print(f"{path}: {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
