"""The shared Kaggle CSV reader: real digits in, uint8 out; bad input named by file, line and column."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import pytest

from mnist_onnx.errors import CsvFormatError
from mnist_onnx.runtime.kaggle_csv import PIXEL_COLUMNS, iter_kaggle_csv, read_kaggle_csv

HEADER_TEST = ",".join(PIXEL_COLUMNS)
HEADER_TRAIN = "label," + HEADER_TEST


def _naive_parse(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """An independent reading of a gzipped train-format CSV with the csv module."""
    with gzip.open(path, "rt", newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    arr = np.array(rows, dtype=np.int64)
    return arr[:, 1:].reshape(-1, 28, 28, 1), arr[:, 0]


@pytest.fixture(scope="module")
def sample_rows(train_sample: Path) -> list[list[int]]:
    with gzip.open(train_sample, "rt", newline="") as fh:
        return [list(map(int, r)) for r in list(csv.reader(fh))[1:21]]


def _write(tmp_path: Path, text: str, name: str = "in.csv", *, gz: bool = False, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    data = text.encode(encoding)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def _csv_text(rows: list[list[int]], *, labels: bool = True, newline: str = "\n") -> str:
    header = HEADER_TRAIN if labels else HEADER_TEST
    body = [",".join(map(str, r if labels else r[1:])) for r in rows]
    return newline.join([header, *body]) + newline


def test_reads_real_sample_exactly(train_sample: Path) -> None:
    batch = read_kaggle_csv(train_sample, require_labels=True)
    images, labels = _naive_parse(train_sample)
    assert batch.images.dtype == np.uint8 and batch.images.shape == (1000, 28, 28, 1)
    assert batch.labels is not None and batch.labels.dtype == np.uint8
    np.testing.assert_array_equal(batch.images, images)
    np.testing.assert_array_equal(batch.labels, labels)
    assert set(np.unique(batch.labels)) == set(range(10))


def test_test_format_has_no_labels(tmp_path: Path, sample_rows) -> None:
    batch = read_kaggle_csv(_write(tmp_path, _csv_text(sample_rows, labels=False)))
    assert batch.labels is None
    np.testing.assert_array_equal(batch.images.reshape(len(sample_rows), 784), np.array(sample_rows)[:, 1:])


@pytest.mark.parametrize(
    "variant",
    ["plain", "gzip-without-.gz-name", "bom", "crlf", "blank-lines", "quoted", "integral-floats", "trailing-blank"],
)
def test_valid_spellings_read_identically(tmp_path: Path, sample_rows, variant: str) -> None:
    text = _csv_text(sample_rows)
    gz = False
    if variant == "gzip-without-.gz-name":
        gz = True
    elif variant == "bom":
        text = "\ufeff" + text
    elif variant == "crlf":
        text = _csv_text(sample_rows, newline="\r\n")
    elif variant == "blank-lines":
        lines = text.splitlines()
        text = "\n".join(lines[:3] + [""] + lines[3:]) + "\n"
    elif variant == "quoted":
        text = text.replace(",0,", ',"0",', 1)
    elif variant == "integral-floats":
        text = text.replace(",0,", ",0.0,", 3)
    elif variant == "trailing-blank":
        text += "\n\n"
    batch = read_kaggle_csv(_write(tmp_path, text, gz=gz))
    expected = np.array(sample_rows)
    np.testing.assert_array_equal(batch.labels, expected[:, 0])
    np.testing.assert_array_equal(batch.images.reshape(len(expected), 784), expected[:, 1:])


def test_chunks_equal_one_shot(train_sample: Path) -> None:
    whole = read_kaggle_csv(train_sample)
    chunks = list(iter_kaggle_csv(train_sample, chunk_rows=333))
    assert [len(c) for c in chunks] == [333, 333, 333, 1]
    assert [c.first_row for c in chunks] == [0, 333, 666, 999]
    np.testing.assert_array_equal(np.concatenate([c.images for c in chunks]), whole.images)
    np.testing.assert_array_equal(np.concatenate([c.labels for c in chunks]), whole.labels)


def _replace_cell(rows: list[list[int]], row: int, col: int, value: str) -> str:
    text_rows = [[str(v) for v in r] for r in rows]
    text_rows[row][col] = value
    return "\n".join([HEADER_TRAIN, *(",".join(r) for r in text_rows)]) + "\n"


# (description, builder(rows) -> text, expected line, expected column, words in the message)
BAD_CELLS = [
    ("non-integer", lambda r: _replace_cell(r, 4, 300, "abc"), 6, "pixel299", "expected an integer"),
    ("fraction", lambda r: _replace_cell(r, 0, 1, "12.5"), 2, "pixel0", "expected an integer"),
    # pixels scaled to [0, 1] (df / 255 saved back): the message says how to fix the file
    ("scaled to 0-1", lambda r: _replace_cell(r, 2, 300, "0.5803921568627451"), 4, "pixel299", "x 255"),
    ("too large", lambda r: _replace_cell(r, 9, 784, "256"), 11, "pixel783", "out of range"),
    ("negative", lambda r: _replace_cell(r, 2, 10, "-1"), 4, "pixel9", "out of range"),
    ("NaN", lambda r: _replace_cell(r, 3, 5, "NaN"), 5, "pixel4", "expected an integer"),
    ("empty cell", lambda r: _replace_cell(r, 7, 8, ""), 9, "pixel7", "missing value"),
    ("label 10", lambda r: _replace_cell(r, 5, 0, "10"), 7, "label", "out of range"),
    ("label -3", lambda r: _replace_cell(r, 5, 0, "-3"), 7, "label", "out of range"),
    ("huge", lambda r: _replace_cell(r, 1, 3, "99999999999999999999"), 3, "pixel2", "out of range"),
]


@pytest.mark.parametrize("case", BAD_CELLS, ids=[c[0] for c in BAD_CELLS])
def test_bad_cell_names_file_line_column(tmp_path: Path, sample_rows, case) -> None:
    _, build, line, column, words = case
    path = _write(tmp_path, build(sample_rows))
    with pytest.raises(CsvFormatError) as info:
        read_kaggle_csv(path)
    err = info.value
    assert isinstance(err, ValueError)
    assert (err.path, err.line, err.column) == (str(path), line, column)
    assert words in str(err) and str(path) in str(err) and f"line {line}" in str(err)


def test_bad_cell_in_a_later_chunk_and_after_blank_lines(tmp_path: Path, sample_rows) -> None:
    text = _replace_cell(sample_rows, 15, 100, "x")
    lines = text.splitlines()
    text = "\n".join(lines[:2] + ["", ""] + lines[2:]) + "\n"  # two blank lines shift the real line numbers
    path = _write(tmp_path, text)
    with pytest.raises(CsvFormatError) as info:
        for _ in iter_kaggle_csv(path, chunk_rows=4):
            pass
    assert (info.value.line, info.value.column) == (19, "pixel99")


@pytest.mark.parametrize(
    "mutate, line, column, words",
    [
        (lambda lines: lines[:5] + [lines[5] + ",7"] + lines[6:], 6, None, "expected 785 fields, got 786"),
        (
            lambda lines: lines[:5] + [lines[5].rsplit(",", 10)[0]] + lines[6:],
            6,
            "pixel774",
            "expected 785 fields, got 775",
        ),
        (lambda lines: [lines[0]] + [ln + ",0" for ln in lines[1:]], 2, None, "expected 785 fields, got 786"),
    ],
    ids=["one-long-row", "truncated-row", "every-row-long"],
)
def test_wrong_field_counts(tmp_path: Path, sample_rows, mutate, line, column, words) -> None:
    lines = _csv_text(sample_rows).splitlines()
    path = _write(tmp_path, "\n".join(mutate(lines)) + "\n")
    with pytest.raises(CsvFormatError) as info:
        read_kaggle_csv(path)
    assert (info.value.line, info.value.column) == (line, column)
    assert words in str(info.value)


@pytest.mark.parametrize(
    "pixel_names",
    [
        [f"{row}x{col}" for row in range(1, 29) for col in range(1, 29)],  # the widely shared "MNIST in CSV"
        [f"pixel{i}" for i in range(1, 785)],  # 1-based pixel names
    ],
    ids=["row-x-column", "one-based"],
)
@pytest.mark.parametrize("labels", [True, False])
def test_other_common_headers_are_read_with_a_note(tmp_path: Path, sample_rows, pixel_names, labels: bool) -> None:
    # These headers name the same row-major pixels; they used to be refused ("expected header column 'pixel0'").
    header = ",".join((["label"] if labels else []) + pixel_names)
    path = _write(tmp_path, "\n".join([header, *_csv_text(sample_rows, labels=labels).splitlines()[1:]]) + "\n")
    batch = read_kaggle_csv(path)
    expected = read_kaggle_csv(_write(tmp_path, _csv_text(sample_rows, labels=labels), "kaggle.csv"))
    np.testing.assert_array_equal(batch.images, expected.images)
    assert (batch.labels is None) == (not labels)
    if labels:
        np.testing.assert_array_equal(batch.labels, expected.labels)


@pytest.mark.parametrize(
    "header, column, words",
    [
        (HEADER_TRAIN.replace("pixel5,", "pixel6,", 1), "7 ('pixel6')", "expected header column 'pixel5'"),
        ("label," + ",".join(PIXEL_COLUMNS[:700]), None, "expected 785 header columns"),
        (HEADER_TEST + ",extra", None, "first extra column 'extra'"),
        ("Label," + HEADER_TEST, "1 ('Label')", "expected header column 'pixel0'"),
        ("1,2,3", "1 ('1')", "expected header column 'pixel0'"),
    ],
    ids=["renamed", "missing-columns", "extra-column", "capitalised-label", "no-header"],
)
def test_bad_header(tmp_path: Path, sample_rows, header: str, column, words: str) -> None:
    body = _csv_text(sample_rows).splitlines()[1:]
    path = _write(tmp_path, "\n".join([header, *body]) + "\n")
    with pytest.raises(CsvFormatError) as info:
        read_kaggle_csv(path)
    assert (info.value.line, info.value.column) == (1, column)
    assert words in str(info.value)


def test_empty_and_header_only_files(tmp_path: Path) -> None:
    with pytest.raises(CsvFormatError, match="file is empty"):
        read_kaggle_csv(_write(tmp_path, "", "empty.csv"))
    with pytest.raises(CsvFormatError, match="header but no data rows"):
        read_kaggle_csv(_write(tmp_path, HEADER_TEST + "\n", "header.csv"))
    with pytest.raises(CsvFormatError, match="header but no data rows"):
        list(iter_kaggle_csv(_write(tmp_path, HEADER_TRAIN + "\n\n", "header2.csv")))


def test_missing_file_directory_and_labels_required(tmp_path: Path, sample_rows) -> None:
    with pytest.raises(CsvFormatError, match="no such file"):
        read_kaggle_csv(tmp_path / "nope.csv")
    with pytest.raises(CsvFormatError, match="is a directory"):
        read_kaggle_csv(tmp_path)
    test_file = _write(tmp_path, _csv_text(sample_rows, labels=False))
    with pytest.raises(CsvFormatError, match="expected a training file"):
        read_kaggle_csv(test_file, require_labels=True)


def test_non_utf8_line(tmp_path: Path, sample_rows) -> None:
    text = _csv_text(sample_rows).encode()
    lines = text.split(b"\n")
    lines[3] = lines[3].replace(b",0,", b",\xff\xfe,", 1)
    path = tmp_path / "latin.csv"
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(CsvFormatError) as info:
        read_kaggle_csv(path)
    assert info.value.line == 4


# -- the numpy fast path and the raw blocks -----------------------------------------


def _pandas_reading(data: bytes, columns: int) -> np.ndarray | None:
    """What pandas' C parser makes of a block (header-less), or None where it fails or is not 0-255 integers."""
    import io

    import pandas as pd

    try:
        frame = pd.read_csv(io.BytesIO(data), header=None, dtype=str, keep_default_na=False, skip_blank_lines=False)
    except Exception:  # noqa: BLE001 - any failure counts as "pandas does not read it as plain integers"
        return None
    if frame.shape[1] != columns or not isinstance(frame.index, pd.RangeIndex):
        return None
    cells = frame.to_numpy()
    if not all(c.isascii() and c.isdigit() for c in cells.ravel()):
        return None
    values = cells.astype(np.int64)
    return values.astype(np.uint8) if values.size and values.max() <= 255 else None


