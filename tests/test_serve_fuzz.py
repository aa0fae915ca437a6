"""Generated request bodies never crash the server or leak a 500: every answer is 200 or a one-line 4xx."""

from __future__ import annotations

import json
import warnings

import pytest

pytest.importorskip("starlette", reason="needs the 'serve' extra")
pytest.importorskip("httpx", reason="Starlette's test client needs httpx")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mnist_onnx.serve.app import create_app  # noqa: E402
from mnist_onnx.serve.config import ServeConfig  # noqa: E402

with warnings.catch_warnings():  # Starlette 1.10 suggests httpx2 for its test client; httpx works the same here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient  # noqa: E402


@pytest.fixture(scope="module")
def client():
    app = create_app(ServeConfig(precision="int8", max_body_mb=0.5, max_image_pixels=256 * 256))
    with TestClient(app) as test_client:
        assert app.state.model.loaded.wait(120) and app.state.model.ready
        yield test_client


def _check(response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        message = response.json()["error"]
        assert message and "\n" not in message


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-300, 300) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
_shapes = st.lists(st.integers(-2, 900), min_size=0, max_size=5)
_tensors = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["image", "x", 3]),
        "datatype": st.sampled_from(["UINT8", "FP32", "BYTES", None]),
        "shape": _shapes | _json_values,
    },
    optional={
        "data": st.lists(st.integers(-5, 300) | st.floats(-2, 2), max_size=30) | _json_values,
        "parameters": st.fixed_dictionaries({}, optional={"binary_data_size": st.integers(-5, 5000)}),
    },
)
_requests = st.fixed_dictionaries(
    {"inputs": st.lists(_tensors, max_size=2) | _json_values},
    optional={
        "outputs": _json_values
        | st.lists(st.fixed_dictionaries({"name": st.sampled_from(["label", "probabilities", "other"])}), max_size=3),
        "parameters": _json_values
        | st.fixed_dictionaries({}, optional={"binary_data_output": _json_values, "timeout": _json_values}),
        "id": _json_values,
    },
)

_settings = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_settings
@given(
    request=_requests, tail=st.binary(max_size=64), header=st.none() | st.text(alphabet="0123456789ab -+", max_size=6)
)
def test_generated_infer_requests(client, request, tail, header):
    body = json.dumps(request).encode()
    headers = {}
    if header is not None:
        headers["Inference-Header-Content-Length"] = header if not header.isdigit() else str(len(body))
    _check(client.post("/v2/models/digits/infer", content=body + (tail if header else b""), headers=headers))


@_settings
@given(
    body=st.binary(max_size=2048),
    kind=st.sampled_from(
        [
            "image/png",
            "image/jpeg",
            "text/csv",
            "multipart/form-data; boundary=x",
            "multipart/form-data",
            "application/octet-stream",
            "text/plain",
            "",
        ]
    ),
)
def test_generated_predict_bodies(client, body, kind):
    _check(client.post("/v1/predict", content=body, headers={"content-type": kind} if kind else {}))


@_settings
@given(
    rows=st.lists(
        st.lists(st.sampled_from(["0", "255", "", "x", "1.5", "-1", "256", " 7"]), min_size=1, max_size=790),
        min_size=0,
        max_size=3,
    ),
    header=st.sampled_from(["test", "train", "none"]),
)
def test_generated_csv_bodies(client, rows, header):
    lines = []
    if header == "test":
        lines.append(",".join(f"pixel{i}" for i in range(784)))
    elif header == "train":
        lines.append("label," + ",".join(f"pixel{i}" for i in range(784)))
    lines.extend(",".join(row) for row in rows)
    response = client.post("/v1/predict", content="\n".join(lines).encode(), headers={"content-type": "text/csv"})
    _check(response)
