"""A real server process on 127.0.0.1, driven by Triton's own HTTP client; SIGTERM drains requests in flight."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette", reason="needs the 'serve' extra")
pytest.importorskip("uvicorn", reason="needs the 'serve' extra")
httpclient = pytest.importorskip("tritonclient.http", reason="needs tritonclient[http] (the dev extra)")

from _serve_support import sample_digits  # noqa: E402

from mnist_onnx.cli import main  # noqa: E402
from mnist_onnx.runtime import DigitClassifier  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def wait_ready(port: int, process: subprocess.Popen, limit_s: float = 180.0) -> None:
    end = time.monotonic() + limit_s
    while get_status(f"http://127.0.0.1:{port}/v2/health/ready") != 200:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}: {process.stderr.read()[-2000:]}")
        if time.monotonic() > end:
            process.kill()
            pytest.fail("the server was not ready in time")
        time.sleep(0.1)


def start(args: list[str], port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_ready(port, process)
    return process


def stop(process: subprocess.Popen) -> tuple[int, str, str]:
    process.send_signal(signal.SIGTERM)
    try:
        out, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    return process.returncode, out, err


@pytest.fixture(scope="module")
def server():
    port = free_port()
    process = start([sys.executable, "-m", "mnist_onnx", "serve", "--port", str(port), "--precision", "int8"], port)
    try:
        yield port
    finally:
        code, _, err = stop(process)
        assert code == 0, err[-2000:]
        assert "stopped" in err


@pytest.fixture(scope="module")
def reference():
    return DigitClassifier(precision="int8")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_infer_equals_in_process(server, reference, binary):
    images = sample_digits(64)[0]
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server}")
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("digits")
        meta = client.get_model_metadata("digits")
        assert {o["name"] for o in meta["outputs"]} == {"probabilities", "label"}
        tensor = httpclient.InferInput("image", list(images.shape), "UINT8")
        tensor.set_data_from_numpy(images, binary_data=binary)
        outputs = [httpclient.InferRequestedOutput(name, binary_data=binary) for name in ("probabilities", "label")]
        result = client.infer("digits", [tensor], outputs=outputs, request_id="42")
        np.testing.assert_array_equal(result.as_numpy("probabilities"), reference.predict_proba(images))
        np.testing.assert_array_equal(result.as_numpy("label"), reference.predict(images))
        assert result.get_response()["id"] == "42"
        # No outputs named: tritonclient asks for every output as binary data.
        result = client.infer("digits", [tensor])
        np.testing.assert_array_equal(result.as_numpy("label"), reference.predict(images))
        floats = httpclient.InferInput("image", [4, 784], "FP32")
        pixels = images[:4].reshape(4, 784).astype(np.float32) / np.float32(255)
        floats.set_data_from_numpy(pixels, binary_data=binary)
        result = client.infer("digits", [floats])
        np.testing.assert_array_equal(result.as_numpy("probabilities"), reference.predict_proba(pixels))
        with pytest.raises(Exception, match="unknown model"):
            client.infer("other", [tensor])
        # Triton's classification extension, as tritonclient asks for it (class_count).
        top = [httpclient.InferRequestedOutput("probabilities", binary_data=binary, class_count=3)]
        result = client.infer("digits", [tensor], outputs=top)
        strings = result.as_numpy("probabilities")
        assert strings.shape == (64, 3)
        expected = reference.predict_proba(images)
        for row, entries in enumerate(strings.tolist()):
            parsed = [(entry.decode() if isinstance(entry, bytes) else entry).split(":") for entry in entries]
            indices = [int(index) for _, index in parsed]
            assert indices == np.argsort(-expected[row], kind="stable")[:3].tolist()
            assert [float(score) for score, _ in parsed] == pytest.approx(expected[row][indices], abs=1e-6)
    finally:
        client.close()


def test_concurrent_clients_get_their_own_answers(server, reference):
    images = sample_digits(48)[0]
    expected = reference.predict_proba(images)
    failures: list[str] = []

    def worker(first: int) -> None:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server}")
        try:
            for i in range(first, 48, 6):  # 8 requests a thread, bounded
                tensor = httpclient.InferInput("image", [1, 28, 28], "UINT8")
                tensor.set_data_from_numpy(images[i : i + 1])
                got = client.infer("digits", [tensor]).as_numpy("probabilities")
                if not np.array_equal(got, expected[i : i + 1]):
                    failures.append(f"image {i}")
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures


_SLOW_SERVER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from mnist_onnx.runtime import DigitClassifier
    from mnist_onnx.serve.cli import run_server
    from mnist_onnx.serve.config import ServeConfig

    folder = Path(sys.argv[2])

    class Slow:
        def __init__(self):
            self.real = DigitClassifier(precision="int8")
            self.class_labels = self.real.class_labels

        def predict_proba(self, images):
            if (folder / "armed").exists():
                (folder / "busy").write_text("a batch is running")
                time.sleep(1.0)  # slow enough that the requests are still in flight at SIGTERM
            return self.real.predict_proba(images)

    # inline_max_images=0: every request goes through the queue the drain must empty (an idle request would
    # otherwise run on the event loop, and one armed to sleep would hold it).
    run_server(ServeConfig(precision="int8", max_batch_size=2, inline_max_images=0), port=int(sys.argv[1]),
               classifier_factory=lambda config: Slow())
    print("exited cleanly")
""")


