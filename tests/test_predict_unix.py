"""``mnist-onnx predict`` behaves like a Unix tool: pipes, short errors, nothing lost or overwritten.

Each test runs the real command in a subprocess and checks what a user sees: stdout, stderr, the exit
code and the files.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "mnist_onnx" / "runtime" / "bundled" / "sample.csv.gz"


def run(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, process: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run ``mnist-onnx predict ARGS``: in this process (fast), or as a real process when ``process`` or ``env``."""
    if process or env:
        return subprocess.run(
            [sys.executable, "-m", "mnist_onnx", "predict", *args],
            capture_output=True,
            text=True,
            cwd=cwd or ROOT,
            env={**os.environ, **(env or {})},
            timeout=300,
        )
    from mnist_onnx.cli import main

    out, err = io.StringIO(), io.StringIO()
    previous = Path.cwd()
    os.chdir(cwd or ROOT)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(["predict", *args])
            except SystemExit as exc:  # argparse's usage errors
                code = int(exc.code or 0)
    finally:
        os.chdir(previous)
    return subprocess.CompletedProcess(["mnist-onnx", "predict", *args], code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def sample_frame() -> pd.DataFrame:
    return pd.read_csv(SAMPLE).head(40)


@pytest.mark.parametrize(("separator", "name"), [(";", "semicolons"), ("\t", "tabs"), ("|", "vertical bars")])
def test_another_separator_is_named_in_one_short_line(
    tmp_path: Path, sample_frame: pd.DataFrame, separator: str, name: str
) -> None:
    path = tmp_path / "digits.csv"
    sample_frame.to_csv(path, sep=separator, index=False)
    done = run(str(path))
    assert done.returncode == 1
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert len(line) - len(str(path)) < 160, line  # not the 14,000-character header
    assert f"line 1: fields are separated by {name}" in line


def test_a_long_header_cell_is_cut(tmp_path: Path, sample_frame: pd.DataFrame) -> None:
    path = tmp_path / "digits.csv"
    sample_frame.rename(columns={"label": "x" * 5000}).to_csv(path, index=False)
    done = run(str(path))
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert len(line) - len(str(path)) < 200 and "'xxxx" in line and "..." in line


def test_a_long_cell_is_cut(tmp_path: Path, sample_frame: pd.DataFrame) -> None:
    frame = sample_frame.astype(object)
    frame.iloc[3, 100] = "7" * 5000
    path = tmp_path / "digits.csv"
    frame.to_csv(path, index=False)
    done = run(str(path))
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert len(line) - len(str(path)) < 200 and "line 5, column pixel99" in line and "..." in line


# --- outputs -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory: pytest.TempPathFactory, sample_frame: pd.DataFrame) -> Path:
    """40 real held-out digits as a Kaggle test.csv (no label column)."""
    path = tmp_path_factory.mktemp("unlabelled") / "test.csv"
    sample_frame.drop(columns="label").to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory, sample_frame: pd.DataFrame) -> Path:
    """Their answers, as `mnist-onnx data` writes test_labels.csv."""
    path = tmp_path_factory.mktemp("answers") / "test_labels.csv"
    pd.DataFrame({"ImageId": range(1, len(sample_frame) + 1), "Label": sample_frame["label"]}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory, sample_frame: pd.DataFrame) -> Path:
    path = tmp_path_factory.mktemp("labelled") / "train.csv"
    sample_frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, unlabelled: Path) -> str:
    """The submission a plain --out writes, to compare the other outputs with."""
    out = tmp_path_factory.mktemp("reference") / "submission.csv"
    done = run(str(unlabelled), "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out.read_text()


def test_out_dash_writes_the_csv_to_stdout_and_the_summary_to_stderr(
    tmp_path: Path, unlabelled: Path, reference: str
) -> None:
    done = run(str(unlabelled), "--out", "-", cwd=tmp_path, process=True)  # a real standard output
    assert done.returncode == 0, done.stderr
    assert done.stdout == reference
    assert "predicted 40 rows" in done.stderr and "standard output" in done.stderr
    assert list(tmp_path.iterdir()) == []  # no file named '-'


def test_without_out_the_summary_says_nothing_was_saved_and_how_to_save(unlabelled: Path) -> None:
    done = run(str(unlabelled))
    assert done.returncode == 0, done.stderr
    last = done.stdout.splitlines()[-1]
    assert "not saved" in last and "--out" in last


def test_out_gz_writes_gzip(tmp_path: Path, unlabelled: Path, reference: str) -> None:
    out = tmp_path / "submission.csv.gz"
    done = run(str(unlabelled), "--out", str(out))
    assert done.returncode == 0, done.stderr
    data = out.read_bytes()
    assert data[:2] == b"\x1f\x8b"
    assert gzip.decompress(data).decode() == reference
    assert [p.name for p in tmp_path.iterdir()] == ["submission.csv.gz"]  # no temporary file left


@pytest.mark.parametrize("spelling", ["same", "dotted", "hardlink", "labels"])
def test_out_naming_an_input_is_refused_before_anything_is_read(
    tmp_path: Path, unlabelled: Path, answers: Path, spelling: str
) -> None:
    source = tmp_path / "test.csv"
    source.write_bytes(unlabelled.read_bytes())
    labels = tmp_path / "labels.csv"
    labels.write_bytes(answers.read_bytes())
    (tmp_path / "sub").mkdir()
    out = {
        "same": str(source),
        "dotted": str(tmp_path / "sub" / ".." / "test.csv"),
        "labels": str(labels),
        "hardlink": str(tmp_path / "link.csv"),
    }[spelling]
    if spelling == "hardlink":
        os.link(source, out)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    done = run(str(source), "--out", out, *(["--labels", str(labels)] if spelling == "labels" else []))
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert "is the input file" in line
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_quiet_without_out_is_a_usage_error(unlabelled: Path) -> None:
    done = run(str(unlabelled), "-q")
    assert done.returncode == 2
    assert done.stdout == ""
    assert "usage:" in done.stderr and "--quiet without --out" in done.stderr


def test_quiet_with_out_prints_nothing(tmp_path: Path, unlabelled: Path, reference: str) -> None:
    done = run(str(unlabelled), "-q", "--out", str(tmp_path / "s.csv"))
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert (tmp_path / "s.csv").read_text() == reference


# --- scoring against an answer file -----------------------------------------------------------------------------


def _accuracy_line(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("accuracy "))


def test_labels_scores_like_a_label_column(unlabelled: Path, answers: Path, labelled: Path) -> None:
    with_answers = run(str(unlabelled), "--labels", str(answers))
    with_column = run(str(labelled))
    assert with_answers.returncode == 0 == with_column.returncode, with_answers.stderr + with_column.stderr
    assert _accuracy_line(with_answers.stdout) == _accuracy_line(with_column.stdout)
    assert "of 40 match" in _accuracy_line(with_answers.stdout)


def test_labels_in_another_order_score_the_same(
    tmp_path: Path, unlabelled: Path, answers: Path, labelled: Path
) -> None:
    shuffled = tmp_path / "answers.csv"
    pd.read_csv(answers).sample(frac=1.0, random_state=0).to_csv(shuffled, index=False)
    done = run(str(unlabelled), "--labels", str(shuffled))
    assert done.returncode == 0, done.stderr
    assert _accuracy_line(done.stdout) == _accuracy_line(run(str(labelled)).stdout)


def test_labels_with_the_submission_still_written(
    tmp_path: Path, unlabelled: Path, answers: Path, reference: str
) -> None:
    out = tmp_path / "s.csv"
    done = run(str(unlabelled), "--labels", str(answers), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert out.read_text() == reference
    assert "mnist-onnx train" not in done.stderr  # scored data is no submission: no leaderboard note


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("ImageId,Label\n1,3\n2,7\n", "2 answers for 40 rows"),
        ("Id,Digit\n1,3\n", "line 1: expected the header 'ImageId,Label'"),
        ("ImageId,Label\n1,3\n1,4\n", "line 3, column ImageId: ImageId 1 appears twice"),
        ("ImageId,Label\n1,3\n3,4\n", "ImageId 2 is missing"),
        ("ImageId,Label\n1,12\n", "line 2, column Label: expected an integer 0-9, got '12'"),
    ],
)
def test_a_bad_answer_file_is_one_line_and_writes_nothing(
    tmp_path: Path, unlabelled: Path, content: str, words: str
) -> None:
    bad = tmp_path / "answers.csv"
    bad.write_text(content)
    done = run(str(unlabelled), "--labels", str(bad), "--out", str(tmp_path / "s.csv"))
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert words in line
    assert not (tmp_path / "s.csv").exists()


def test_labels_with_a_label_column_is_refused(labelled: Path, answers: Path) -> None:
    done = run(str(labelled), "--labels", str(answers))
    assert done.returncode == 1
    assert "has its own label column" in done.stderr


# --- what is said on stderr ---------------------------------------------------------------------------------------


def test_the_bundled_model_writing_predictions_warns_about_kaggle(
    tmp_path: Path, unlabelled: Path, labelled: Path
) -> None:
    submission = run(str(unlabelled), "--out", str(tmp_path / "s.csv"))
    assert submission.returncode == 0, submission.stderr
    (note,) = [line for line in submission.stderr.splitlines() if "Kaggle" in line]
    assert "mnist-onnx train" in note and "seen" in note
    scored = run(str(labelled), "--out", str(tmp_path / "t.csv"))
    assert "Kaggle" not in scored.stderr
    bundled_file = ROOT / "mnist_onnx" / "runtime" / "bundled" / "digit_cnn.onnx"
    own = run(str(unlabelled), "--model", str(bundled_file), "--out", str(tmp_path / "u.csv"))
    assert own.returncode == 0, own.stderr
    assert "Kaggle" not in own.stderr


def test_no_progress_bar_when_piped(unlabelled: Path) -> None:
    done = run(str(unlabelled), process=True)
    assert "predicting" not in done.stderr and "\r" not in done.stderr


