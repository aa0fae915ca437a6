"""The Ray Data engine: same answers as predict_csv, bad files, small machines, the CLI.

Tests that run Ray share one local Ray of 2 CPUs (the 2-core case where an
actor pool of whole-CPU actors used to wait forever) and run the engine with
2 workers; they are skipped only when the 'ray' extra is not installed.  The
others (the batch callable, planning, arguments) need no Ray.
"""

from __future__ import annotations

import gzip
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mnist_onnx.cli import EXIT_ERROR, EXIT_MISSING_EXTRA, main
from mnist_onnx.errors import MissingExtraError, MnistOnnxError, ProviderError
from mnist_onnx.runtime.kaggle_csv import PIXEL_COLUMNS, read_kaggle_csv
from mnist_onnx.runtime.predictor import DigitClassifier, predict_csv
from mnist_onnx.runtime.ray_engine import (
    CsvFilesError,
    DigitBatchPredictor,
    expand_csv_paths,
    plan_resources,
    predict_csv_files,
)

REPO = Path(__file__).resolve().parents[1]
# Rows per Ray block: small, so each file becomes several blocks that Ray may
# return in any order, and the order has to be rebuilt.
CHUNK_ROWS = 128
# A model that divides by 255 itself (field case): right only with --pixel-scale 1.
ZOO = REPO / "tests" / "data" / "cases" / "model-expects-0-255" / "mnist_zoo_like.onnx"


# -- real data, split into files ------------------------------------------------


@pytest.fixture(scope="module")
def holdout_frame(holdout_sample: Path) -> pd.DataFrame:
    """The 1,000 real held-out digits, train format (label + 784 pixels)."""
    return pd.read_csv(holdout_sample)


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    data = frame.to_csv(index=False, lineterminator="\n").encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


@pytest.fixture(scope="module")
def parts(holdout_frame: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three files of different sizes, one gzipped; their names sort in row order."""
    folder = tmp_path_factory.mktemp("ray-parts")
    return [
        write_csv(holdout_frame.iloc[0:400], folder / "part-1.csv"),
        write_csv(holdout_frame.iloc[400:750], folder / "part-2.csv.gz"),
        write_csv(holdout_frame.iloc[750:1000], folder / "part-3.csv"),
    ]


@pytest.fixture(scope="module")
def bad_file(holdout_frame: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 real rows with one bad cell on line 290, after two full blocks were read."""
    frame = holdout_frame.iloc[0:300].astype(str)
    frame.iloc[288, 1 + 17] = "x"  # line 290 (the header is line 1), column pixel17
    return write_csv(frame, tmp_path_factory.mktemp("ray-bad") / "part-2b.csv")


@pytest.fixture(scope="module")
def single_process(parts: list[Path], holdout_frame: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory):
    """predict_csv on each part, and on all parts concatenated: outputs written, and the frames."""
    folder = tmp_path_factory.mktemp("single-process")
    classifier = DigitClassifier(providers="cpu")
    per_file = {}
    for path in parts:
        out = folder / f"{path.name}.out.csv"
        per_file[path.name] = (classifier.predict_csv(path, output=out), out.read_bytes())
    whole = write_csv(holdout_frame, folder / "all.csv")
    combined = classifier.predict_csv(whole, output=folder / "all.out.csv")
    return per_file, combined, (folder / "all.out.csv").read_bytes()


# -- Ray -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray of 2 CPUs for this module; workers import this checkout's code."""
    ray = pytest.importorskip("ray", reason="needs the 'ray' extra: pip install 'mnist-onnx[ray]'")
    pytest.importorskip("ray.data", reason="needs the 'ray' extra: pip install 'mnist-onnx[ray]'")
    from ray.data import DataContext

    if ray.is_initialized():
        ray.shutdown()
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level=logging.ERROR,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": python_path}},
    )
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


