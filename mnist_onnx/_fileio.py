"""Atomic file output: a reader never sees a half-written file.

Everything the package writes (CSVs, models, reports) goes through
:func:`atomic_path`: the caller writes a temporary file in the destination's
directory, and only a complete write is renamed over the destination.  On any
error, including KeyboardInterrupt, the temporary file is removed and the
previous destination (if any) is untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import MnistOnnxError


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike[str], *, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``destination``; rename it into place on success.

    Args:
        destination: Final path of the file.
        suffix: Suffix for the temporary file (some writers pick a format from it).

    Raises:
        MnistOnnxError: If the destination's directory does not exist or cannot be
            written, or the caller's write into the temporary file fails with an
            OSError (disk full, permission denied); the temporary file is removed.
    """
    dest = Path(destination)
    if dest.is_dir():
        raise MnistOnnxError(f"{dest}: is a directory, expected a file path")
    parent = dest.parent if str(dest.parent) else Path(".")
    if not parent.is_dir():
        if parent.exists():
            raise MnistOnnxError(f"{dest}: cannot write, {parent} is not a directory")
        raise MnistOnnxError(f"{dest}: cannot write, directory {parent} does not exist")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".tmp{suffix}", dir=parent)
    except OSError as exc:
        raise MnistOnnxError(f"{dest}: cannot write ({exc.strerror or exc})") from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            yield tmp
        except OSError as exc:
            # A write into the temporary file failed (disk full, quota, I/O error): say
            # which output, not which temporary name.  Errors about other files pass through.
            if exc.filename not in (None, str(tmp), tmp):
                raise
            raise MnistOnnxError(f"{dest}: cannot write ({exc.strerror or exc})") from exc
        try:
            # Readable like a normally created file (mkstemp makes it 0600).
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, dest)
        except OSError as exc:
            raise MnistOnnxError(f"{dest}: cannot write ({exc.strerror or exc})") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_bytes_atomic(destination: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``destination`` atomically."""
    with atomic_path(destination) as tmp:
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise MnistOnnxError(f"{destination}: cannot write ({exc.strerror or exc})") from exc


def write_json_atomic(destination: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``destination`` atomically."""
    write_bytes_atomic(destination, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Return the hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
