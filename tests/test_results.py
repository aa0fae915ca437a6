"""Results: prediction frames, the label scorer, and the one atomic CSV writer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mnist_onnx.errors import MnistOnnxError
from mnist_onnx.runtime.results import LabelScorer, RunInfo, csv_sink, prediction_frame, write_csv


def test_prediction_frame_columns_and_image_ids():
    probabilities = np.array([[0.1, 0.9], [0.8, 0.2], [0.5, 0.5]], dtype=np.float32)
    frame = prediction_frame(10, probabilities.argmax(axis=1), probabilities, ("cat", "dog"))
    assert list(frame.columns) == ["ImageId", "Label", "pcat", "pdog", "confidence"]
    assert frame["ImageId"].tolist() == [11, 12, 13]
    assert frame["Label"].tolist() == ["dog", "cat", "cat"]
    np.testing.assert_array_equal(frame["confidence"], np.array([0.9, 0.8, 0.5], dtype=np.float32))
    submission = prediction_frame(0, np.array([3, 1]), None, tuple(range(10)))
    assert list(submission.columns) == ["ImageId", "Label"] and submission["Label"].dtype == np.int64


def test_scorer_counts_batches_into_one_confusion_matrix(holdout):
    labels = holdout.labels
    predicted = labels.copy()
    predicted[::50] = (predicted[::50] + 3) % 10  # 20 wrong
    scorer = LabelScorer(tuple(range(10)))
    for part in (slice(0, 333), slice(333, 900), slice(900, 1000)):
        scorer.add(labels[part], predicted[part])
    evaluation = scorer.evaluation()
    assert evaluation is not None
    assert (evaluation.rows, evaluation.correct) == (1000, 980) and evaluation.accuracy == pytest.approx(0.98)
    frame = evaluation.confusion_frame()
    for true in range(10):
        assert frame.loc[true].sum() == (labels == true).sum()
    assert frame.loc[int(labels[0]), (int(labels[0]) + 3) % 10] >= 1


def test_scorer_gives_nothing_without_labels_or_without_every_digit(holdout):
    no_labels = LabelScorer(tuple(range(10)))
    no_labels.add(None, holdout.labels)
    assert no_labels.evaluation() is None
    partly = LabelScorer(tuple(range(10)))
    partly.add(holdout.labels[:10], holdout.labels[:10])
    partly.add(np.full(10, -1), holdout.labels[:10])
    assert partly.evaluation() is None
    letters = LabelScorer(tuple("abcdefghij"))
    letters.add(holdout.labels, holdout.labels)
    assert letters.evaluation() is None


def test_run_info_attrs():
    attrs = RunInfo(model="m", providers=["CPUExecutionProvider"], rows=100, seconds=0.5, evaluation=None).as_attrs()
    assert attrs == {
        "model": "m",
        "providers": ["CPUExecutionProvider"],
        "rows": 100,
        "seconds": 0.5,
        "images_per_second": 200.0,
        "evaluation": None,
    }


def test_writer_streams_frames_with_one_header(tmp_path):
    out = tmp_path / "p.csv"
    first = pd.DataFrame({"ImageId": [1, 2], "Label": [7, 1], "p": [0.123456789, 1.0]})
    second = pd.DataFrame({"ImageId": [3], "Label": [4], "p": [1e-9]})
    with csv_sink(out) as sink:
        sink.write(first)
        sink.write(second)
        assert not out.exists(), "the destination appears only when the write is complete"
    assert out.read_text() == "ImageId,Label,p\n1,7,0.123457\n2,1,1\n3,4,1e-09\n"
    write_csv(pd.concat([first, second]), tmp_path / "whole.csv")
    assert (tmp_path / "whole.csv").read_bytes() == out.read_bytes()


def test_writer_leaves_nothing_on_error(tmp_path):
    out = tmp_path / "p.csv"
    out.write_text("previous\n")
    with pytest.raises(RuntimeError, match="stop"), csv_sink(out) as sink:
        sink.write(pd.DataFrame({"ImageId": [1], "Label": [2]}))
        raise RuntimeError("stop")
    assert out.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv"]
    with pytest.raises(MnistOnnxError, match="directory .* does not exist"):
        write_csv(pd.DataFrame({"a": [1]}), tmp_path / "missing" / "p.csv")