def test_sigterm_drains_requests_in_flight(tmp_path):
    script = tmp_path / "slow_server.py"
    script.write_text(_SLOW_SERVER)
    port = free_port()
    process = start([sys.executable, str(script), str(port), str(tmp_path)], port)
    (tmp_path / "armed").write_text("")
    body = json.dumps({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 784], "data": [0] * 784}]})
    statuses: list[int] = []

    def post() -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v2/models/digits/infer",
            data=body.encode(),
            headers={"content-type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                statuses.append(int(response.status))
        except urllib.error.HTTPError as exc:
            statuses.append(exc.code)

    threads = [threading.Thread(target=post) for _ in range(5)]
    for thread in threads:
        thread.start()
    end = time.monotonic() + 60
    while not (tmp_path / "busy").exists() and time.monotonic() < end:
        time.sleep(0.01)
    assert (tmp_path / "busy").exists(), "no batch started"
    code, out, err = stop(process)
    for thread in threads:
        thread.join(60)
    assert statuses == [200] * 5, err[-2000:]
    assert code == 0 and "exited cleanly" in out, err[-2000:]


def test_workers_share_the_port_and_stop_on_sigterm():
    port = free_port()
    process = start(
        [sys.executable, "-m", "mnist_onnx", "serve", "--port", str(port), "--precision", "int8", "--workers", "2"],
        port,
    )
    try:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        tensor = httpclient.InferInput("image", [2, 28, 28], "UINT8")
        tensor.set_data_from_numpy(sample_digits(2)[0])
        for _ in range(4):
            assert client.infer("digits", [tensor]).as_numpy("label").shape == (2,)
        client.close()
    finally:
        code, _, err = stop(process)
    assert code == 0, err[-2000:]


def test_missing_extra_exits_4_naming_the_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "starlette", None)  # import starlette now fails as if not installed
    assert main(["serve"]) == 4
    assert "pip install 'mnist-onnx[serve]'" in capsys.readouterr().err


def test_bad_model_path_exits_1(capsys, tmp_path):
    assert main(["serve", "--model", str(tmp_path / "missing.onnx")]) == 1
    assert "missing.onnx" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "named"),
    [(b"# My model\nsee the notes\n", "is a text file"), (b"PK\x03\x04rest", "zip archive"), (b"", "is empty")],
)
def test_a_file_that_cannot_be_onnx_exits_1_before_serving(capsys, tmp_path, content, named):
    model = tmp_path / "model.onnx"
    model.write_bytes(content)
    assert main(["serve", "--model", str(model), "--port", "0"]) == 1  # not a server that is never ready
    err = capsys.readouterr().err
    assert named in err and "model.onnx" in err


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--max-body-mb", "inf"], "--max-body-mb"),  # every request answered 500 (OverflowError)
        (["--max-queue-delay-ms", "inf"], "--max-queue-delay-ms"),  # the batching thread died on the first wait
        (["--timeout-ms", "nan"], "--timeout-ms"),
        (["--min-sample-accuracy", "2"], "--min-sample-accuracy"),  # never ready: 200% accuracy required
        (["--name", "a/b"], "--name"),  # no URL can reach a model name with a slash
        (["--name", ""], "--name"),
        (["--sha256", "abc"], "--sha256"),  # refused only after the model file was read, as a digest mismatch
    ],
)
def test_bad_flag_values_are_usage_errors_before_anything_starts(monkeypatch, capsys, flags, named):
    started = []
    monkeypatch.setattr("mnist_onnx.serve.cli.run_server", lambda *args, **kwargs: started.append(args))
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", *flags])
    assert exit_info.value.code == 2 and not started
    assert named in capsys.readouterr().err


def test_a_port_in_use_exits_1_with_one_line(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port), "--precision", "int8"]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("mnist-onnx serve: error:") and str(port) in last and "in use" in last
