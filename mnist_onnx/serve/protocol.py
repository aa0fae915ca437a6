"""The Open Inference Protocol (KServe v2) inference request and response, with Triton's binary tensor data.

Request JSON (``POST /v2/models/{name}/infer``)::

    {"id": "7", "parameters": {"binary_data_output": true, "timeout": 5000000},
     "inputs": [{"name": "image", "datatype": "UINT8", "shape": [2, 28, 28], "data": [0, 0, ...]}],
     "outputs": [{"name": "label", "parameters": {"binary_data": false}}]}

With Triton's binary tensor data extension the JSON above is followed by raw
little-endian tensor bytes: the ``Inference-Header-Content-Length`` header
gives the JSON's length and each binary input carries
``"parameters": {"binary_data_size": BYTES}`` instead of ``data``.  Outputs
asked for with ``"binary_data": true`` (or every output, with the request
parameter ``binary_data_output``) come back the same way.

Triton's classification extension: ``"parameters": {"classification": K}`` on
the ``probabilities`` output returns, instead of the scores, a BYTES tensor
[N, K] of the K highest classes, best first, each ``"score:index"`` (score
printed as C's ``%f``, as Triton does), with ``":label"`` appended when the
model's class labels are not the indices.

Sources: the KServe "Open Inference Protocol" REST specification, and Triton's
``binary_data.md`` and ``classification.md`` protocol extensions.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import MnistOnnxError

__all__ = [
    "BadRequest",
    "InferRequest",
    "parse_infer_request",
    "encode_infer_response",
    "INPUT_NAME",
    "OUTPUTS",
    "RequestedOutput",
    "error_body",
]

INPUT_NAME = "image"
#: Output name -> (datatype, numpy dtype).
OUTPUTS: dict[str, tuple[str, np.dtype[Any]]] = {
    "probabilities": ("FP32", np.dtype("<f4")),
    "label": ("INT64", np.dtype("<i8")),
}
_INPUT_DTYPES: dict[str, np.dtype[Any]] = {"UINT8": np.dtype("u1"), "FP32": np.dtype("<f4")}
_SHAPES = "[N,28,28], [N,784], [N,28,28,1] or [N,1,28,28]"


class BadRequest(MnistOnnxError):
    """A request the server cannot use (HTTP 400); the message is one line naming the field.

    Attributes:
        status: The HTTP status to answer with (400 unless a subclass says otherwise).
    """

    status = 400


@dataclass(frozen=True)
class RequestedOutput:
    """One output the client asked for.

    Attributes:
        name: ``"probabilities"`` or ``"label"``.
        binary: Whether it goes back as binary tensor data.
        classification: K of Triton's classification extension (top-K classes
            as BYTES strings), or 0 for the tensor itself.
    """

    name: str
    binary: bool
    classification: int = 0


@dataclass
class InferRequest:
    """A parsed inference request.

    Attributes:
        id: The request's ``id``, echoed in the response ("" when absent).
        images: (N, 28, 28) uint8, or float32 in [0, 1].
        outputs: The outputs to return, in order.
        timeout_s: The request's own ``timeout`` parameter in seconds, or None.
    """

    id: str
    images: np.ndarray
    outputs: list[RequestedOutput]
    timeout_s: float | None


def error_body(message: str) -> bytes:
    """The protocol's error form, ``{"error": "..."}``, as UTF-8 JSON."""
    return json.dumps({"error": message}).encode()


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