def test_two_workers_on_two_cpus_match_predict_csv(local_ray, parts, single_process, holdout_frame, tmp_path):
    """The 2-core case: 2 workers on a 2-CPU Ray finish, and every output equals single-process predict_csv."""
    per_file, combined, combined_bytes = single_process
    out_dir = tmp_path / "per-file"
    out_dir.mkdir()
    submission = tmp_path / "submission.csv"
    pattern = str(parts[0].parent / "part-*.csv*")

    frame = predict_csv_files(
        pattern, providers="cpu", workers=2, chunk_rows=CHUNK_ROWS, output=submission, output_dir=out_dir
    )

    plan = frame.attrs["plan"]
    assert plan.workers == 2 and plan.read_cpus + 2 * plan.actor_cpus <= 2
    assert submission.read_bytes() == combined_bytes
    pd.testing.assert_frame_equal(frame, combined, check_like=False)
    for path in parts:
        written = out_dir / f"{path.name.split('.')[0]}.predictions.csv"
        assert written.read_bytes() == per_file[path.name][1], f"{written} differs from predict_csv's output"
    assert [rows for _, rows in frame.attrs["files"]] == [400, 350, 250]
    evaluation, expected = frame.attrs["evaluation"], combined.attrs["evaluation"]
    assert evaluation.correct == expected.correct and evaluation.rows == 1000
    np.testing.assert_array_equal(evaluation.confusion, expected.confusion)


def test_bad_file_fails_clearly_and_keeps_the_other_files(local_ray, parts, bad_file, single_process, tmp_path):
    per_file, _, _ = single_process
    out_dir = tmp_path / "per-file"
    out_dir.mkdir()
    submission = tmp_path / "submission.csv"
    submission.write_text("ImageId,Label\n1,7\n")  # an earlier run's result must survive untouched

    with pytest.raises(CsvFilesError) as caught:
        predict_csv_files(
            [parts[0], parts[1], bad_file, parts[2]],
            providers="cpu",
            workers=2,
            chunk_rows=CHUNK_ROWS,
            output=submission,
            output_dir=out_dir,
        )

    error = caught.value
    assert f"{bad_file}, line 290, column pixel17: expected an integer 0-255, got 'x'" in str(error)
    assert "1 of 4 input files" in str(error) and "no combined submission was written" in str(error)
    (bad,) = error.errors
    assert (bad.path, bad.line, bad.column) == (str(bad_file), 290, "pixel17")
    assert error.scored == 3
    assert submission.read_text() == "ImageId,Label\n1,7\n"
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "part-1.predictions.csv",
        "part-2.predictions.csv",
        "part-3.predictions.csv",
    ]
    for path in parts:
        written = out_dir / f"{path.name.split('.')[0]}.predictions.csv"
        assert written.read_bytes() == per_file[path.name][1], f"{written} differs from predict_csv's output"


def test_cli_proba_and_test_format_files(local_ray, parts, holdout_frame, tmp_path, capsys):
    """The CLI joins the Ray already running; a test.csv-format file scores as its train-format twin."""
    test_format = write_csv(holdout_frame.iloc[0:400].drop(columns="label"), tmp_path / "test-part.csv")
    expected = predict_csv(test_format, providers="cpu", proba=True, output=tmp_path / "expected.csv")
    out_dir = tmp_path / "per-file"
    out_dir.mkdir()

    code = main(
        [
            "predict",
            str(test_format),
            str(parts[1]),
            "--engine",
            "ray",
            "--workers",
            "2",
            "--provider",
            "cpu",
            "--proba",
            "--out-dir",
            str(out_dir),
            "--out",
            str(tmp_path / "all.csv"),
        ]
    )

    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "predicted 750 rows of 2 files" in captured.out and "2 Ray workers" in captured.out
    assert (out_dir / "test-part.predictions.csv").read_bytes() == (tmp_path / "expected.csv").read_bytes()
    both = pd.read_csv(tmp_path / "all.csv")
    assert list(both.columns) == list(expected.columns)
    np.testing.assert_array_equal(both["ImageId"], np.arange(1, 751))
    np.testing.assert_array_equal(both["Label"].iloc[:400], expected["Label"])


