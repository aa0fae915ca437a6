"""What ``mnist-onnx predict`` does around a prediction: outputs, progress, answers, notes and the report.

Kept apart from :mod:`.cli` (the options and the engines) so that module stays
about arguments.  Standard library imports only at the top: numpy, pandas,
tqdm and matplotlib load when a run needs them.
"""

from __future__ import annotations

import gzip
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ..errors import MnistOnnxError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from .predictor import DigitClassifier
    from .results import Evaluation

#: ``--out -``: the CSV goes to standard output.
STDOUT = "-"

#: Said on stderr when the bundled model writes predictions for unlabelled rows.
BUNDLED_KAGGLE_NOTE = (
    "note: the bundled model was trained on MNIST, whose images Kaggle's Digit Recognizer test set also "
    "contains, so it has seen them: do not submit its predictions; for a leaderboard entry, train your own "
    "with 'mnist-onnx train' and pass it with --model"
)


@dataclass(frozen=True)
class Checked:
    """What was checked before a run reads its input.

    Attributes:
        answers: The ``--labels`` answers (int64, one per row, in ImageId order), or None.
    """

    answers: np.ndarray | None


def check_before_reading(csv_path: Path, *, out: str | None, labels: str | None, report: str | None) -> Checked:
    """Everything that can be refused before the model is loaded or a row is read.

    Raises:
        MnistOnnxError: ``--out`` names an input; ``--labels`` with a CSV that has its own
            label column; ``--report`` without labels or on a file; a bad answer file.
        MissingExtraError: ``--report`` without matplotlib (the ``plot`` extra).
    """
    from .answers import read_answers
    from .kaggle_csv import inspect_kaggle_csv

    refuse_output_over_input(out, [csv_path, *([labels] if labels else [])])
    if labels or report:
        has_labels = inspect_kaggle_csv(csv_path).has_labels  # the header only
        if labels and has_labels:
            raise MnistOnnxError(
                f"{csv_path} has its own label column: --labels is for a file without one (a Kaggle test.csv)"
            )
        if report and not (labels or has_labels):
            raise MnistOnnxError(
                "--report shows the confusion matrix and the misread digits, so it needs labels: "
                "a label column in the CSV, or --labels ANSWERS.csv"
            )
    if report:  # after the user errors above, which need no extra to be told
        from .._plot import require_matplotlib

        require_matplotlib()
        if Path(report).exists() and not Path(report).is_dir():
            raise MnistOnnxError(f"--report {report}: is a file, expected a folder")
    return Checked(answers=read_answers(labels) if labels else None)


def finish(
    frame: pd.DataFrame,
    classifier: DigitClassifier,
    checked: Checked,
    csv_path: Path,
    *,
    out: str | None,
    write_after: bool,
    report: str | None,
    bundled: bool,
    quiet: bool,
) -> list[Path]:
    """After the run: score against ``--labels``, write a deferred output, draw the report, add the Kaggle note.

    Returns:
        The report files written.

    Raises:
        MnistOnnxError: If the answers do not match the rows, or an output cannot be written.
    """
    from .answers import evaluate
    from .results import write_csv

    if checked.answers is not None:
        if len(checked.answers) != len(frame):
            raise MnistOnnxError(
                f"the answers do not match the file: {len(checked.answers):,} answers for "
                f"{len(frame):,} rows of {csv_path}"
            )
        frame.attrs["evaluation"] = evaluate(frame["Label"].to_numpy(), checked.answers, classifier.class_labels)
    if out == STDOUT:
        write_to_stdout(frame)
    elif write_after and out:
        write_csv(frame, out)
    written = []
    if report:
        written = write_report(report, csv_path, frame, frame.attrs["evaluation"], checked.answers, classifier)
    if bundled and out and frame.attrs.get("evaluation") is None and not quiet:
        print(f"mnist-onnx predict: {BUNDLED_KAGGLE_NOTE}", file=sys.stderr)
    return written


def progress_total(csv_path: Path, stream: TextIO) -> int | None:
    """The rows a progress bar on ``stream`` counts to; counted only when a bar will be drawn."""
    return count_data_rows(csv_path) if bool(getattr(stream, "isatty", lambda: False)()) else None


def not_saved_line() -> str:
    """The last summary line of a run without ``--out``: the predictions were not saved, and how to save them."""
    return "the predictions were not saved: add --out predictions.csv to write them, or --out - to print them"


def refuse_output_over_input(out: str | None, inputs: Sequence[str | os.PathLike[str]]) -> None:
    """Refuse an ``--out`` that names one of the input files, before anything is read.

    The output is written beside its destination and renamed over it when
    complete, so such a run would replace the input with its own predictions.

    Raises:
        MnistOnnxError: If ``out`` resolves to (or is a hard link of) an input.
    """
    if out is None or out == STDOUT:
        return
    destination = Path(out)
    for source in inputs:
        same = Path(source).resolve() == destination.resolve()
        if not same and destination.exists() and Path(source).exists():
            try:
                same = os.path.samefile(source, destination)
            except OSError:
                same = False
        if same:
            raise MnistOnnxError(
                f"--out {out} is the input file {source}: writing the predictions there would "
                f"destroy it; choose another --out"
            )


