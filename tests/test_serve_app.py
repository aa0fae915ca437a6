"""The server in-process (Starlette's test client): every endpoint, content type, error and limit."""

from __future__ import annotations

import json
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette", reason="needs the 'serve' extra")
pytest.importorskip("httpx", reason="Starlette's test client needs httpx")

from _serve_support import (  # noqa: E402
    binary_infer_body,
    json_infer_body,
    png_bytes,
    read_binary_outputs,
    sample_csv_bytes,
    sample_digits,
)

with warnings.catch_warnings():  # Starlette 1.10 suggests httpx2 for its test client; httpx works the same here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient  # noqa: E402

from mnist_onnx.runtime import DigitClassifier  # noqa: E402
from mnist_onnx.serve.app import create_app  # noqa: E402
from mnist_onnx.serve.config import ServeConfig  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
INFER = "/v2/models/digits/infer"


def started(config: ServeConfig, **kwargs: object) -> tuple[TestClient, object]:
    app = create_app(config, **kwargs)
    client = TestClient(app)
    client.__enter__()
    assert app.state.model.loaded.wait(120), "the model did not load in 2 minutes"
    return client, app


@pytest.fixture(scope="module")
def served():
    client, app = started(ServeConfig(precision="int8", max_body_mb=1, max_image_pixels=200 * 200, max_images=8))
    yield client, app
    client.__exit__(None, None, None)


@pytest.fixture(scope="module")
def client(served):
    return served[0]


@pytest.fixture(scope="module")
def reference():
    return DigitClassifier(precision="int8")


@pytest.fixture(scope="module")
def digits():
    return sample_digits(40)


def one_line_error(response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    message = response.json()["error"]
    assert isinstance(message, str) and message and "\n" not in message
    return message


# -- health and metadata ------------------------------------------------------------------------------------------


def test_live_ready_and_metadata(client, served):
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200
    assert client.get("/v2/models/digits/ready").status_code == 200
    assert client.get("/v2/models/digits/versions/1/ready").status_code == 200
    server = client.get("/v2").json()
    assert server["name"] == "mnist-onnx" and "binary_tensor_data" in server["extensions"]
    meta = client.get("/v2/models/digits").json()
    assert meta["name"] == "digits" and meta["versions"] == ["1"]
    assert [i["name"] for i in meta["inputs"]] == ["image"]
    assert {o["name"]: o["datatype"] for o in meta["outputs"]} == {"probabilities": "FP32", "label": "INT64"}
    assert meta["parameters"]["sha256"] == served[1].state.model.sha256
    assert served[1].state.model.sample_accuracy >= 0.99


def test_unknown_model_version_route_and_method(client):
    assert "unknown model 'other'" in one_line_error(client.get("/v2/models/other"), 404)
    assert "unknown model" in one_line_error(client.post("/v2/models/other/infer", json={}), 404)
    one_line_error(client.get("/v2/models/digits/versions/2"), 404)
    one_line_error(client.get("/no/such/page"), 404)
    one_line_error(client.post("/v2/health/live"), 405)
    one_line_error(client.get(INFER), 405)


def test_not_ready_until_loaded():
    gate = threading.Event()

    def slow_factory(config):
        gate.wait(60)
        return DigitClassifier(precision="int8")

    app = create_app(ServeConfig(precision="int8"), classifier_factory=slow_factory)
    with TestClient(app) as client:
        threading.Timer(60, gate.set).start()  # bounded: a failing assertion below does not hang the teardown
        assert client.get("/v2/health/live").status_code == 200
        assert "loading" in one_line_error(client.get("/v2/health/ready"), 503)
        digits = sample_digits(1)[0]
        loading = client.post(INFER, json=json_infer_body(digits))
        assert "not ready" in one_line_error(loading, 503) and loading.headers["retry-after"] == "1"
        gate.set()
        assert app.state.model.loaded.wait(120)
        assert client.get("/v2/health/ready").status_code == 200


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        (ServeConfig(precision="int8", min_sample_accuracy=0.9999), "accuracy"),
        (ServeConfig(precision="int8", sha256="0" * 64), "expected sha256"),
    ],
)
def test_never_ready_when_a_startup_check_fails(config, reason):
    client, app = started(config)
    try:
        assert app.state.model.state == "failed"
        assert reason in one_line_error(client.get("/v2/health/ready"), 503)
        assert client.get("/v2/health/live").status_code == 200
        refused = client.post(INFER, json=json_infer_body(sample_digits(1)[0]))
        one_line_error(refused, 503)
        assert "retry-after" not in refused.headers  # a failed check never clears: no invitation to poll
    finally:
        client.__exit__(None, None, None)