def test_cli_bad_file_is_one_line(local_ray, parts, bad_file, tmp_path, capsys):
    out = tmp_path / "submission.csv"
    code = main(["predict", str(parts[0]), str(bad_file), "--engine", "ray", "--workers", "2", "--out", str(out), "-q"])
    captured = capsys.readouterr()
    assert code == EXIT_ERROR
    assert captured.out == ""
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("mnist-onnx predict: error: 1 of 2 input files could not be read: ")
    assert f"{bad_file}, line 290, column pixel17" in line
    assert not out.exists()


def test_a_provider_the_workers_lack_is_our_own_error(local_ray, parts):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA; the error needs a build without it")
    with pytest.raises(ProviderError, match="CUDAExecutionProvider is not available"):
        predict_csv_files(parts[0], providers="cuda", workers=1)


def test_cli_honours_the_model_contract_and_warns(local_ray, parts, tmp_path, capsys):
    """--pixel-scale reaches the workers, and the load-time check's warning reaches the user.

    Both used to be dropped by the Ray engine: this model scored 17.5% on the field case's rows, exit 0, no word.
    """
    expected = DigitClassifier(ZOO, providers="cpu", pixel_scale=1.0).predict_csv(parts[0])
    out = tmp_path / "scaled.csv"
    code = main(
        [
            "predict",
            str(parts[0]),
            "--engine",
            "ray",
            "--workers",
            "2",
            "--provider",
            "cpu",
            "--model",
            str(ZOO),
            "--pixel-scale",
            "1",
            "--out",
            str(out),
            "-q",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "warning" not in captured.err
    np.testing.assert_array_equal(pd.read_csv(out)["Label"], expected["Label"])

    code = main(
        [
            "predict",
            str(parts[0]),
            "--engine",
            "ray",
            "--workers",
            "2",
            "--provider",
            "cpu",
            "--model",
            str(ZOO),
            "--out",
            str(tmp_path / "unscaled.csv"),
            "-q",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "mnist-onnx predict: warning:" in captured.err and "--pixel-scale 1" in captured.err


def test_invert_is_refused_by_the_ray_engine(parts, capsys):
    assert main(["predict", str(parts[0]), "--engine", "ray", "--invert", "yes"]) == EXIT_ERROR
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--invert yes is for the local engine" in line


@pytest.mark.parametrize("arguments", [["IMAGE"], ["CSV", "--report", "sheet"], ["CSV", "--no-preprocess"]])
def test_images_and_image_options_are_refused_before_ray_starts(parts, arguments, capsys, tmp_path):
    # They used to start Ray, then fail the image as a bad CSV ("the other 0 files were scored"), or be ignored.
    image = REPO / "tests" / "data" / "images" / "mnist_0000_3.png"
    arguments = [str(image) if a == "IMAGE" else str(parts[0]) if a == "CSV" else a for a in arguments]
    out = tmp_path / "predictions.csv"
    assert main(["predict", *arguments, "--engine", "ray", "-q", "--out", str(out)]) == EXIT_ERROR
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "drop --engine ray" in line
    assert not out.exists()


# -- the batch callable (no Ray needed) ----------------------------------------------


@pytest.fixture(scope="module")
def predictor() -> DigitBatchPredictor:
    return DigitBatchPredictor(providers="cpu", proba=True)


def test_batch_predictor_adds_label_and_keeps_other_columns(predictor, holdout_sample):
    frame = pd.read_csv(holdout_sample).iloc[:300]  # int64 pixel columns, as ray.data.read_csv gives them
    expected = DigitClassifier(providers="cpu").predict_proba(read_kaggle_csv(holdout_sample).images[:300])

    as_numpy = predictor({name: frame[name].to_numpy() for name in frame.columns})
    as_pandas = predictor(frame)

    assert isinstance(as_pandas, pd.DataFrame)
    for out in (as_numpy, as_pandas):
        assert not set(PIXEL_COLUMNS) & set(out.keys() if isinstance(out, dict) else out.columns)
        np.testing.assert_array_equal(out["label"], frame["label"])
        np.testing.assert_array_equal(out["Label"], expected.argmax(axis=1))
        np.testing.assert_array_equal(np.column_stack([out[f"p{d}"] for d in range(10)]), expected)
        np.testing.assert_array_equal(out["confidence"], expected.max(axis=1))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns=["pixel5", "pixel6"]), "missing 'pixel5' and 1 more"),
        (
            lambda f: f.assign(pixel40=f["pixel40"].where(f.index != 2, 256)),
            "column pixel40, row 2 of the batch: expected an integer pixel 0-255, got 256",
        ),
        (lambda f: f.assign(pixel3=f["pixel3"].astype(float).where(f.index != 1, 0.5)), "column pixel3, row 1"),
        (lambda f: f.assign(pixel7="a"), "column pixel7, row 0"),
    ],
)
def test_batch_predictor_rejects_bad_pixel_columns(predictor, holdout_sample, change, message):
    frame = change(pd.read_csv(holdout_sample).iloc[:5])
    with pytest.raises(MnistOnnxError, match=message.replace("(", r"\(")):
        predictor(frame)


