"""Triton's classification extension, trailing slashes, and large JSON bodies, in-process."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette", reason="needs the 'serve' extra")
pytest.importorskip("httpx", reason="Starlette's test client needs httpx")

from _serve_support import binary_infer_body, json_infer_body, sample_digits  # noqa: E402

import mnist_onnx.serve.app as app_module  # noqa: E402
from mnist_onnx.runtime import DigitClassifier  # noqa: E402
from mnist_onnx.serve.app import create_app  # noqa: E402
from mnist_onnx.serve.config import CONFIG_ENV, ServeConfig  # noqa: E402
from mnist_onnx.serve.protocol import RequestedOutput, encode_infer_response, parse_infer_request  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
INFER = "/v2/models/digits/infer"


@pytest.fixture(scope="module")
def client():
    app = create_app(ServeConfig(precision="int8"))
    with TestClient(app) as test_client:
        assert app.state.model.loaded.wait(120) and app.state.model.ready
        yield test_client


@pytest.fixture(scope="module")
def reference():
    return DigitClassifier(precision="int8")


def _top(scores: np.ndarray, k: int) -> list[list[str]]:
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [[f"{scores[r, j]:f}:{j}" for j in order[r]] for r in range(len(scores))]


def test_classification_as_json(client, reference):
    images = sample_digits(5)[0]
    body = json_infer_body(images)
    body["outputs"] = [{"name": "probabilities", "parameters": {"classification": 3}}, {"name": "label"}]
    answer = client.post(INFER, json=body).json()
    top, label = answer["outputs"]
    assert top["datatype"] == "BYTES" and top["shape"] == [5, 3]
    assert np.reshape(top["data"], (5, 3)).tolist() == _top(reference.predict_proba(images), 3)
    assert label["data"] == reference.predict(images).tolist()  # the other output is untouched


def test_classification_as_binary_data_and_k_past_the_classes(client, reference):
    images = sample_digits(2)[0]
    body, headers = binary_infer_body(
        images, outputs=[{"name": "probabilities", "parameters": {"classification": 12, "binary_data": True}}]
    )
    response = client.post(INFER, content=body, headers=headers)
    length = int(response.headers["inference-header-content-length"])
    header = json.loads(response.content[:length])
    assert header["outputs"][0]["shape"] == [2, 10]  # K is capped at the number of classes
    data, strings = response.content[length:], []
    while data:
        size = int.from_bytes(data[:4], "little")
        strings.append(data[4 : 4 + size].decode())
        data = data[4 + size :]
    assert len(response.content) - length == header["outputs"][0]["parameters"]["binary_data_size"]
    assert np.reshape(strings, (2, 10)).tolist() == _top(reference.predict_proba(images), 10)


def test_classification_names_labels_that_are_not_the_indices():
    parsed = parse_infer_request(json.dumps(json_infer_body(np.zeros((1, 28, 28), np.uint8))).encode(), None)
    parsed.outputs = [RequestedOutput("probabilities", False, 2)]
    scores = np.array([[0.1, 0.7, 0.2]], dtype=np.float32)
    body, _ = encode_infer_response("m", parsed, scores, np.array([5]), np.array([4, 5, 6]))
    assert json.loads(body)["outputs"][0]["data"] == ["0.700000:1:5", "0.200000:2:6"]


@pytest.mark.parametrize("path", ["/v2/health/ready/", "/v2/models/digits/", "/v2/models/digits/ready//"])
def test_a_trailing_slash_is_answered_not_redirected(client, path):
    response = client.get(path, follow_redirects=False)
    assert response.status_code == 200, response.text


def test_a_trailing_slash_on_infer_is_answered(client, reference):
    images = sample_digits(1)[0]
    response = client.post(INFER + "/", json=json_infer_body(images), follow_redirects=False)
    assert response.status_code == 200
    assert response.json()["outputs"][1]["data"] == reference.predict(images).tolist()


def test_a_large_json_body_is_parsed_off_the_event_loop(client, reference, monkeypatch):
    offloaded: list[str] = []
    real = app_module.run_in_threadpool

    async def recording(func, *args, **kwargs):
        offloaded.append(func.__name__)
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(app_module, "run_in_threadpool", recording)
    small = sample_digits(1)[0]
    assert client.post(INFER, json=json_infer_body(small)).status_code == 200
    assert "parse_infer_request" not in offloaded  # one image: parsed on the loop, the hand-off costs more
    large = sample_digits(64)[0]
    answer = client.post(INFER, json=json_infer_body(large)).json()
    assert offloaded.count("parse_infer_request") == 1
    assert answer["outputs"][1]["data"] == reference.predict(large).tolist()


# -- a model's input contract, as predict takes it -------------------------------------------------------------------

ZOO = Path(__file__).parent / "data" / "cases" / "model-expects-0-255" / "mnist_zoo_like.onnx"


def test_contract_flags_reach_the_served_model(monkeypatch):
    from mnist_onnx.cli import build_parser
    from mnist_onnx.serve.cli import _config

    args = build_parser().parse_args(
        ["serve", "--model", str(ZOO), "--pixel-scale", "1", "--normalize", "0.1,0.3", "--output", "probs"]
        + ["--provider", "openvino"]
    )
    config = _config(args)
    assert (config.pixel_scale, config.normalize, config.output, config.providers) == (
        1.0,
        (0.1, 0.3),
        "probs",
        "openvino",
    )
    monkeypatch.setenv(CONFIG_ENV, config.to_env())
    assert ServeConfig.from_env() == config  # the --workers hand-over keeps the tuple


def test_a_model_that_scales_itself_is_served_right_with_pixel_scale_1():
    images = sample_digits(16)[0]
    config = ServeConfig(model=str(ZOO), pixel_scale=1.0, min_sample_accuracy=0.95)
    app = create_app(config)
    with TestClient(app) as client:
        assert app.state.model.loaded.wait(120)
        assert app.state.model.ready, app.state.model.problem
        answer = client.post(INFER, json=json_infer_body(images)).json()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = DigitClassifier(str(ZOO), pixel_scale=1.0).predict_proba(images)
    assert np.asarray(answer["outputs"][0]["data"], dtype=np.float32).reshape(16, 10).tolist() == expected.tolist()


def test_without_its_contract_flag_the_model_never_becomes_ready():
    app = create_app(ServeConfig(model=str(ZOO), min_sample_accuracy=0.95))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the load-time ContractWarning names --pixel-scale 1
        with TestClient(app) as client:
            assert app.state.model.loaded.wait(120)
            response = client.get("/v2/health/ready")
    assert response.status_code == 503
    assert "accuracy 11.10%" in response.json()["error"]
