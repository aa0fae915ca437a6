"""Kaggle-style answer files (ImageId,Label): read exactly, or refused naming the line and column."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from mnist_onnx.errors import CsvFormatError
from mnist_onnx.runtime.answers import evaluate, read_answers


def test_answers_come_back_in_imageid_order_plain_or_gzip(tmp_path: Path) -> None:
    text = "\ufeffImageId,Label\r\n3,9\r\n1,4\r\n2,0\r\n\r\n"
    plain = tmp_path / "answers.csv"
    plain.write_text(text, newline="")
    packed = tmp_path / "answers.csv.gz"
    packed.write_bytes(gzip.compress(text.encode()))
    for path in (plain, packed):
        answers = read_answers(path)
        assert answers.dtype == np.int64
        assert answers.tolist() == [4, 0, 9]


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        ("", 1, None, "an empty file"),
        ("ImageId;Label\n1;3\n", 1, None, "expected the header 'ImageId,Label'"),
        ("ImageId,Label\n", None, None, "no answers"),
        ("ImageId,Label\n1,3,4\n", 2, None, "expected 2 fields"),
        ("ImageId,Label\n0,3\n", 2, "ImageId", "expected an integer >= 1, got '0'"),
        ("ImageId,Label\n1,-1\n", 2, "Label", "expected an integer 0-9"),
        ("ImageId,Label\n1,1_0\n", 2, "Label", "got '1_0'"),
        ("ImageId,Label\n1,\u0663\n", 2, "Label", "expected an integer 0-9"),
        ("ImageId,Label\n1,3\n2,4\n2,5\n", 4, "ImageId", "ImageId 2 appears twice (first on line 3)"),
        ("ImageId,Label\n1,3\n4,4\n", None, "ImageId", "ImageId 2 is missing"),
    ],
)
def test_a_bad_answer_file_names_its_line_and_column(
    tmp_path: Path, text: str, line: int | None, column: str | None, words: str
) -> None:
    path = tmp_path / "answers.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CsvFormatError) as info:
        read_answers(path)
    assert (info.value.line, info.value.column) == (line, column)
    assert words in str(info.value)


def test_a_missing_file_or_folder_is_said_so(tmp_path: Path) -> None:
    with pytest.raises(CsvFormatError, match="no such file"):
        read_answers(tmp_path / "missing.csv")
    with pytest.raises(CsvFormatError, match="is a directory"):
        read_answers(tmp_path)


def test_evaluate_counts_the_confusions() -> None:
    truth = np.array([0, 1, 2, 3, 3, 9])
    predicted = np.array([0, 1, 2, 5, 3, 4])
    result = evaluate(predicted, truth, tuple(range(10)))
    assert (result.rows, result.correct) == (6, 4)
    assert result.accuracy == pytest.approx(4 / 6)
    assert result.confusion[3, 5] == 1 and result.confusion[9, 4] == 1 and result.confusion.sum() == 6