def _images_shape(shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise BadRequest(f"inputs[0].shape: expected a list of integers, got {json.dumps(shape)[:60]}")
    n = shape[0] if shape else 0
    if not (
        len(shape) == 3
        and shape[1:] == [28, 28]
        or len(shape) == 2
        and shape[1:] == [784]
        or len(shape) == 4
        and shape[1:] in ([28, 28, 1], [1, 28, 28])
    ):
        raise BadRequest(f"inputs[0].shape: expected {_SHAPES}, got {shape}")
    if n < 1:
        raise BadRequest(f"inputs[0].shape: expected at least one image, got {shape}")
    return tuple(shape)


def _json_tensor(data: Any, dtype: np.dtype, count: int) -> np.ndarray:
    if not isinstance(data, list):
        raise BadRequest(f"inputs[0].data: expected a list of numbers, got {type(data).__name__}")
    try:
        array = np.asarray(data)
    except (ValueError, TypeError, OverflowError):
        raise BadRequest("inputs[0].data: expected numbers only, in a flat or evenly nested list") from None
    if array.dtype.kind not in "iuf":
        raise BadRequest("inputs[0].data: expected numbers only, in a flat or evenly nested list")
    if array.size != count:
        raise BadRequest(f"inputs[0].data: expected {count} values for the shape, got {array.size}")
    array = array.reshape(-1)
    if dtype.kind == "u":
        if array.dtype.kind == "f" and not np.array_equal(array, np.floor(array)):
            raise BadRequest("inputs[0].data: expected UINT8 integers 0-255, got a fraction or a non-finite value")
        if array.min() < 0 or array.max() > 255:
            raise BadRequest(
                f"inputs[0].data: expected UINT8 values 0-255, got values from {array.min():g} to {array.max():g}"
            )
        return array.astype(np.uint8)
    return array.astype(np.float32)


def _check_floats(array: np.ndarray) -> None:
    finite = np.isfinite(array)
    if not finite.all():
        raise BadRequest(f"inputs[0]: expected finite FP32 pixel values, got {array[~finite][0]}")
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 1:
        raise BadRequest(
            f"inputs[0]: expected FP32 pixels in [0, 1], got values from {low:g} to {high:g} "
            f"(divide by 255, or send UINT8)"
        )


def _requested_outputs(request: dict[str, Any]) -> list[RequestedOutput]:
    params = _object(request.get("parameters", {}), "parameters")
    binary_all = params.get("binary_data_output", False)
    if not isinstance(binary_all, bool):
        raise BadRequest(f"parameters.binary_data_output: expected true or false, got {json.dumps(binary_all)}")
    asked = request.get("outputs")
    if asked is None:
        return [RequestedOutput(name, binary_all) for name in OUTPUTS]
    if not isinstance(asked, list) or not asked:
        raise BadRequest('outputs: expected a non-empty list of {"name": ...} objects')
    chosen: list[RequestedOutput] = []
    for i, entry in enumerate(asked):
        entry = _object(entry, f"outputs[{i}]")
        name = entry.get("name")
        if not isinstance(name, str) or name not in OUTPUTS:
            raise BadRequest(f"outputs[{i}].name: expected one of {', '.join(OUTPUTS)}, got {json.dumps(name)}")
        if any(earlier.name == name for earlier in chosen):
            raise BadRequest(f"outputs[{i}].name: {name!r} is requested twice; ask for each output once")
        output_params = _object(entry.get("parameters", {}), f"outputs[{i}].parameters")
        binary = output_params.get("binary_data", binary_all)
        if not isinstance(binary, bool):
            raise BadRequest(f"outputs[{i}].parameters.binary_data: expected true or false, got {json.dumps(binary)}")
        chosen.append(RequestedOutput(name, binary, _classification(output_params, name, i)))
    return chosen


def _classification(params: dict[str, Any], name: str, i: int) -> int:
    value = params.get("classification")
    if value is None:
        return 0
    where = f"outputs[{i}].parameters.classification"
    if name != "probabilities":
        raise BadRequest(f"{where}: classification applies to the 'probabilities' output, not {name!r}")
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BadRequest(f"{where}: expected a whole number of classes >= 1, got {json.dumps(value)[:40]}")
    return value


def _timeout(request: dict[str, Any]) -> float | None:
    value = request.get("parameters", {}).get("timeout")
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise BadRequest(f"parameters.timeout: expected a positive number of microseconds, got {json.dumps(value)}")
    return float(value) / 1e6


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        length = -1
    if not 0 <= length <= len(body):
        raise BadRequest(
            f"Inference-Header-Content-Length: expected a byte count from 0 to {len(body)}, got {header_length[:40]!r}"
        )
    return body[:length], body[length:]


def _input_images(tensor: dict[str, Any], binary: bytes) -> np.ndarray:
    """The one input tensor as (N, 28, 28) uint8 or float32, from JSON data or the binary part."""
    if tensor.get("name") != INPUT_NAME:
        raise BadRequest(f"inputs[0].name: expected {INPUT_NAME!r}, got {json.dumps(tensor.get('name'))[:40]}")
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str) or datatype not in _INPUT_DTYPES:
        raise BadRequest(
            f"inputs[0].datatype: expected UINT8 (pixels 0-255) or FP32 (pixels in [0, 1]), "
            f"got {json.dumps(datatype)[:40]}"
        )
    dtype = _INPUT_DTYPES[datatype]
    shape = _images_shape(tensor.get("shape"))
    count = math.prod(shape)
    size = _object(tensor.get("parameters", {}), "inputs[0].parameters").get("binary_data_size")
    if size is not None:
        if "data" in tensor:
            raise BadRequest("inputs[0]: expected either data or parameters.binary_data_size, got both")
        want = count * dtype.itemsize
        if size != want or isinstance(size, bool):
            raise BadRequest(
                f"inputs[0].parameters.binary_data_size: expected {want} bytes for {datatype} "
                f"{list(shape)}, got {json.dumps(size)[:40]}"
            )
        if len(binary) != want:
            raise BadRequest(f"binary tensor data: expected {want} bytes after the JSON header, got {len(binary)}")
        flat = np.frombuffer(binary, dtype=dtype)
    else:
        if binary:
            raise BadRequest(
                f"binary tensor data: got {len(binary)} bytes after the JSON header but no input "
                f"has parameters.binary_data_size"
            )
        if "data" not in tensor:
            raise BadRequest("inputs[0]: expected data or parameters.binary_data_size")
        flat = _json_tensor(tensor["data"], dtype, count)
    if dtype.kind == "f":
        flat = flat.astype(np.float32)  # native byte order
        _check_floats(flat)
    return flat.reshape(shape[0], 28, 28)