def test_rows_in_any_order_come_back_in_input_order(predictor, holdout_sample, tmp_path):
    """Blocks arrive in whatever order Ray's workers finish; the driver restores file and row order."""
    from mnist_onnx.runtime._ray_rows import row_block, split_by_file

    batch = read_kaggle_csv(holdout_sample)
    pixels = batch.images.reshape(len(batch), -1)
    files = [tmp_path / "a.csv", tmp_path / "b.csv"]
    blocks = [
        row_block(0, 0, pixels[0:300], batch.labels[0:300], ""),
        row_block(0, 300, pixels[300:600], batch.labels[300:600], ""),
        row_block(1, 0, pixels[600:1000], batch.labels[600:1000], ""),
    ]
    scored = [predictor(block) for block in blocks]
    columns = {name: np.concatenate([part[name] for part in scored]) for name in scored[0]}
    shuffle = np.random.default_rng(0).permutation(1000)

    results = split_by_file(files, {name: values[shuffle] for name, values in columns.items()})
    per_file, truth = results.per_file, results.truth

    assert results.errors == []
    expected = DigitClassifier(providers="cpu").predict(batch.images)
    np.testing.assert_array_equal(per_file[files[0]]["Label"], expected[:600])
    np.testing.assert_array_equal(per_file[files[1]]["Label"], expected[600:])
    np.testing.assert_array_equal(per_file[files[1]]["ImageId"], np.arange(1, 401))
    np.testing.assert_array_equal(truth, batch.labels)


def test_workers_get_the_default_batch_of_their_provider():
    """No batch size given: each worker's classifier picks its provider's (1,024 on CUDA), never a fixed 16."""
    import inspect

    from mnist_onnx.runtime.defaults import DEFAULT_BATCH_SIZE

    assert inspect.signature(predict_csv_files).parameters["batch_size"].default is None
    assert inspect.signature(DigitBatchPredictor).parameters["batch_size"].default is None
    assert DigitBatchPredictor(providers="cpu").classifier.batch_size == DEFAULT_BATCH_SIZE
    assert DigitBatchPredictor(providers="cpu", batch_size=7).classifier.batch_size == 7


def test_evaluation_uses_the_model_labels_not_ten_digits(holdout_sample):
    """The driver scores Ray's labels as DigitClassifier.predict_csv does, for any class labels with the digits."""
    from mnist_onnx.runtime._ray_rows import evaluate

    truth = read_kaggle_csv(holdout_sample).labels.astype(np.int16)
    predicted = truth.astype(np.int64).copy()
    predicted[:7] = (predicted[:7] + 1) % 10
    digits = evaluate(truth, predicted, tuple(range(10)))
    assert digits is not None and digits.correct == len(truth) - 7 and digits.confusion.shape == (10, 10)
    # Eleven classes (the digits and a "not a digit" class): a 11x11 matrix, the same count.
    eleven = evaluate(truth, predicted, (*range(10), "other"))
    assert eleven is not None and eleven.correct == digits.correct and eleven.confusion.shape == (11, 11)
    # Labels in another order: each digit is scored against its own column.
    reversed_labels = tuple(range(9, -1, -1))
    shuffled = evaluate(truth, predicted, reversed_labels)
    assert shuffled is not None and shuffled.correct == digits.correct
    assert shuffled.confusion_frame().loc[3, 3] == digits.confusion_frame().loc[3, 3]
    # A file without labels, or labels that lack a digit: no evaluation.
    assert evaluate(np.full(5, -1, np.int16), predicted[:5], tuple(range(10))) is None
    assert evaluate(truth, predicted % 2, (0, 1)) is None