CASES = Path(__file__).resolve().parent / "data" / "cases"


@pytest.mark.parametrize(
    ("model", "fix"),
    [
        ("model-expects-0-255/mnist_zoo_like.onnx", "--pixel-scale 1"),
        ("normalize-not-baked/torch_normalized_input.onnx", "--normalize 0.1307,0.3081"),
    ],
)
def test_a_model_fed_wrongly_is_not_ready_and_the_reason_names_the_option_that_works(model, fix, caplog):
    caplog.set_level("WARNING", logger="mnist_onnx.serve")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the ContractWarning itself; the server's reason is what is checked
        client, app = started(ServeConfig(model=str(CASES / model), min_sample_accuracy=0.95))
    try:
        assert app.state.model.state == "failed"
        reason = one_line_error(client.get("/v2/health/ready"), 503)
        assert "accuracy" in reason and fix in reason, reason
        logged = [r.getMessage() for r in caplog.records if r.name == "mnist_onnx.serve" and r.levelname == "WARNING"]
        assert any(fix in line and "\n" not in line for line in logged), logged  # one log line, before the failure
    finally:
        client.__exit__(None, None, None)


# -- the Open Inference Protocol -------------------------------------------------------------------------------------


def test_json_infer_equals_in_process_predict_proba(client, reference, digits):
    images, labels = digits
    response = client.post(INFER, json=json_infer_body(images, id="req-7"))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model_name"] == "digits" and answer["id"] == "req-7"
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert outputs["probabilities"]["shape"] == [40, 10] and outputs["label"]["shape"] == [40]
    served = np.asarray(outputs["probabilities"]["data"], dtype=np.float32).reshape(40, 10)
    expected = reference.predict_proba(images)
    np.testing.assert_array_equal(served, expected)  # bitwise: float32 -> JSON -> float32 is exact
    np.testing.assert_array_equal(outputs["label"]["data"], expected.argmax(axis=1))
    assert np.mean(np.asarray(outputs["label"]["data"]) == labels) > 0.9


