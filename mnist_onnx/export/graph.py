"""Rewrites of the graph tf2onnx produces for the tutorial CNN, and metadata helpers.

tf2onnx converts the Keras network node by node, and two things it leaves
behind cost time without computing anything (``benchmarks/experiments/export_graph_cleanup.py``
measures them, figures in :mod:`mnist_onnx.export.convert`):

* ``Flatten`` in Keras flattens NHWC feature maps, so before the first Dense
  layer tf2onnx inserts a ``Transpose`` NCHW→NHWC of the 64×14×14 pooled maps
  (a real copy of 12,544 floats per image).  :func:`fold_flatten_transpose`
  permutes the rows of the Dense weight matrix instead, once, at export time:
  ``W'[c·H·W + h·W + w] = W[h·W·C + w·C + c]``.
* Keras' ``Flatten`` computes its target shape at run time
  (``Shape → Gather → Cast → Slice → Concat → Cast → Reshape``); ONNX's
  ``Flatten(axis=1)`` says the same with one node.

and, for a one-channel image, NHWC and NCHW differ only by a reshape, so the
model takes N×1×28×28 input directly (:func:`drop_identity_reshape` removes the
``Reshape`` to the shape the input already has).

Every rewrite checks the exact pattern it expects and otherwise leaves the
graph alone; the parity gate checks the result either way.  Only the onnx and
numpy packages are used.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

__all__ = [
    "fold_flatten_transpose",
    "drop_identity_reshape",
    "remove_dead_nodes",
    "first_conv",
    "take_uint8_input",
    "rename_value",
    "set_batch_dim_name",
    "set_metadata",
    "get_metadata",
    "op_counts",
]


def _onnx() -> Any:
    from .._extras import require

    return require("onnx", "export")


def _initializers(graph: Any) -> dict[str, Any]:
    return {init.name: init for init in graph.initializer}


def _consumers(graph: Any, value: str) -> list[Any]:
    return [node for node in graph.node if value in node.input]


def _is_graph_output(graph: Any, value: str) -> bool:
    return any(out.name == value for out in graph.output)


def _static_shape(model: Any, value: str) -> list[int | None] | None:
    onnx = _onnx()
    inferred = onnx.shape_inference.infer_shapes(model)
    for info in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        if info.name == value:
            dims = info.type.tensor_type.shape.dim
            return [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return None


def fold_flatten_transpose(model: Any) -> bool:
    """Fold ``Transpose(perm=[0,2,3,1]) → Reshape/Flatten → MatMul(W)`` into ``Flatten → MatMul(W')``.

    Args:
        model: An ``onnx.ModelProto``, changed in place.

    Returns:
        Whether the pattern was found and rewritten.
    """
    onnx = _onnx()
    graph = model.graph
    inits = _initializers(graph)
    for transpose in list(graph.node):
        if transpose.op_type != "Transpose":
            continue
        perm = [list(a.ints) for a in transpose.attribute if a.name == "perm"]
        if perm != [[0, 2, 3, 1]]:
            continue
        nchw = transpose.input[0]
        users = _consumers(graph, transpose.output[0])
        if len(users) != 1 or users[0].op_type not in ("Reshape", "Flatten"):
            continue
        flatten = users[0]
        if flatten.op_type == "Flatten" and any(a.name == "axis" and a.i != 1 for a in flatten.attribute):
            continue
        matmuls = _consumers(graph, flatten.output[0])
        if len(matmuls) != 1 or matmuls[0].op_type != "MatMul" or matmuls[0].input[0] != flatten.output[0]:
            continue
        matmul = matmuls[0]
        weight_name = matmul.input[1]
        if weight_name not in inits or len(_consumers(graph, weight_name)) != 1:
            continue
        shape = _static_shape(model, nchw)
        if shape is None or len(shape) != 4:
            continue
        _, channels, height, width = shape
        if channels is None or height is None or width is None:
            continue
        weight = onnx.numpy_helper.to_array(inits[weight_name])
        if weight.ndim != 2 or weight.shape[0] != channels * height * width:
            continue
        # Row i of the new matrix (NCHW order c, h, w) is row j of the old one (NHWC order h, w, c).
        nhwc_row = np.arange(channels * height * width).reshape(height, width, channels).transpose(2, 0, 1).ravel()
        inits[weight_name].CopyFrom(onnx.numpy_helper.from_array(weight[nhwc_row], weight_name))
        flat_name = flatten.output[0]
        new_flatten = onnx.helper.make_node("Flatten", [nchw], [flat_name], name=flatten.name or "flatten", axis=1)
        index = list(graph.node).index(flatten)
        graph.node.remove(flatten)
        graph.node.insert(index, new_flatten)
        if not _consumers(graph, transpose.output[0]) and not _is_graph_output(graph, transpose.output[0]):
            graph.node.remove(transpose)
        remove_dead_nodes(model)
        return True
    return False


def drop_identity_reshape(model: Any) -> bool:
    """Remove a ``Reshape`` of the graph input to the static shape that input already has.

    With ``inputs_as_nchw`` tf2onnx gives a one-channel model an N×1×28×28 input
    and still reshapes it to ``[-1, 1, 28, 28]``.

    Returns:
        Whether such a node was removed.
    """
    onnx = _onnx()
    graph = model.graph
    inits = _initializers(graph)
    for graph_input in graph.input:
        dims = graph_input.type.tensor_type.shape.dim
        static = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        if not static or any(d is None for d in static[1:]):
            continue
        for node in _consumers(graph, graph_input.name):
            if node.op_type != "Reshape" or node.input[0] != graph_input.name or node.input[1] not in inits:
                continue
            target = onnx.numpy_helper.to_array(inits[node.input[1]]).tolist()
            if len(target) != len(static) or target[1:] != static[1:] or target[0] not in (-1, 0):
                continue
            if _is_graph_output(graph, node.output[0]):
                continue
            for user in _consumers(graph, node.output[0]):
                for k, name in enumerate(user.input):
                    if name == node.output[0]:
                        user.input[k] = graph_input.name
            graph.node.remove(node)
            remove_dead_nodes(model)
            return True
    return False


def remove_dead_nodes(model: Any) -> None:
    """Remove nodes whose outputs nothing uses, then unused initializers."""
    graph = model.graph
    changed = True
    while changed:
        changed = False
        used = {name for node in graph.node for name in node.input} | {out.name for out in graph.output}
        for node in list(graph.node):
            if not any(name in used for name in node.output if name):
                graph.node.remove(node)
                changed = True
    used = {name for node in graph.node for name in node.input}
    for init in list(graph.initializer):
        if init.name not in used:
            graph.initializer.remove(init)


def first_conv(model: Any) -> Any | None:
    """The first ``Conv`` node reached from the graph input (through any layout ops), or None."""
    graph = model.graph
    frontier = [graph.input[0].name] if graph.input else []
    seen: set[str] = set()
    while frontier:
        value = frontier.pop(0)
        for node in _consumers(graph, value):
            if node.op_type == "Conv":
                return node
            if node.name not in seen:
                seen.add(node.name)
                frontier.extend(node.output)
    return None


def take_uint8_input(model: Any, pixel_scale: float) -> None:
    """Make the model take raw uint8 pixels: input ``x`` becomes ``Cast(x, float) * pixel_scale``.

    The float tensor the rest of the graph sees is ``float32(pixel) * float32(pixel_scale)``,
    so the caller no longer converts pixels to float.  ``Cast`` and ``Mul``, not
    ``DequantizeLinear``, which computes the same values: measured on the bundled
    int8 model (data-parallel path, test.csv), DequantizeLinear in front of a
    float convolution made inference 6% slower.
    """
    onnx = _onnx()
    graph = model.graph
    graph_input = graph.input[0]
    if graph_input.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise ValueError(f"expected a float32 input, got elem_type {graph_input.type.tensor_type.elem_type}")
    pixels = graph_input.name
    as_float, scaled, scale = pixels + "_as_float", pixels + "_scaled", pixels + "_pixel_scale"
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == pixels:
                node.input[k] = scaled
    graph.initializer.append(onnx.numpy_helper.from_array(np.array(pixel_scale, dtype=np.float32), scale))
    graph.node.insert(
        0, onnx.helper.make_node("Cast", [pixels], [as_float], to=onnx.TensorProto.FLOAT, name=pixels + "_to_float")
    )
    graph.node.insert(1, onnx.helper.make_node("Mul", [as_float, scale], [scaled], name=pixels + "_times_scale"))
    graph_input.type.tensor_type.elem_type = onnx.TensorProto.UINT8


def rename_value(model: Any, old: str, new: str) -> None:
    """Rename a value (a graph input or output) everywhere it appears."""
    graph = model.graph
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == old:
                node.input[k] = new
        for k, name in enumerate(node.output):
            if name == old:
                node.output[k] = new
    for info in [*graph.input, *graph.output, *graph.value_info]:
        if info.name == old:
            info.name = new


def set_batch_dim_name(model: Any, name: str = "N") -> None:
    """Give the dynamic first dimension of every graph input and output one symbolic name."""
    for info in [*model.graph.input, *model.graph.output]:
        dims = info.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = name


def set_metadata(model: Any, entries: dict[str, str]) -> None:
    """Set ``metadata_props`` entries, replacing existing ones with the same key."""
    props = {p.key: p.value for p in model.metadata_props}
    props.update(entries)
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def get_metadata(model: Any) -> dict[str, str]:
    """Return ``metadata_props`` as a dict."""
    return {p.key: p.value for p in model.metadata_props}


def op_counts(model: Any) -> dict[str, int]:
    """How many nodes of each op type the graph has (for reports)."""
    return dict(sorted(Counter(node.op_type for node in model.graph.node).items()))