def test_fast_path_takes_the_common_spellings() -> None:
    from mnist_onnx.runtime.csv_parse import parse_plain

    expected = np.array([[0, 7, 255], [10, 99, 100]], dtype=np.uint8)
    for newline in ("\n", "\r\n"):
        for text in ("0,7,255{n}10,99,100{n}", "000,007,255{n}10,099,100{n}"):
            got = parse_plain(text.format(n=newline).encode(), 3)
            assert got is not None, (text, newline)
            np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    "text",
    [
        "0,7,256\n",
        "0,7,-1\n",
        "0,7,1.0\n",
        "0,7, 1\n",
        "0,7,\n",
        "0,7\n",
        "0,7,1,2\n",
        "0,7,1",
        "0,7,1\r\n0,7,1\n",
        "0,7,1\n\n",
        '0,7,"1"\n',
        "0,7,1e2\n",
        "0,7,1234\n",
        "0,7,x\n",
        "0;7;1\n",
        "0,7,1\r",
        "\n",
    ],
)
def test_fast_path_declines_every_other_spelling(text: str) -> None:
    # Declined blocks go to pandas (and to the line-by-line scan when pandas fails too).
    from mnist_onnx.runtime.csv_parse import parse_plain

    assert parse_plain(text.encode(), 3) is None