def parse_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    """Parse an inference request body (JSON, or JSON followed by binary tensor data).

    Args:
        body: The whole request body.
        header_length: The ``Inference-Header-Content-Length`` header, or None
            when the body is JSON only.

    Returns:
        The request, its images shaped (N, 28, 28).

    Raises:
        BadRequest: On any malformed part, with a one-line message naming the field.
    """
    json_part, binary = _split_body(body, header_length)
    try:
        decoded = json.loads(json_part)
    except RecursionError:
        raise BadRequest("request: expected JSON (arrays or objects nested too deeply)") from None
    except ValueError as exc:  # the part before ';' drops advice meant for the server (sys.set_int_max_str_digits)
        raise BadRequest(f"request: expected JSON ({str(exc).splitlines()[0].split(';')[0][:120]})") from None
    request = _object(decoded, "request")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1:
        got = len(inputs) if isinstance(inputs, list) else type(inputs).__name__
        raise BadRequest(f"inputs: expected a list with one tensor named {INPUT_NAME!r}, got {got}")
    images = _input_images(_object(inputs[0], "inputs[0]"), binary)
    request_id = request.get("id", "")
    if not isinstance(request_id, str):
        raise BadRequest(f"id: expected a string, got {json.dumps(request_id)[:40]}")
    return InferRequest(id=request_id, images=images, outputs=_requested_outputs(request), timeout_s=_timeout(request))


def _top_classes(probabilities: np.ndarray, k: int, labels: np.ndarray) -> np.ndarray:
    """Triton's classification strings: (N, k) object array of ``"score:index[:label]"``, best first."""
    k = min(k, probabilities.shape[1])
    # A stable sort on the negated scores: ties keep the lower index first, as a plain argmax does.
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    named = not np.array_equal(labels, np.arange(len(labels)))
    rows = [
        [f"{probabilities[row, j]:f}:{j}" + (f":{labels[j]}" if named else "") for j in order[row].tolist()]
        for row in range(len(probabilities))
    ]
    return np.array(rows, dtype=object).reshape(len(probabilities), k)


def _bytes_tensor(strings: np.ndarray) -> bytes:
    """BYTES elements in the binary tensor form: each a 4-byte little-endian length, then its UTF-8 bytes."""
    parts = []
    for text in strings.reshape(-1).tolist():
        data = text.encode()
        parts.append(len(data).to_bytes(4, "little") + data)
    return b"".join(parts)


def encode_infer_response(
    model_name: str,
    request: InferRequest,
    probabilities: np.ndarray,
    labels: np.ndarray,
    class_labels: np.ndarray | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The inference response body and its extra headers.

    Args:
        model_name: The served model's name.
        request: The parsed request (its id and requested outputs).
        probabilities: float32 (N, classes).
        labels: int64 (N,).
        class_labels: int64 (classes,): the label of each class index, for the
            classification extension (None: the indices).

    Returns:
        ``(body, headers)``: JSON, or JSON then binary tensor data with the
        ``Inference-Header-Content-Length`` header when an output is binary.
    """
    tensors = {"probabilities": probabilities, "label": labels}
    if class_labels is None:
        class_labels = np.arange(probabilities.shape[1])
    outputs = []
    blobs = []
    for wanted in request.outputs:
        entry: dict[str, Any]
        if wanted.classification:
            strings = _top_classes(probabilities, wanted.classification, class_labels)
            entry = {"name": wanted.name, "datatype": "BYTES", "shape": list(strings.shape)}
            if wanted.binary:
                data = _bytes_tensor(strings)
                entry["parameters"] = {"binary_data_size": len(data)}
                blobs.append(data)
            else:
                entry["data"] = strings.reshape(-1).tolist()
            outputs.append(entry)
            continue
        datatype, dtype = OUTPUTS[wanted.name]
        array = np.ascontiguousarray(tensors[wanted.name], dtype=dtype)
        entry = {"name": wanted.name, "datatype": datatype, "shape": list(array.shape)}
        if wanted.binary:
            data = array.tobytes()
            entry["parameters"] = {"binary_data_size": len(data)}
            blobs.append(data)
        else:
            # float32 -> Python float is exact, so clients reading FP32 get the same bits back.
            entry["data"] = array.reshape(-1).tolist()
        outputs.append(entry)
    answer: dict[str, Any] = {"model_name": model_name, "model_version": "1", "outputs": outputs}
    if request.id:
        answer["id"] = request.id
    header = json.dumps(answer, separators=(",", ":")).encode()
    if not blobs:
        return header, {"content-type": "application/json"}
    return b"".join([header, *blobs]), {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header)),
    }