def test_the_progress_bar_shows_done_of_total_rate_and_time_left() -> None:
    from mnist_onnx.runtime._predict_io import ProgressBar

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    bar = ProgressBar(screen, 28_000, delay_s=0, min_interval_s=0)
    bar(4_096)
    bar(8_192)
    bar.close()
    drawn = screen.getvalue()
    assert "8192/28000" in drawn and "rows/s" in drawn and "<" in drawn  # tqdm's elapsed<remaining
    piped = io.StringIO()
    silent = ProgressBar(piped, 28_000, delay_s=0)
    silent(4_096)
    silent.close()
    assert piped.getvalue() == ""


# --- the report ---------------------------------------------------------------------------------------------------


def test_report_draws_the_confusion_matrix_and_the_misread_digits(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="needs the 'plot' extra: pip install '.[plot]'")
    report = tmp_path / "report"
    done = run("--report", str(report))  # the bundled sample: 1,000 labelled digits
    assert done.returncode == 0, done.stderr
    for name in ("confusion_matrix.png", "misclassified.png"):
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert name in done.stdout
    assert sorted(p.name for p in report.iterdir()) == ["confusion_matrix.png", "misclassified.png"]


def test_report_needs_labels(unlabelled: Path, tmp_path: Path) -> None:
    done = run(str(unlabelled), "--report", str(tmp_path / "r"))
    assert done.returncode == 1
    assert "needs labels" in done.stderr
    assert not (tmp_path / "r").exists()


def test_report_without_matplotlib_names_the_extra(tmp_path: Path) -> None:
    # A matplotlib that cannot be imported, first on the path, stands in for an install without it.
    fake = tmp_path / "fake" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'matplotlib'\", name='matplotlib')\n")
    path = os.pathsep.join([str(tmp_path / "fake"), os.environ.get("PYTHONPATH", "")])
    done = run("--report", str(tmp_path / "r"), env={"PYTHONPATH": path})
    assert done.returncode == 4
    assert "pip install 'mnist-onnx[plot]'" in done.stderr
    assert not (tmp_path / "r").exists()


def test_the_ray_engine_refuses_out_over_an_input_too(tmp_path: Path, unlabelled: Path, capsys) -> None:
    from mnist_onnx.cli import main

    source = tmp_path / "part-1.csv"
    source.write_bytes(unlabelled.read_bytes())
    code = main(["predict", str(tmp_path / "part-*.csv"), "--engine", "ray", "--out", str(source)])
    assert code == 1
    assert "is the input file" in capsys.readouterr().err
    assert source.read_bytes() == unlabelled.read_bytes()