@pytest.mark.parametrize("shape", [(5, 28, 28), (5, 784), (5, 28, 28, 1), (5, 1, 28, 28)])
def test_binary_infer_every_input_layout(client, reference, digits, shape):
    images = digits[0][:5]
    body, headers = binary_infer_body(images.reshape(shape), binary_data_output=True)
    response = client.post(INFER, content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    arrays = read_binary_outputs(response.content, int(response.headers["inference-header-content-length"]))
    np.testing.assert_array_equal(arrays["probabilities"], reference.predict_proba(images))
    np.testing.assert_array_equal(arrays["label"], reference.predict(images))


def test_fp32_input_json_and_binary(client, reference, digits):
    images = digits[0][:4].astype(np.float32) / np.float32(255)
    expected = reference.predict_proba(images)
    body, headers = binary_infer_body(images, datatype="FP32", binary_data_output=True)
    response = client.post(INFER, content=body, headers=headers)
    arrays = read_binary_outputs(response.content, int(response.headers["inference-header-content-length"]))
    np.testing.assert_array_equal(arrays["probabilities"], expected)
    response = client.post(INFER, json=json_infer_body(images, datatype="FP32"))
    data = {o["name"]: o["data"] for o in response.json()["outputs"]}
    np.testing.assert_array_equal(np.asarray(data["probabilities"], np.float32).reshape(4, 10), expected)


def test_requested_outputs_are_honoured(client, reference, digits):
    images = digits[0][:3]
    body, headers = binary_infer_body(images, outputs=[{"name": "label", "parameters": {"binary_data": False}}])
    answer = client.post(INFER, content=body, headers=headers).json()
    assert [o["name"] for o in answer["outputs"]] == ["label"]
    assert answer["outputs"][0]["data"] == reference.predict(images).tolist()
    body, headers = binary_infer_body(
        images, outputs=[{"name": "probabilities", "parameters": {"binary_data": True}}, {"name": "label"}]
    )
    response = client.post(INFER, content=body, headers=headers)
    length = int(response.headers["inference-header-content-length"])
    answer = json.loads(response.content[:length])
    assert [o["name"] for o in answer["outputs"]] == ["probabilities", "label"]
    assert "data" in answer["outputs"][1] and "data" not in answer["outputs"][0]
    probabilities = np.frombuffer(response.content[length:], "<f4").reshape(3, 10)
    np.testing.assert_array_equal(probabilities, reference.predict_proba(images))


def _bad_requests():
    good = json_infer_body(np.zeros((1, 28, 28), np.uint8))
    tensor = good["inputs"][0]
    yield "not json", b"{nope", None, "expected JSON"
    yield "json list", b"[1, 2]", None, "expected a JSON object"
    yield "nested too deeply", b"[" * 100_000 + b"]" * 100_000, None, "(arrays or objects nested too deeply)"
    yield "5,000-digit number", b'{"inputs": [1' + b"0" * 5000 + b"]}", None, "value has 5001 digits)"
    yield "no inputs", json.dumps({}).encode(), None, "inputs"
    yield "two inputs", json.dumps({"inputs": [tensor, tensor]}).encode(), None, "got 2"
    yield "wrong name", json.dumps({"inputs": [{**tensor, "name": "x"}]}).encode(), None, "inputs[0].name"
    yield "wrong datatype", json.dumps({"inputs": [{**tensor, "datatype": "INT8"}]}).encode(), None, "datatype"
    yield "datatype a list", json.dumps({"inputs": [{**tensor, "datatype": ["UINT8"]}]}).encode(), None, "datatype"
    yield "datatype an object", json.dumps({"inputs": [{**tensor, "datatype": {}}]}).encode(), None, "datatype"
    yield "wrong shape", json.dumps({"inputs": [{**tensor, "shape": [1, 27, 28]}]}).encode(), None, "shape"
    yield (
        "zero images",
        json.dumps({"inputs": [{**tensor, "shape": [0, 28, 28], "data": []}]}).encode(),
        None,
        "at least one image",
    )
    yield "short data", json.dumps({"inputs": [{**tensor, "data": [0] * 783}]}).encode(), None, "783"
    yield "pixel 256", json.dumps({"inputs": [{**tensor, "data": [256] + [0] * 783}]}).encode(), None, "0-255"
    yield "fraction", json.dumps({"inputs": [{**tensor, "data": [0.5] + [0] * 783}]}).encode(), None, "integers"
    yield "strings", json.dumps({"inputs": [{**tensor, "data": ["0"] * 784}]}).encode(), None, "numbers only"
    yield (
        "fp32 > 1",
        json.dumps({"inputs": [{**tensor, "datatype": "FP32", "data": [2.0] * 784}]}).encode(),
        None,
        "[0, 1]",
    )
    yield "unknown output", json.dumps({**good, "outputs": [{"name": "logits"}]}).encode(), None, "outputs[0].name"
    yield "output name a list", json.dumps({**good, "outputs": [{"name": ["label"]}]}).encode(), None, "outputs[0].name"
    yield "bad timeout", json.dumps({**good, "parameters": {"timeout": -1}}).encode(), None, "timeout"
    twice = {**good, "outputs": [{"name": "label"}, {"name": "label"}]}
    yield "output twice", json.dumps(twice).encode(), None, "requested twice"
    top_label = {**good, "outputs": [{"name": "label", "parameters": {"classification": 2}}]}
    yield "classification of label", json.dumps(top_label).encode(), None, "applies to the 'probabilities'"
    top_zero = {**good, "outputs": [{"name": "probabilities", "parameters": {"classification": 0}}]}
    yield "classification 0", json.dumps(top_zero).encode(), None, "classification: expected a whole number"
    header = json.dumps(
        {"inputs": [{**{k: v for k, v in tensor.items() if k != "data"}, "parameters": {"binary_data_size": 784}}]}
    ).encode()
    yield "short binary", header + bytes(700), str(len(header)), "expected 784 bytes"
    yield "header length past the body", header, "99999", "Inference-Header-Content-Length"
    yield "binary without size", json.dumps(good).encode() + b"xx", str(len(json.dumps(good))), "binary"


@pytest.mark.parametrize(
    ("body", "header_length", "expected"),
    [case[1:] for case in _bad_requests()],
    ids=[case[0] for case in _bad_requests()],
)
def test_malformed_infer_requests_give_400_one_line(client, body, header_length, expected):
    headers = {"Inference-Header-Content-Length": header_length} if header_length else {}
    assert expected in one_line_error(client.post(INFER, content=body, headers=headers), 400)


def test_body_over_the_limit_gives_413_by_content_length_and_streamed(client):
    big = bytes(1024 * 1024 + 1)  # the fixture's limit is 1 MiB
    assert "limit" in one_line_error(client.post(INFER, content=big), 413)

    def chunks():
        for _ in range(40):  # 40 x 64 KiB, sent chunked with no Content-Length
            yield bytes(64 * 1024)

    assert "limit" in one_line_error(client.post(INFER, content=chunks()), 413)
    assert client.get("/v2/health/ready").status_code == 200


# -- /v1/predict ---------------------------------------------------------------------------------------------------


def test_predict_one_png(client, reference, digits):
    image = digits[0][0]
    response = client.post("/v1/predict", content=png_bytes(image), headers={"content-type": "image/png"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"model_name", "labels", "probabilities", "confidence", "prepared", "warnings"}
    prepared = np.asarray(answer["prepared"])
    assert prepared.shape == (1, 28, 28) and prepared.min() >= 0 and prepared.max() <= 255
    probabilities = np.asarray(answer["probabilities"], np.float32)
    np.testing.assert_array_equal(probabilities, reference.predict_proba(prepared.astype(np.uint8)))
    assert answer["labels"] == [int(probabilities[0].argmax())] == [int(digits[1][0])]
    assert answer["confidence"] == [float(probabilities[0].max())]


def test_predict_prepares_a_dark_digit_on_paper_like_mnist(client, reference, digits):
    from PIL import Image

    right = 0
    for image, label in zip(digits[0][:10], digits[1][:10], strict=True):
        paper = 255 - np.asarray(Image.fromarray(image).resize((112, 112), Image.Resampling.BICUBIC))
        answer = client.post("/v1/predict", content=png_bytes(paper), headers={"content-type": "image/png"}).json()
        prepared = np.asarray(answer["prepared"][0], np.uint8)
        assert prepared[0].max() == 0 and prepared.max() > 200  # light on black, a clear border as MNIST's
        right += answer["labels"][0] == label
    assert right >= 9


def test_predict_blank_image_is_a_400(client):
    blank = png_bytes(np.full((60, 60), 255, np.uint8))
    assert "no digit" in one_line_error(
        client.post("/v1/predict", content=blank, headers={"content-type": "image/png"}), 400
    )


def test_predict_multipart_images(client, reference, digits):
    files = [(f"f{i}", (f"{i}.png", png_bytes(digits[0][i]), "image/png")) for i in range(3)]
    answer = client.post("/v1/predict", files=files).json()
    assert answer["labels"] == reference.predict(np.asarray(answer["prepared"], np.uint8)).tolist()
    assert len(answer["prepared"]) == 3
    assert "text field" in one_line_error(client.post("/v1/predict", data={"a": "b"}, files=files[:1]), 400)
    too_many = [(f"f{i}", (f"{i}.png", png_bytes(digits[0][0]), "image/png")) for i in range(9)]
    one_line_error(client.post("/v1/predict", files=too_many), 400)


def test_a_multipart_upload_over_max_images_names_the_option(client, digits):
    files = [(f"f{i}", (f"{i}.png", png_bytes(digits[0][i]), "image/png")) for i in range(9)]  # the fixture takes 8
    message = one_line_error(client.post("/v1/predict", files=files), 400)
    assert "--max-images 8" in message, message
    assert client.post("/v1/predict", files=files[:8]).status_code == 200


def test_predict_image_errors_and_pixel_limit(client):
    assert "not an image" in one_line_error(
        client.post("/v1/predict", content=b"GIF89a garbage", headers={"content-type": "image/gif"}), 400
    )
    assert "empty" in one_line_error(
        client.post("/v1/predict", content=b"", headers={"content-type": "image/png"}), 400
    )
    huge = png_bytes(np.zeros((300, 300), np.uint8))  # 90,000 pixels over the fixture's 40,000
    assert "pixels" in one_line_error(
        client.post("/v1/predict", content=huge, headers={"content-type": "image/png"}), 400
    )
    assert "content-type" in one_line_error(
        client.post("/v1/predict", content=b"{}", headers={"content-type": "application/json"}), 415
    )


def test_predict_csv_streams_a_submission(client, reference, digits):
    response = client.post("/v1/predict", content=sample_csv_bytes(40), headers={"content-type": "text/csv"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    lines = response.text.splitlines()
    assert lines[0] == "ImageId,Label" and len(lines) == 41
    assert [int(line.split(",")[0]) for line in lines[1:]] == list(range(1, 41))
    assert [int(line.split(",")[1]) for line in lines[1:]] == reference.predict(digits[0]).tolist()
    labelled = client.post(
        "/v1/predict", content=sample_csv_bytes(40, labels=True), headers={"content-type": "text/csv"}
    )
    assert labelled.text == response.text


def test_predict_bad_csv_names_line_and_column(client):
    body = sample_csv_bytes(3).replace(b"\n0,", b"\nx,", 1)
    message = one_line_error(client.post("/v1/predict", content=body, headers={"content-type": "text/csv"}), 400)
    assert message.startswith("request body, line 2, column pixel0")


def test_metrics_count_requests_batches_and_images(client):
    client.get("/v2/health/live")
    text = client.get("/metrics").text
    for name in (
        "mnist_onnx_requests_total",
        "mnist_onnx_request_duration_seconds_bucket",
        "mnist_onnx_queue_wait_seconds_bucket",
        "mnist_onnx_batch_size_images_bucket",
        "mnist_onnx_queue_depth_requests",
        "mnist_onnx_images_predicted_total",
    ):
        assert name in text
    assert 'mnist_onnx_requests_total{endpoint="/v2/health/live",status="200"}' in text
    images = [line for line in text.splitlines() if line.startswith("mnist_onnx_images_predicted_total")]
    assert float(images[0].split()[-1]) > 0


# -- the page --------------------------------------------------------------------------------------------------------


def test_page_and_static_files(tmp_path):
    (tmp_path / "index.html").write_text("<!doctype html><title>digits</title>")
    (tmp_path / "app.js").write_text("console.log(1)")
    app = create_app(ServeConfig(precision="int8", static_dir=str(tmp_path)))
    with TestClient(app) as client:
        page = client.get("/")
        assert page.status_code == 200 and "digits" in page.text
        assert page.headers["content-type"].startswith("text/html")
        assert client.get("/static/app.js").text == "console.log(1)"
        one_line_error(client.get("/static/missing.css"), 404)
        one_line_error(client.get("/static/..%2Fsecret"), 404)
        one_line_error(client.get("/static/.hidden"), 404)
    empty = create_app(ServeConfig(precision="int8", static_dir=str(tmp_path / "none")))
    with TestClient(empty) as client:
        one_line_error(client.get("/"), 404)


def test_a_json_body_that_is_not_an_object_is_named_once(client):
    message = one_line_error(client.post(INFER, content=b"[1, 2]"), 400)
    assert message == "request: expected a JSON object, got list"


def test_an_unreadable_image_error_leaks_no_object_address(client):
    message = one_line_error(
        client.post("/v1/predict", content=b"\x89PNG\r\n\x1a\n garbage", headers={"content-type": "image/png"}), 400
    )
    assert message.startswith("request body: not an image Pillow can read") and " at 0x" not in message, message


@pytest.mark.parametrize("path", [INFER, "/v1/predict"])
def test_a_client_gone_mid_body_is_not_an_internal_error(served, caplog, path):
    import asyncio

    app = served[1]
    messages = [{"type": "http.request", "body": b'{"inputs": [', "more_body": True}, {"type": "http.disconnect"}]
    sent = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"image/png"), (b"content-length", b"100000")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    assert status == 400
    assert "unexpected error" not in caplog.text


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_request_bodies_as_tritonclient_sends_them(client, reference, digits, encoding):
    import gzip
    import zlib

    compress = gzip.compress if encoding == "gzip" else zlib.compress  # tritonclient's request_compression_algorithm
    images = digits[0][:5]
    body, headers = binary_infer_body(images, binary_data_output=True)
    response = client.post(INFER, content=compress(body), headers={**headers, "Content-Encoding": encoding})
    assert response.status_code == 200, response.text
    arrays = read_binary_outputs(response.content, int(response.headers["inference-header-content-length"]))
    np.testing.assert_array_equal(arrays["probabilities"], reference.predict_proba(images))
    bomb = compress(bytes(3 * 1024 * 1024))  # a few KiB that unpack past the fixture's 1 MiB limit
    assert "limit" in one_line_error(client.post(INFER, content=bomb, headers={"Content-Encoding": encoding}), 413)
    assert encoding in one_line_error(
        client.post(INFER, content=b"not compressed", headers={"Content-Encoding": encoding}), 400
    )


def test_a_gzip_body_of_several_members_is_read_whole(client, reference, digits):
    import gzip

    csv = sample_csv_bytes(40).splitlines(keepends=True)
    body = gzip.compress(b"".join(csv[:21])) + gzip.compress(b"".join(csv[21:]))  # cat a.gz b.gz, pigz, bgzip
    headers = {"content-type": "text/csv", "Content-Encoding": "gzip"}
    response = client.post("/v1/predict", content=body, headers=headers)
    assert response.status_code == 200, response.text
    rows = response.text.splitlines()[1:]
    assert len(rows) == 40  # not the first member's 20
    assert [int(row.split(",")[1]) for row in rows] == reference.predict_proba(digits[0]).argmax(axis=1).tolist()
    garbage = client.post("/v1/predict", content=body + b"trailing", headers=headers)
    assert "after the end of gzip member 2" in one_line_error(garbage, 400)


def test_an_unknown_content_encoding_is_a_415(client):
    assert "Content-Encoding" in one_line_error(
        client.post(INFER, content=b"{}", headers={"Content-Encoding": "br"}), 415
    )


def test_a_png_broken_after_its_header_is_a_400(client):
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(range(0, 160, 5)) for _ in range(32))  # 32x32 grey, filter 0 per row
    packed = zlib.compress(rows)
    broken = (  # the image data's second chunk has a garbled type: Pillow raises SyntaxError while decoding
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 32, 32, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", packed[: len(packed) // 2])
        + chunk(b"G\xd2\xb0\x1d", packed[len(packed) // 2 :])
        + chunk(b"IEND", b"")
    )
    message = one_line_error(client.post("/v1/predict", content=broken, headers={"content-type": "image/png"}), 400)
    assert message.startswith("request body: cannot decode the image") and "broken PNG" in message


def test_a_file_name_with_a_line_break_keeps_the_error_on_one_line(client):
    body = (
        b'--b\r\nContent-Disposition: form-data; name="a"; filename="a.png\nX: y"\r\n'
        b"Content-Type: image/png\r\n\r\nnot a png\r\n--b--\r\n"
    )
    response = client.post("/v1/predict", content=body, headers={"content-type": "multipart/form-data; boundary=b"})
    assert "not an image" in one_line_error(response, 400)


def test_each_worker_of_several_takes_connections_only_once_its_model_is_loaded(monkeypatch):
    # With --workers N the port is shared: a worker that accepted connections while still loading answered
    # 503 to requests that a ready sibling had just passed the readiness probe for.
    from mnist_onnx.serve.app import app_from_env
    from mnist_onnx.serve.config import CONFIG_ENV

    monkeypatch.setenv(CONFIG_ENV, ServeConfig(precision="int8").to_env())
    app = app_from_env()
    with TestClient(app) as client:  # entering runs the lifespan's start-up, as a worker does before accepting
        assert app.state.model.loaded.is_set()
        assert client.get("/v2/health/ready").status_code == 200