# -- planning and arguments (no Ray needed) ------------------------------------------


@pytest.mark.parametrize("cpus", [1, 2, 3, 4, 8, 64])
@pytest.mark.parametrize("workers", [None, 1, 2, 3, 16])
def test_one_read_task_and_every_actor_always_fit(cpus, workers):
    plan = plan_resources(cpus, workers=workers)
    assert plan.read_cpus + plan.workers * plan.actor_cpus <= cpus
    assert 0 < plan.read_cpus < plan.actor_cpus <= 1  # different requests keep the stages apart
    assert plan.threads >= 1


def test_plan_defaults_and_gpus():
    assert plan_resources(2).workers == 1
    assert plan_resources(16, 4, gpus_per_worker=0.5).workers == 8
    with pytest.raises(MnistOnnxError, match="3 workers × 1 GPUs need 3 GPUs, the Ray cluster reports 2"):
        plan_resources(16, 2, workers=3, gpus_per_worker=1)


def test_inputs_expand_in_order(tmp_path):
    for name in ("b.csv", "a.csv", "c.csv"):
        (tmp_path / name).write_text("")
    files = expand_csv_paths([tmp_path / "c.csv", str(tmp_path / "[ab].csv")])
    assert [p.name for p in files] == ["c.csv", "a.csv", "b.csv"]
    with pytest.raises(MnistOnnxError, match="no file matches"):
        expand_csv_paths(str(tmp_path / "*.csv.gz"))
    with pytest.raises(MnistOnnxError, match="given twice"):
        expand_csv_paths([tmp_path / "a.csv", str(tmp_path / "*.csv")])


def test_outputs_are_checked_before_any_work(parts, tmp_path):
    (tmp_path / "other").mkdir()
    twin = write_csv(pd.read_csv(parts[0]).iloc[:5], tmp_path / "other" / "part-1.csv")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(MnistOnnxError, match="would both write"):
        predict_csv_files([parts[0], twin], output_dir=out_dir)
    with pytest.raises(MnistOnnxError, match="expected an existing directory"):
        predict_csv_files(parts, output_dir=tmp_path / "missing")


def test_missing_ray_names_the_extra(parts, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'mnist-onnx\[ray\]'"):
        predict_csv_files(parts)
    assert main(["predict", str(parts[0]), "--engine", "ray"]) == EXIT_MISSING_EXTRA
    assert "pip install 'mnist-onnx[ray]'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--workers", "2"], "--workers is for the Ray engine: add --engine ray"),
        (["--out-dir", "x"], "--out-dir is for the Ray engine"),
        (["SECOND"], "several CSVs are for the Ray engine"),
    ],
)
def test_ray_options_need_the_ray_engine(parts, arguments, message, capsys):
    arguments = [str(parts[1]) if a == "SECOND" else a for a in arguments]
    assert main(["predict", str(parts[0]), *arguments]) == EXIT_ERROR
    assert message in capsys.readouterr().err


def test_local_engine_never_imports_ray(holdout_sample, tmp_path):
    code = (
        "import sys; from mnist_onnx.cli import main; "
        f"rc = main(['predict', {str(holdout_sample)!r}, '-q', '--out', {str(tmp_path / 'out.csv')!r}]); "
        "print(rc, 'ray' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert result.stdout.split() == ["0", "False"], result.stderr