def count_data_rows(path: str | os.PathLike[str]) -> int | None:
    """About the number of data rows of a (plain or gzip) CSV: its lines but the header; None if unreadable.

    Only the progress bar's total uses it (blank lines count too), so it is read only when a bar is drawn.
    """
    try:
        with open(path, "rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"
        opener: Any = gzip.open if gzipped else open
        lines = 0
        last = b"\n"
        with opener(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                lines += block.count(b"\n")
                last = block[-1:]
        return max(lines - 1 + (last != b"\n"), 0)
    except (OSError, EOFError, ValueError):
        return None


class ProgressBar:
    """Rows done of the total, rate and time left, on a terminal only (tqdm); silent when piped.

    Used as the ``progress`` callback of ``predict_csv``, which reports the
    rows done so far; :meth:`close` erases the bar.

    Args:
        stream: Where to draw (standard error); nothing is drawn unless it is a terminal.
        total: The rows expected, or None when unknown.
        unit: What is counted (``rows``, ``images``).
        desc: The bar's label.
        delay_s: Draw nothing for this long, so short runs print no bar at all.
        min_interval_s: Redraw at most this often.
    """

    def __init__(
        self,
        stream: TextIO,
        total: int | None,
        *,
        delay_s: float = 0.5,
        min_interval_s: float = 0.1,
        unit: str = "rows",
        desc: str = "predicting",
    ) -> None:
        self._bar: Any = None
        if not bool(getattr(stream, "isatty", lambda: False)()):
            return
        from tqdm import tqdm

        self._bar = tqdm(
            total=total,
            file=stream,
            unit=f" {unit}",
            desc=desc,
            delay=delay_s,
            leave=False,
            mininterval=min_interval_s,
            miniters=1,
            dynamic_ncols=True,
            smoothing=0.1,
        )

    @property
    def enabled(self) -> bool:
        """Whether a bar is drawn (the stream is a terminal)."""
        return self._bar is not None

    def __call__(self, rows: int) -> None:
        if self._bar is not None and rows > self._bar.n:
            self._bar.update(rows - self._bar.n)

    def close(self) -> None:
        """Erase the bar, if one was drawn."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def write_to_stdout(frame: pd.DataFrame) -> None:
    """Write the prediction CSV to standard output, in the format every output file has.

    A reader that stops early (``| head``) is not an error: the rest is dropped quietly.
    """
    from .results import CsvSink

    try:
        CsvSink(sys.stdout).write(frame)
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would report the pipe again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def write_report(
    directory: str | os.PathLike[str],
    csv_path: Path,
    frame: pd.DataFrame,
    evaluation: Evaluation,
    answers: Any,
    classifier: DigitClassifier,
) -> list[Path]:
    """Draw ``confusion_matrix.png`` and ``misclassified.png`` (true → predicted, confidence) into ``directory``.

    Args:
        directory: The report folder (created if missing).
        csv_path: The CSV that was predicted; the misread rows' pixels are read from it again.
        frame: The run's prediction frame (``Label`` in row order).
        evaluation: The run's evaluation.
        answers: The true digits from ``--labels``, int shape (N,) in row order, or None to take the
            CSV's own label column.
        classifier: The classifier that predicted, asked again for the misread digits' probabilities.

    Returns:
        The files written.

    Raises:
        MnistOnnxError: If the folder cannot be made or written.
        MissingExtraError: If matplotlib is not installed (the ``plot`` extra).
    """
    import numpy as np

    from .._plot import MAX_GRID_DIGITS, confusion_matrix_png, digit_grid_png
    from .kaggle_csv import read_kaggle_csv

    folder = make_report_dir(directory)
    accuracy = f"accuracy {evaluation.accuracy:.2%} ({evaluation.correct:,} of {evaluation.rows:,})"
    written = [
        confusion_matrix_png(
            evaluation.confusion,
            evaluation.labels,
            folder / "confusion_matrix.png",
            title=f"{csv_path.name}: {accuracy}",
        )
    ]
    batch = read_kaggle_csv(csv_path)
    truth = np.asarray(batch.labels if answers is None else answers)
    predicted = frame["Label"].to_numpy()
    wrong = np.flatnonzero(predicted != truth)
    images = batch.images[wrong]
    confidence = classifier.predict_proba(images).max(axis=1) if len(wrong) else np.zeros(0)
    order = np.argsort(-confidence, kind="stable")  # the most confident mistakes first
    captions = [f"row {wrong[i] + 1:,}\n{truth[wrong[i]]}→{predicted[wrong[i]]}  {confidence[i]:.1%}" for i in order]
    shown = min(len(wrong), MAX_GRID_DIGITS)
    title = f"{len(wrong):,} misclassified of {evaluation.rows:,} (row; true→predicted, confidence)" + (
        f", the {shown} most confident shown" if shown < len(wrong) else ""
    )
    written.append(digit_grid_png(images[order], captions, folder / "misclassified.png", title=title))
    return written


def make_report_dir(directory: str | os.PathLike[str]) -> Path:
    """Create the report folder (and its parents) or say why it cannot be.

    Raises:
        MnistOnnxError: If the path is a file or cannot be created.
    """
    folder = Path(directory)
    if folder.exists() and not folder.is_dir():
        raise MnistOnnxError(f"--report {folder}: is a file, expected a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MnistOnnxError(f"--report {folder}: cannot create the folder ({exc.strerror or exc})") from None
    return folder