hypothesis = pytest.importorskip("hypothesis", reason="needs the 'test' extra: pip install 'mnist-onnx[test]'")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_CELL = st.one_of(
    st.integers(0, 300).map(str),
    st.integers(0, 9).map(lambda d: "00" + str(d)),
    st.text(alphabet='0123456789,\r\n -+.e"x', max_size=4),
)


@settings(max_examples=400, deadline=None)
@given(
    rows=st.lists(st.lists(_CELL, min_size=2, max_size=4), min_size=1, max_size=4),
    newline=st.sampled_from(["\n", "\r\n"]),
)
def test_fast_path_agrees_with_pandas_or_declines(rows, newline) -> None:
    """Whenever the numpy path returns values, pandas reads the same bytes as the same integers."""
    from mnist_onnx.runtime.csv_parse import parse_plain

    data = "".join(",".join(r) + newline for r in rows).encode()
    got = parse_plain(data, 3)
    if got is not None:
        expected = _pandas_reading(data, 3)
        assert expected is not None, data
        np.testing.assert_array_equal(got, expected)


def test_raw_blocks_are_whole_lines_that_rebuild_the_file(tmp_path: Path, sample_rows) -> None:
    from mnist_onnx.runtime.kaggle_csv import inspect_kaggle_csv, raw_blocks

    text = _csv_text(sample_rows)
    for ending in ("", "no newline at the end"):
        path = _write(tmp_path, text.rstrip("\n") if ending else text)
        blocks = list(raw_blocks(inspect_kaggle_csv(path), rows=3))
        assert len(blocks) > 3 and all(b.endswith(b"\n") for b in blocks)
        assert b"".join(blocks).decode() == text.split("\n", 1)[1]


def test_gzipped_csv_is_closed_after_reading(train_sample: Path) -> None:
    # gzip.GzipFile(fileobj=...) leaves the file it was given open: each gzipped read used to leak one,
    # which `mnist-onnx predict` then printed as a warning about an unclosed file.
    import gc
    import warnings

    from mnist_onnx.runtime.kaggle_csv import inspect_kaggle_csv

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inspect_kaggle_csv(train_sample)
        assert len(read_kaggle_csv(train_sample).images) == 1000
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == []
