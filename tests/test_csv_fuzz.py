"""Property-based tests of the Kaggle CSV reader (hypothesis).

Each example builds a small Kaggle CSV of real-looking rows, spells it in one
of the ways a valid file can be spelt (BOM, CRLF, gzip, blank lines, quotes,
padding, integral floats) and optionally breaks exactly one thing in it.  The
reader must then either return exactly the pixels and labels that were written,
or raise CsvFormatError naming the right line and column — never another
exception type, never partial data.  Examples per test: the "ci" profile's
max_examples (300), or HYPOTHESIS_EXAMPLES from the environment.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="needs the 'dev' extra")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mnist_onnx.errors import CsvFormatError  # noqa: E402
from mnist_onnx.runtime.kaggle_csv import PIXEL_COLUMNS, iter_kaggle_csv, read_kaggle_csv  # noqa: E402

EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "300"))
settings.register_profile("ci", max_examples=EXAMPLES, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile("ci")

VALID_SPELLINGS = ["plain", "bom", "crlf", "gzip", "blank_lines", "quotes", "padding", "integral_float"]
# (name, replacement text or None for structural changes, expected words in the message)
CORRUPTIONS = [
    ("text", "abc", "expected an integer"),
    ("fraction", "3.5", "expected an integer"),
    ("negative", "-4", "out of range"),
    ("too_big", "256", "out of range"),
    ("nan", "nan", "expected an integer"),
    ("empty", "", "missing value"),
    ("hex", "0x10", "expected an integer"),
    ("truncated_row", None, "fields, got"),
    ("extra_field", None, "fields, got"),
]


@st.composite
def kaggle_files(draw):
    n_rows = draw(st.integers(1, 6))
    with_labels = draw(st.booleans())
    pixels = draw(st.lists(st.lists(st.integers(0, 255), min_size=784, max_size=784), min_size=n_rows, max_size=n_rows))
    labels = draw(st.lists(st.integers(0, 9), min_size=n_rows, max_size=n_rows))
    spelling = draw(st.sampled_from(VALID_SPELLINGS))
    corruption = draw(st.none() | st.sampled_from(CORRUPTIONS))
    row = draw(st.integers(0, n_rows - 1))
    col = draw(st.integers(0, 784 if with_labels else 783))
    chunk_rows = draw(st.integers(1, 7))
    return n_rows, with_labels, pixels, labels, spelling, corruption, row, col, chunk_rows


def _build(n_rows, with_labels, pixels, labels, spelling, corruption, row, col):
    names = (["label"] if with_labels else []) + list(PIXEL_COLUMNS)
    rows = [([str(lab)] if with_labels else []) + [str(v) for v in px] for px, lab in zip(pixels, labels)]
    expected_error = None
    if corruption is not None:
        kind, text, words = corruption
        if kind == "truncated_row":
            rows[row] = rows[row][:col]
            expected_error = (row, names[col], words)
        elif kind == "extra_field":
            rows[row] = rows[row] + ["0"]
            expected_error = (row, None, words)
        else:
            if kind == "too_big" and with_labels and col == 0:
                text = "10"  # labels stop at 9
            rows[row][col] = text
            expected_error = (row, names[col], words)
    if spelling == "quotes":
        rows = [[f'"{v}"' for v in r] for r in rows]
    elif spelling == "padding":
        rows = [[f" {v} " if v else v for v in r] for r in rows]
    elif spelling == "integral_float":
        rows = [[f"{v}.0" if v.isdigit() else v for v in r] for r in rows]
    lines = [",".join(names)] + [",".join(r) for r in rows]
    line_of_row = list(range(2, len(lines) + 1))
    if spelling == "blank_lines":
        spaced = [lines[0]]
        line_of_row = []
        for body in lines[1:]:
            spaced += ["", body]
            line_of_row.append(len(spaced))
        lines = spaced + [""]
    newline = "\r\n" if spelling == "crlf" else "\n"
    text = newline.join(lines) + newline
    if spelling == "bom":
        text = "\ufeff" + text
    data = text.encode()
    if spelling == "gzip":
        data = gzip.compress(data)
    if expected_error is not None:
        r, column, words = expected_error
        expected_error = (line_of_row[r], column, words)
    return data, expected_error


@given(case=kaggle_files())
def test_reader_returns_exact_data_or_names_the_bad_cell(tmp_path_factory, case) -> None:
    n_rows, with_labels, pixels, labels, spelling, corruption, row, col, chunk_rows = case
    data, expected_error = _build(n_rows, with_labels, pixels, labels, spelling, corruption, row, col)
    path = tmp_path_factory.mktemp("fuzz") / "digits.csv"
    path.write_bytes(data)
    for read in (lambda: [read_kaggle_csv(path)], lambda: list(iter_kaggle_csv(path, chunk_rows=chunk_rows))):
        if expected_error is None:
            batches = read()
            images = np.concatenate([b.images for b in batches])
            np.testing.assert_array_equal(images.reshape(n_rows, 784), np.array(pixels, dtype=np.uint8))
            if with_labels:
                np.testing.assert_array_equal(np.concatenate([b.labels for b in batches]), labels)
            else:
                assert all(b.labels is None for b in batches)
        else:
            line, column, words = expected_error
            with pytest.raises(CsvFormatError) as info:
                read()
            assert (info.value.path, info.value.line, info.value.column) == (str(path), line, column), str(info.value)
            assert words in str(info.value)


@given(garbage=st.binary(max_size=2000), prefix_header=st.booleans())
def test_arbitrary_bytes_never_crash(tmp_path_factory, garbage: bytes, prefix_header: bool) -> None:
    path = tmp_path_factory.mktemp("junk") / "junk.csv"
    path.write_bytes((",".join(PIXEL_COLUMNS).encode() + b"\n" if prefix_header else b"") + garbage)
    try:
        batch = read_kaggle_csv(path)
    except CsvFormatError:
        return
    assert batch.images.dtype == np.uint8 and batch.images.shape[1:] == (28, 28, 1)


def test_many_rows_stream_in_bounded_chunks(tmp_path: Path, train_sample: Path) -> None:
    """20,000 real rows (the sample 20 times) stream in chunks no larger than asked, in order."""
    raw = gzip.decompress(train_sample.read_bytes()).decode().splitlines()
    header, body = raw[0], raw[1:]
    path = tmp_path / "big.csv.gz"
    path.write_bytes(gzip.compress(("\n".join([header] + body * 20) + "\n").encode(), compresslevel=1))
    total, sizes, first_rows = 0, [], []
    expected_labels = np.array([int(line.split(",", 1)[0]) for line in body] * 20)
    for batch in iter_kaggle_csv(path, chunk_rows=3000):
        sizes.append(len(batch))
        first_rows.append(batch.first_row)
        np.testing.assert_array_equal(batch.labels, expected_labels[batch.first_row:batch.first_row + len(batch)])
        total += len(batch)
    assert total == 20_000 and max(sizes) == 3000 and first_rows == list(range(0, 20_000, 3000))
