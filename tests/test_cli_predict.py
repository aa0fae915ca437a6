"""`mnist-onnx predict` with the local engine: summary, output, one-line errors, progress."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from _models import HAS_CUDA

from mnist_onnx.cli import main
from mnist_onnx.runtime import model_source
from mnist_onnx.runtime._predict_io import ProgressBar


def test_cli_default_run_needs_or_uses_the_bundled_model(capsys):
    code = main(["predict"])
    captured = capsys.readouterr()
    if (Path(model_source.bundled_dir()) / "model_card.json").exists():
        assert code == 0, captured.err
        assert "predicted 1,000 rows of the bundled sample with bundled fp32 model" in captured.out
        assert "accuracy" in captured.out and "images/s" in captured.out
    else:
        assert code == 1
        assert captured.err.startswith("mnist-onnx predict: error: this installation has no bundled model")
        assert captured.err.count("\n") == 1


def test_cli_predicts_and_writes_a_submission(fp32_model_path, holdout_sample, tmp_path, capsys):
    out = tmp_path / "submission.csv"
    code = main(
        [
            "predict",
            str(holdout_sample),
            "--model",
            str(fp32_model_path),
            "--out",
            str(out),
            "--batch-size",
            "100",
            "--threads",
            "1",
            "--provider",
            "cpu",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err == ""
    assert f"predicted 1,000 rows of {holdout_sample} with {fp32_model_path} on CPUExecutionProvider" in captured.out
    assert "images/s" in captured.out and "accuracy " in captured.out
    assert "match the file's label column" in captured.out
    assert f"wrote {out} (ImageId, Label; 1,000 rows)" in captured.out
    assert out.read_text().startswith("ImageId,Label\n1,")


def test_cli_quiet_prints_nothing(fp32_model_path, holdout_sample, tmp_path, capsys):
    out = tmp_path / "submission.csv"
    assert main(["predict", str(holdout_sample), "--model", str(fp32_model_path), "--out", str(out), "-q"]) == 0
    assert capsys.readouterr() == ("", "")
    assert len(out.read_text().splitlines()) == 1001


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--proba"], "--proba adds columns to the --out file: give --out PATH too"),
        (["--provider", "cpu", "MISSING.csv"], "MISSING.csv: no such file"),
        (["--model", "MISSING.onnx"], "MISSING.onnx: no such model file"),
        (["--out", "no-such-dir/sub.csv"], "directory no-such-dir does not exist"),
    ],
)
def test_cli_user_errors_are_one_line(fp32_model_path, arguments, message, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    if "--model" not in arguments:
        arguments = [*arguments, "--model", str(fp32_model_path)]
    assert main(["predict", *arguments]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("mnist-onnx predict: error: ") and message in captured.err
    assert captured.err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_cli_bad_csv_names_line_and_column_and_writes_nothing(fp32_model_path, tmp_path, capsys):
    bad = tmp_path / "test.csv"
    bad.write_text(",".join(f"pixel{i}" for i in range(784)) + "\n" + ",".join(["0"] * 783 + ["x"]) + "\n")
    out = tmp_path / "submission.csv"
    assert main(["predict", str(bad), "--model", str(fp32_model_path), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "test.csv, line 2, column pixel783: expected an integer 0-255, got 'x'" in err
    assert not out.exists()


@pytest.mark.skipif(HAS_CUDA, reason="CUDAExecutionProvider is available here")
def test_cli_cuda_unavailable_lists_providers(fp32_model_path, capsys):
    assert main(["predict", "--model", str(fp32_model_path), "--provider", "cuda"]) == 1
    err = capsys.readouterr().err
    assert "CUDAExecutionProvider is not available" in err and "available: " in err and err.count("\n") == 1


def test_cli_bad_option_values_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as info:
        main(["predict", "--batch-size", "0"])
    assert info.value.code == 2
    assert "expected a positive integer, got 0" in capsys.readouterr().err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal_and_only_on_long_runs():
    terminal = _Terminal()
    progress = ProgressBar(terminal, 28_000, delay_s=3600)  # a run shorter than the delay draws nothing
    progress(4096)
    progress.close()
    assert terminal.getvalue() == ""
    progress = ProgressBar(terminal, 28_000, delay_s=0, min_interval_s=0)
    progress(8192)
    progress.close()
    assert "8192/28000" in terminal.getvalue() and terminal.getvalue().endswith("\r")  # erased when done

    pipe = io.StringIO()
    progress = ProgressBar(pipe, 28_000, delay_s=0, min_interval_s=0)
    progress(8192)
    progress.close()
    assert pipe.getvalue() == ""


def test_cli_prints_each_load_warning_once(holdout_sample, tmp_path, capsys, monkeypatch):
    # --provider auto's trial loads the model again, and the load-time contract check warns again there.
    import warnings

    from mnist_onnx.errors import ContractWarning
    from mnist_onnx.runtime import predictor

    real = predictor.DigitClassifier

    class Twice(real):  # type: ignore[misc,valid-type]
        def __init__(self, *args, **kwargs):
            warnings.warn(ContractWarning("model scores 12.0%: pass --pixel-scale 1"), stacklevel=2)
            warnings.warn(ContractWarning("model scores 12.0%: pass --pixel-scale 1"), stacklevel=2)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(predictor, "DigitClassifier", Twice)
    assert main(["predict", str(holdout_sample), "--out", str(tmp_path / "p.csv"), "-q"]) == 0
    err = capsys.readouterr().err
    assert err.count("warning: model scores 12.0%") == 1, err
