"""The one reader of Kaggle Digit Recognizer CSVs, shared by training and the runtime.

It imports numpy and pandas only, so the runtime can use it without TensorFlow.

Files are ``label,pixel0,...,pixel783`` (``train.csv``) or ``pixel0,...,pixel783``
(``test.csv``), optionally gzip-compressed (detected from the bytes, not the
name), with or without a UTF-8 BOM, LF or CRLF line endings.  Blank lines are
skipped.  Pixels are integers 0-255 (an integral float such as ``12.0`` or
``1e2`` is accepted); labels are integers 0-9.

Reading is three-tier.  Rows spelt the common way (fields of 1-3 ASCII digits,
LF or CRLF line ends) are parsed by numpy on whole blocks of lines, which
releases the GIL, so blocks parse on worker threads beside inference: 0.21 s for
the 28,000-row test.csv on the 2-core dev machine, against 0.23 s for pandas'
C parser on the whole file and 0.36-0.43 s for it in 4,096-row chunks
(``python benchmarks/csv_parse_speed.py``).  A block spelt any other way goes to
pandas' C parser straight to uint8 (which beat the C parser to int64, 0.42 s,
and the pyarrow engine, 0.78 s).  If that fails too, a strict line-by-line scan
finds the first bad cell, so the error names the file, the 1-based line (the
header is line 1) and the column.  The two block parsers live in :mod:`.csv_parse`.

The other common MNIST CSV, without a header row (label first and 784 pixels,
or 784 pixels), is recognised from its first line and read the same way, with
a note saying so (:mod:`.csv_sniff`); a file separated by semicolons, tabs or
bars is refused with a message naming its separator.
"""

from __future__ import annotations

import csv
import gzip
import math
import os
import re
import stat
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from ..errors import CsvFormatError
from .csv_parse import parse_pandas, parse_plain
from .csv_sniff import headerless_layout, other_pixel_header, separator_problem

__all__ = ["PIXEL_COLUMNS", "DigitBatch", "KaggleCsvInfo", "inspect_kaggle_csv", "read_kaggle_csv", "iter_kaggle_csv"]

PIXEL_COLUMNS = tuple(f"pixel{i}" for i in range(784))
LABEL_COLUMN = "label"
DEFAULT_CHUNK_ROWS = 4096
# read_kaggle_csv parses in blocks of this many rows (numpy's temporaries stay
# small) and joins them.
_WHOLE_FILE_BLOCK_ROWS = 4096
_GZIP_MAGIC = b"\x1f\x8b"
_BOM = "\ufeff"
# What reading damaged gzip data raises: a truncated stream (EOFError), a bad
# CRC or header (gzip.BadGzipFile, an OSError), a corrupt block (zlib.error).
_GZIP_ERRORS = (OSError, EOFError, zlib.error)
# The number syntax pandas' C parser accepts (ASCII digits only).  Python's
# float() also takes "1_0", "inf" and non-ASCII digits such as "\u0663", which
# pandas rejects: checking cells with float() alone let such a cell through the
# diagnosis, and the error lost its line and column.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_SHOWN_CELL_CHARS = 40


@dataclass(frozen=True)
class DigitBatch:
    """Images (and labels, when the file has them) read from a Kaggle CSV.

    Attributes:
        images: uint8 array shaped (N, 28, 28, 1), pixel values 0-255.
        labels: uint8 array shaped (N,), or None for a test.csv.
        first_row: 0-based index of this batch's first data row in the file.
    """

    images: np.ndarray
    labels: np.ndarray | None
    first_row: int = 0

    def __len__(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class KaggleCsvInfo:
    """What the header says about a Kaggle CSV.

    Attributes:
        header: False for a header-less MNIST CSV (its first line is data).
        note: How a header-less file (or one naming its pixels another way) is read, for the user;
            None for a Kaggle CSV.
        invert: Pixels are inverted (255 - p) as they are parsed (digits drawn dark on light).
    """

    path: Path
    has_labels: bool
    compressed: bool
    header: bool = True
    note: str | None = None
    invert: bool = False


def _open_binary(path: Path) -> IO[bytes]:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise CsvFormatError(str(path), None, None, "no such file") from None
    except OSError as exc:
        raise CsvFormatError(str(path), None, None, f"cannot open ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        # The file is read twice (header check, then parse), which a pipe cannot do;
        # and opening a pipe nobody writes to would wait forever.
        raise CsvFormatError(
            str(path), None, None, "is not a regular file (a pipe or a device?); save the CSV to a file first"
        )
    try:
        fh: IO[bytes] = open(path, "rb")
    except FileNotFoundError:
        raise CsvFormatError(str(path), None, None, "no such file") from None
    except IsADirectoryError:
        raise CsvFormatError(str(path), None, None, "is a directory, expected a CSV file") from None
    except OSError as exc:
        raise CsvFormatError(str(path), None, None, f"cannot open ({exc.strerror or exc})") from None
    if _is_gzip(fh):
        # GzipFile(fileobj=...) never closes the file it was given: hand it the path instead, so that closing
        # the reader closes the file too (else each gzipped CSV read leaks an open file, a ResourceWarning).
        fh.close()
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return fh


def _is_gzip(fh: IO[bytes]) -> bool:
    magic = fh.read(2)
    fh.seek(0)
    return magic == _GZIP_MAGIC


def inspect_kaggle_csv(path: str | os.PathLike[str]) -> KaggleCsvInfo:
    """Check a Kaggle CSV's header and say whether it carries labels.

    Raises:
        CsvFormatError: If the file is missing, empty, or its header is not
            ``[label,]pixel0..pixel783``.
    """
    p = Path(path)
    with _open_binary(p) as fh:
        compressed = isinstance(fh, gzip.GzipFile)
        try:
            first = fh.readline()
        except _GZIP_ERRORS as exc:
            what = "damaged or truncated gzip data" if compressed else "cannot read"
            raise CsvFormatError(str(p), 1, None, f"{what} ({exc})") from None
    if not first.strip():
        raise CsvFormatError(
            str(p),
            None,
            None,
            "file is empty, expected a header line 'label,pixel0,...,pixel783' or 'pixel0,...,pixel783'",
        )
    try:
        text = first.decode("utf-8")
    except UnicodeDecodeError:
        from .image_files import describe_file  # only on this error path: it imports Pillow

        what = describe_file(p)
        if what not in ("text", "binary data"):
            raise CsvFormatError(
                str(p),
                None,
                None,
                f"is {what}, not a Kaggle CSV"
                + (
                    "; predict it as an image (mnist-onnx predict FILE, or DigitClassifier.predict_images)"
                    if what.endswith(" image")
                    else ""
                ),
            ) from None
        raise CsvFormatError(str(p), 1, None, "header is not UTF-8 text") from None
    text = text.lstrip(_BOM).rstrip("\r\n")
    if "\r" in text:
        raise CsvFormatError(
            str(p), 1, None, "lines end in a bare CR (classic Mac OS line endings); expected LF or CRLF line endings"
        )
    problem = separator_problem(text)
    if problem:
        raise CsvFormatError(str(p), 1, None, problem)
    layout = headerless_layout(text)
    if layout is not None:
        return KaggleCsvInfo(p, layout.has_labels, compressed, header=False, note=layout.note)
    names = [n.strip() for n in next(csv.reader([text]), [])]
    other = other_pixel_header(names)
    if other is not None:
        return KaggleCsvInfo(p, other.has_labels, compressed, note=other.note)
    has_labels = bool(names) and names[0] == LABEL_COLUMN
    expected = ((LABEL_COLUMN,) if has_labels else ()) + PIXEL_COLUMNS
    for index, (got, want) in enumerate(zip(names, expected, strict=False), start=1):
        if got != want:
            raise CsvFormatError(
                str(p), 1, f"{index} ({_shown(got)})", f"expected header column {want!r}, got {_shown(got)}"
            )
    if len(names) != len(expected):
        kind = "train (label + 784 pixels)" if has_labels else "test (784 pixels)"
        extra = f", first extra column {_shown(names[len(expected)])}" if len(names) > len(expected) else ""
        raise CsvFormatError(
            str(p), 1, None, f"expected {len(expected)} header columns for a {kind} file, got {len(names)}{extra}"
        )
    return KaggleCsvInfo(p, has_labels, compressed)


def _shown(text: str) -> str:
    """``repr(text)``, cut with an ellipsis when long, so an error stays one short line."""
    return repr(text) if len(text) <= _SHOWN_CELL_CHARS else repr(text[:_SHOWN_CELL_CHARS]) + "..."


def _check_cell(value: str, *, is_label: bool) -> str | None:
    """Return a problem description for one cell, or None when it is valid."""
    s = value.strip()
    if not s:
        return "missing value"
    shown = value if len(value) <= _SHOWN_CELL_CHARS else value[:_SHOWN_CELL_CHARS] + "..."
    if not _NUMBER.fullmatch(s):
        return f"expected an integer {'0-9' if is_label else '0-255'}, got {shown!r}"
    x = float(s)
    if math.isinf(x) or x != int(x):
        fraction = 0 < x < 1 and not is_label
        scaled = "; pixels scaled to [0, 1]? save them as integers 0-255 (x 255, rounded)" if fraction else ""
        return f"expected an integer {'0-9' if is_label else '0-255'}, got {shown!r}{scaled}"
    high = 9 if is_label else 255
    if not 0 <= x <= high:
        what = "label" if is_label else "pixel"
        return f"{what} {value.strip()} out of range, expected 0-{high}"
    return None


def _diagnose(info: KaggleCsvInfo, fallback: str) -> CsvFormatError:
    """Scan the file line by line and describe its first bad cell.

    Used only after the fast parser failed, so its speed does not matter.
    """
    names = ((LABEL_COLUMN,) if info.has_labels else ()) + PIXEL_COLUMNS
    path = str(info.path)
    with _open_binary(info.path) as fh:
        line_no = 0
        lines = iter(fh)
        while True:
            try:
                raw = next(lines)
            except StopIteration:
                break
            except _GZIP_ERRORS as exc:
                what = "damaged or truncated gzip data" if info.compressed else "cannot read"
                return CsvFormatError(path, line_no + 1, None, f"{what} ({exc})")
            line_no += 1
            if line_no == 1 and info.header:
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                return CsvFormatError(path, line_no, None, "line is not UTF-8 text")
            text = text.rstrip("\r\n")
            if not text.strip():
                continue
            try:
                fields = next(csv.reader([text]), [])
            except csv.Error as exc:
                return CsvFormatError(path, line_no, None, f"cannot split into fields ({exc})")
            for col, (name, value) in enumerate(zip(names, fields, strict=False)):
                problem = _check_cell(value, is_label=info.has_labels and col == 0)
                if problem:
                    return CsvFormatError(path, line_no, name, problem)
            if len(fields) != len(names):
                column = names[len(fields)] if len(fields) < len(names) else None
                return CsvFormatError(path, line_no, column, f"expected {len(names)} fields, got {len(fields)}")
    return CsvFormatError(path, None, None, f"cannot parse: {fallback}")


# Every data row has 784 (test) or 785 (train) fields of at least one character,
# each followed by a separator, so no row is shorter than this many bytes.
_MIN_ROW_BYTES = 2 * len(PIXEL_COLUMNS)


def raw_blocks(info: KaggleCsvInfo, rows: int) -> Iterator[bytes]:
    """The file's data lines (after the header), in blocks of whole lines.

    Each block holds about ``rows`` rows (at most ``rows + 1`` of valid length)
    and ends with a newline; one is added after a last line that lacks it.
    Reading raw bytes costs little; :func:`parse_block` turns a block into
    pixels, so callers can parse blocks on other threads.

    Raises:
        CsvFormatError: If the file cannot be read (damaged gzip data, say).
    """
    size = max(1, rows) * _MIN_ROW_BYTES
    with _open_binary(info.path) as fh:
        try:
            if info.header:
                fh.readline()  # the header, checked by inspect_kaggle_csv
            rest = b""
            while True:
                data = fh.read(size)
                if not data:
                    break
                buffer = rest + data if rest else data
                cut = buffer.rfind(b"\n") + 1
                rest = buffer[cut:]
                if cut:
                    yield buffer[:cut]
        except _GZIP_ERRORS as exc:
            raise _diagnose(
                info, f"{'damaged or truncated gzip data' if info.compressed else 'cannot read'} ({exc})"
            ) from None
    if rest:
        yield rest + b"\n"


def parse_block(info: KaggleCsvInfo, data: bytes) -> DigitBatch:
    """Turn a block from :func:`raw_blocks` into a :class:`DigitBatch` (``first_row`` 0: callers number the rows).

    Raises:
        CsvFormatError: If the block has a bad cell; the message names the
            file's first bad line and column (found by scanning the file).
    """
    columns = len(PIXEL_COLUMNS) + (1 if info.has_labels else 0)
    try:
        values = parse_plain(data, columns)
        if values is None:
            values = parse_pandas(data, columns)
        if info.has_labels:
            labels = np.ascontiguousarray(values[:, 0])
            if labels.size and labels.max() > 9:
                raise ValueError("label out of range")
            pixels = np.ascontiguousarray(values[:, 1:])
        else:
            labels, pixels = None, values
    except _PARSE_ERRORS as exc:
        raise _diagnose(info, str(exc)) from None
    if info.invert:
        pixels = np.subtract(np.uint8(255), pixels, dtype=pixels.dtype)
    return DigitBatch(pixels.reshape(-1, 28, 28, 1), labels)


_PARSE_ERRORS = (ValueError, OverflowError, pd.errors.ParserError, UnicodeDecodeError, *_GZIP_ERRORS)


def iter_kaggle_csv(
    path: str | os.PathLike[str] | KaggleCsvInfo, *, chunk_rows: int = DEFAULT_CHUNK_ROWS, require_labels: bool = False
) -> Iterator[DigitBatch]:
    """Stream a Kaggle CSV in batches of at most ``chunk_rows`` rows.

    Memory stays proportional to ``chunk_rows`` however large the file.  The
    header is checked before the first batch is produced; a bad cell further
    down raises when its chunk is reached, so callers that write output must
    write it atomically.

    Args:
        path: A train.csv or test.csv, plain or gzip-compressed (or what
            :func:`inspect_kaggle_csv` said about one).
        chunk_rows: Rows per batch (at least 1).
        require_labels: Fail unless the file has a ``label`` column.

    Yields:
        :class:`DigitBatch` objects, in file order.

    Raises:
        CsvFormatError: With file, line and column, on any malformed input.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    info = path if isinstance(path, KaggleCsvInfo) else inspect_kaggle_csv(path)
    if require_labels and not info.has_labels:
        raise CsvFormatError(
            str(info.path), 1, None, "expected a training file with a 'label' first column, got pixel columns only"
        )
    return _iter(info, chunk_rows)


def _iter(info: KaggleCsvInfo, chunk_rows: int | None) -> Iterator[DigitBatch]:
    """Parse block after block; with ``chunk_rows``, re-cut them into batches of exactly that many rows."""
    row = 0
    pending: list[DigitBatch] = []
    pending_rows = 0
    for data in raw_blocks(info, chunk_rows or _WHOLE_FILE_BLOCK_ROWS):
        batch = parse_block(info, data)
        if chunk_rows is None:
            if len(batch):
                yield DigitBatch(batch.images, batch.labels, row)
                row += len(batch)
            continue
        pending.append(batch)
        pending_rows += len(batch)
        while pending_rows >= chunk_rows:
            out, pending = _take_rows(pending, chunk_rows)
            pending_rows -= chunk_rows
            yield DigitBatch(out.images, out.labels, row)
            row += chunk_rows
    if pending_rows:
        out, _ = _take_rows(pending, pending_rows)
        yield DigitBatch(out.images, out.labels, row)
        row += pending_rows
    if row == 0:
        raise CsvFormatError(str(info.path), None, None, "has a header but no data rows")


def _take_rows(batches: list[DigitBatch], rows: int) -> tuple[DigitBatch, list[DigitBatch]]:
    """The first ``rows`` rows of ``batches`` as one batch, and what is left."""
    taken: list[DigitBatch] = []
    need = rows
    while need:
        head = batches[0]
        if len(head) <= need:
            taken.append(head)
            batches = batches[1:]
            need -= len(head)
        else:
            labels = head.labels
            taken.append(DigitBatch(head.images[:need], None if labels is None else labels[:need]))
            batches = [DigitBatch(head.images[need:], None if labels is None else labels[need:]), *batches[1:]]
            need = 0
    if len(taken) == 1:
        return taken[0], batches
    labels = None if taken[0].labels is None else np.concatenate([b.labels for b in taken])
    return DigitBatch(np.concatenate([b.images for b in taken]), labels), batches


def read_kaggle_csv(path: str | os.PathLike[str], *, require_labels: bool = False) -> DigitBatch:
    """Read a whole Kaggle CSV into memory.

    Args:
        path: A train.csv or test.csv, plain or gzip-compressed.
        require_labels: Fail unless the file has a ``label`` column.

    Returns:
        One :class:`DigitBatch` holding every row.

    Raises:
        CsvFormatError: With file, line and column, on any malformed input.
    """
    info = inspect_kaggle_csv(path)
    if require_labels and not info.has_labels:
        raise CsvFormatError(
            str(info.path), 1, None, "expected a training file with a 'label' first column, got pixel columns only"
        )
    batches = list(_iter(info, None))
    return _take_rows(batches, sum(len(b) for b in batches))[0]
