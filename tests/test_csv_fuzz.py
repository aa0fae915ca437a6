"""Property-based tests of the Kaggle CSV reader (hypothesis).

Each example builds a small Kaggle CSV of real-looking rows, spells it in one
of the ways a valid file can be spelt (BOM, CRLF, gzip, blank lines, quotes,
padding, integral floats) and optionally breaks exactly one thing in it.  The
reader must then either return exactly the pixels and labels that were written,
or raise CsvFormatError naming the right line and column — never another
exception type, never partial data.  The same files also go end to end through
``predict_csv(..., output=...)`` in chunked mode: the submission must hold the
model's predictions for exactly those pixels, or the error must leave the
previous submission untouched and no temporary file behind.

Examples per test: the "ci" profile's max_examples (300), or
HYPOTHESIS_EXAMPLES from the environment.  Each test counts the inputs it
really tried, prints the count (visible with ``pytest -s``), records it as the
junit property ``hypothesis_examples``, and fails if hypothesis ran fewer than
the profile asked for.
"""

from __future__ import annotations

import csv
import gzip
import os
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="needs the 'test' extra: pip install 'mnist-onnx[test]'")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mnist_onnx.errors import CsvFormatError  # noqa: E402
from mnist_onnx.runtime.kaggle_csv import PIXEL_COLUMNS, iter_kaggle_csv, read_kaggle_csv  # noqa: E402
from mnist_onnx.runtime.predictor import DigitClassifier  # noqa: E402

EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "300"))
settings.register_profile(
    "ci",
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("ci")

VALID_SPELLINGS = ["plain", "bom", "crlf", "gzip", "blank_lines", "quotes", "padding", "integral_float"]
# (name, replacement text or None for structural changes, expected words in the message)
CORRUPTIONS = [
    ("text", "abc", "expected an integer"),
    ("stray_quote", '7"', "expected an integer"),
    ("underscore", "1_0", "expected an integer"),  # float() accepts it, pandas does not
    ("arabic_digit", "\u0663", "expected an integer"),
    ("infinity", "inf", "expected an integer"),
    ("fraction", "3.5", "expected an integer"),
    ("negative", "-4", "out of range"),
    ("too_big", "256", "out of range"),
    ("nan", "nan", "expected an integer"),
    ("empty", "", "missing value"),
    ("hex", "0x10", "expected an integer"),
    ("truncated_row", None, "fields, got"),
    ("extra_field", None, "fields, got"),
]


_RANDOM_IMAGE = st.lists(st.integers(0, 255), min_size=784, max_size=784)


@st.composite
def kaggle_files(draw, images=_RANDOM_IMAGE):
    n_rows = draw(st.integers(1, 6))
    with_labels = draw(st.booleans())
    pixels = draw(st.lists(images, min_size=n_rows, max_size=n_rows))
    labels = draw(st.lists(st.integers(0, 9), min_size=n_rows, max_size=n_rows))
    spelling = draw(st.sampled_from(VALID_SPELLINGS))
    corruption = draw(st.none() | st.sampled_from(CORRUPTIONS))
    row = draw(st.integers(0, n_rows - 1))
    col = draw(st.integers(0, 784 if with_labels else 783))
    chunk_rows = draw(st.integers(1, 7))
    return n_rows, with_labels, pixels, labels, spelling, corruption, row, col, chunk_rows


def _build(n_rows, with_labels, pixels, labels, spelling, corruption, row, col):
    names = (["label"] if with_labels else []) + list(PIXEL_COLUMNS)
    rows = [([str(lab)] if with_labels else []) + [str(v) for v in px] for px, lab in zip(pixels, labels, strict=False)]
    expected_error = None
    if corruption is not None:
        kind, text, words = corruption
        if kind == "truncated_row":
            kept = max(col, 1)  # a row cut to no field at all is a blank line, which the reader skips by design
            rows[row] = rows[row][:kept]
            expected_error = (row, names[kept], words)
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
        np.testing.assert_array_equal(batch.labels, expected_labels[batch.first_row : batch.first_row + len(batch)])
        total += len(batch)
    assert total == 20_000 and max(sizes) == 3000 and first_rows == list(range(0, 20_000, 3000))


def _count_examples(record_property, name: str, tried: int) -> None:
    """Record how many inputs a property test tried, and insist hypothesis ran them all."""
    record_property("hypothesis_examples", tried)
    print(f"{name}: {tried} hypothesis examples")
    assert tried >= settings.default.max_examples, f"hypothesis stopped after {tried} examples"


# Real held-out digits: the predictions are then worth comparing, and drawing a
# row index is far cheaper than drawing 784 random pixels.
_REAL_IMAGES = read_kaggle_csv(Path(__file__).resolve().parents[1] / "mnist_onnx/runtime/bundled/sample.csv.gz").images
_REAL_IMAGE = st.integers(0, len(_REAL_IMAGES) - 1).map(lambda i: _REAL_IMAGES[i].reshape(784).tolist())


@pytest.fixture(scope="module")
def bundled_int8() -> DigitClassifier:
    """The bundled int8 model: the fastest real classifier, so hundreds of end-to-end runs stay cheap."""
    return DigitClassifier(precision="int8", providers="cpu", threads=1)


def test_predict_csv_writes_the_right_submission_or_nothing(tmp_path_factory, bundled_int8, record_property) -> None:
    tried = 0

    @given(case=kaggle_files(images=_REAL_IMAGE), batch_size=st.integers(1, 8), overlap_reading=st.booleans())
    def check(case, batch_size: int, overlap_reading: bool) -> None:
        nonlocal tried
        tried += 1
        n_rows, with_labels, pixels, labels, spelling, corruption, row, col, chunk_rows = case
        data, expected_error = _build(n_rows, with_labels, pixels, labels, spelling, corruption, row, col)
        folder = tmp_path_factory.mktemp("e2e")
        path, out = folder / "digits.csv", folder / "submission.csv"
        path.write_bytes(data)
        out.write_text("previous submission\n")
        run = lambda: bundled_int8.predict_csv(  # noqa: E731
            path, output=out, chunk_rows=chunk_rows, batch_size=batch_size, overlap_reading=overlap_reading
        )
        if expected_error is None:
            frame = run()
            images = np.array(pixels, dtype=np.uint8).reshape(n_rows, 28, 28)
            expected = bundled_int8.predict(images)
            written = out.read_text().splitlines()
            assert written[0] == "ImageId,Label" and len(written) == n_rows + 1
            assert [line.split(",") for line in written[1:]] == [[str(i + 1), str(d)] for i, d in enumerate(expected)]
            np.testing.assert_array_equal(frame["Label"], expected)
        else:
            line, column, words = expected_error
            with pytest.raises(CsvFormatError) as info:
                run()
            assert (info.value.line, info.value.column) == (line, column), str(info.value)
            assert words in str(info.value)
            assert out.read_text() == "previous submission\n"
        assert sorted(p.name for p in folder.iterdir()) == ["digits.csv", "submission.csv"], "a temporary file was left"

    check()
    _count_examples(record_property, "predict_csv end to end", tried)


# Cell spellings: digits, signs, points, exponents, padding, quotes, and the
# characters Python's float() accepts but pandas does not (underscore, non-ASCII digits).
_CELL_ALPHABET = '0123456789+-.eE_ x"\u0663\uff11'


def test_any_cell_text_is_read_as_its_number_or_named(tmp_path_factory, record_property) -> None:
    """One arbitrary cell in an otherwise valid file: read as the number it spells, or an error at that cell."""
    tried = 0

    @given(cell=st.text(alphabet=_CELL_ALPHABET, max_size=8), col=st.integers(0, 783))
    def check(cell: str, col: int) -> None:
        nonlocal tried
        tried += 1
        cells = ["0"] * 784
        cells[col] = cell
        path = tmp_path_factory.mktemp("cell") / "test.csv"
        path.write_text(",".join(PIXEL_COLUMNS) + "\n" + ",".join(cells) + "\n" + ",".join(["1"] * 784) + "\n")
        try:
            batch = read_kaggle_csv(path)
        except CsvFormatError as exc:
            assert (exc.line, exc.column) == (2, PIXEL_COLUMNS[col]), str(exc)
            return
        # What the cell spells as a CSV field ('"1"2' is the field 12, as Python's csv module reads it too).
        value = float(next(csv.reader([cell]))[0].strip())
        assert batch.images.reshape(2, 784)[0, col] == value, (cell, batch.images.reshape(2, 784)[0, col])
        assert 0 <= value <= 255 and value == int(value)

    check()
    _count_examples(record_property, "one arbitrary cell", tried)


def test_many_rows_in_chunked_mode_end_to_end(tmp_path: Path, holdout_sample: Path, bundled_int8) -> None:
    """4,000 real rows through predict_csv in 14 chunks: the same submission as the in-memory path, and a
    bad cell in the last chunk leaves the previous submission."""
    raw = gzip.decompress(holdout_sample.read_bytes()).decode().splitlines()
    header, body = raw[0], raw[1:]
    rows = body * 4
    good, out = tmp_path / "big.csv.gz", tmp_path / "submission.csv"
    good.write_bytes(gzip.compress(("\n".join([header] + rows) + "\n").encode(), compresslevel=1))
    frame = bundled_int8.predict_csv(good, output=out, chunk_rows=300)
    labels = bundled_int8.predict(read_kaggle_csv(holdout_sample).images)
    np.testing.assert_array_equal(frame["Label"], np.tile(labels, 4))
    assert out.read_text().count("\n") == 4_001 and frame.attrs["evaluation"].rows == 4_000

    fields = rows[3_900].split(",")
    fields[300] = "x"
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([header] + rows[:3_900] + [",".join(fields)] + rows[3_901:]) + "\n")
    before = out.read_bytes()
    with pytest.raises(CsvFormatError, match=r"line 3902, column pixel299: expected an integer 0-255, got 'x'"):
        bundled_int8.predict_csv(bad, output=out, chunk_rows=300)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "big.csv.gz", "submission.csv"]
