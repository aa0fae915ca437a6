"""Training: the tutorial topology, the recipes, and a quick real run that learns and writes every artifact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnist_onnx.cli import main
from mnist_onnx.runtime.kaggle_csv import read_kaggle_csv

pytest.importorskip("tensorflow", reason="needs the 'train' extra")


def test_build_model_is_the_tutorial_network() -> None:
    from mnist_onnx.train import build_model

    model = build_model()
    summary = [(type(layer).__name__, layer.count_params()) for layer in model.layers]
    # Parameter counts follow from the topology: 5*5*1*32+32, 5*5*32*64+64, 14*14*64*128+128, 128*10+10.
    assert summary == [
        ("Conv2D", 832),
        ("Conv2D", 51264),
        ("MaxPooling2D", 0),
        ("Dropout", 0),
        ("Flatten", 0),
        ("Dense", 1605760),
        ("Dropout", 0),
        ("Dense", 1290),
    ]
    conv1, conv2, pool, drop1, _, dense1, drop2, out = model.layers
    assert conv1.kernel_size == conv2.kernel_size == (5, 5)
    assert conv1.padding == conv2.padding == "same"
    assert conv1.activation.__name__ == conv2.activation.__name__ == dense1.activation.__name__ == "relu"
    assert pool.pool_size == (2, 2)
    assert (drop1.rate, drop2.rate) == (0.25, 0.5)
    assert out.activation.__name__ == "softmax"
    assert tuple(model.input_shape) == (None, 28, 28, 1)


def test_seed_recipe_is_the_tutorial() -> None:
    from mnist_onnx.train import RECIPES

    seed = RECIPES["seed"]
    assert (seed.epochs, seed.batch_size, seed.validation_fraction, seed.seed, seed.augment) == (10, 32, 0.2, 2, False)
    assert (seed.lr_patience, seed.lr_factor, seed.min_lr, seed.learning_rate) == (3, 0.5, 1e-5, 0.001)
    assert RECIPES["augmented"].augment and RECIPES["augmented"].rotation_degrees == 10.0


def test_quick_training_learns_and_writes_everything(tiny_training, holdout_sample: Path) -> None:
    out = tiny_training.out_dir
    for name in ("model.keras", "history.json", "training-curves.png", "sample-predictions.png", "report.json"):
        assert (out / name).stat().st_size > 0, name
    assert not (out / ".backup").exists()
    assert (out / "training-curves.png").read_bytes()[:4] == b"\x89PNG"

    report = json.loads((out / "report.json").read_text())
    assert report["recipe"]["name"] == "seed" and report["epochs_run"] == 1 and report["kept_epoch"] == 1
    assert (report["train_rows"], report["validation_rows"]) == (800, 200)
    assert len(report["train_csv_sha256"]) == 64 and report["versions"]["tensorflow"]
    history = json.loads((out / "history.json").read_text())
    assert set(history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}

    import keras

    from mnist_onnx.train.recipes import evaluate_keras

    model = keras.models.load_model(tiny_training.model_path)
    held_out = read_kaggle_csv(holdout_sample)
    accuracy = evaluate_keras(model, held_out.images, held_out.labels)
    # One epoch on 800 real digits: far above the 10% of guessing on 1,000 digits it never saw.
    assert accuracy > 0.6, accuracy


def test_keep_best_restores_the_best_epoch(tmp_path: Path, train_sample: Path) -> None:
    import keras

    from mnist_onnx.train import train

    result = train(train_sample, tmp_path, epochs=3, limit_rows=300, verbose=0)
    r = result.report
    history = json.loads((tmp_path / "history.json").read_text())
    assert r["kept_epoch"] == r["best_epoch"] == int(np.argmax(history["val_accuracy"])) + 1
    # The saved model really is that epoch's: re-scoring the validation rows gives its accuracy back.
    from mnist_onnx.train.recipes import evaluate_keras, split_validation

    data = read_kaggle_csv(train_sample)
    _, val = split_validation(300, 0.2, 2)
    accuracy = evaluate_keras(keras.models.load_model(result.model_path), data.images[val], data.labels[val])
    assert accuracy == pytest.approx(r["kept_val_accuracy"], abs=1 / 60 / 2)  # within half of one of 60 digits


def test_augmented_recipe_keeps_augmentation_out_of_the_model(tmp_path: Path, train_sample: Path) -> None:
    from mnist_onnx.train import train

    result = train(train_sample, tmp_path, recipe="augmented", epochs=1, limit_rows=200, batch_size=32, verbose=0)
    import keras

    model = keras.models.load_model(result.model_path)
    assert [type(layer).__name__ for layer in model.layers][0] == "Conv2D"
    assert result.report["recipe"]["augment"] is True and result.report["train_rows"] == 190  # 5% validation
    assert result.report["recipe"]["keep"] == "last" and result.report["kept_epoch"] == 1
    # Inference is deterministic: augmentation layers would make two calls differ.
    x = read_kaggle_csv(train_sample).images[:8].astype(np.float32) / 255
    np.testing.assert_array_equal(model(x, training=False), model(x, training=False))


def test_cli_train_with_holdout(tmp_path: Path, train_sample: Path, holdout_sample: Path, capsys) -> None:
    labels = tmp_path / "labels.csv"
    held = read_kaggle_csv(holdout_sample)
    labels.write_text("ImageId,Label\n" + "".join(f"{i + 1},{v}\n" for i, v in enumerate(held.labels)))
    rc = main(
        [
            "train",
            str(train_sample),
            "--out",
            str(tmp_path / "run"),
            "--epochs",
            "1",
            "--limit",
            "300",
            "--validation",
            "0.25",
            "--test",
            str(holdout_sample),
            "--test-labels",
            str(labels),
            "-q",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 0 and "epoch" not in err and "saved" not in err, err  # --quiet: no progress lines
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["holdout_rows"] == 1000 and 0.0 <= report["holdout_accuracy"] <= 1.0
    assert report["command_line"].startswith("mnist-onnx train ") and "--validation 0.25" in report["command_line"]
    assert (report["train_rows"], report["validation_rows"]) == (225, 75)


def test_cli_train_errors(tmp_path: Path, capsys) -> None:
    assert main(["train", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o")]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(["train", "x.csv", "--out", str(tmp_path), "--test", "t.csv"]) == 1
    assert "--test and --test-labels go together" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["train", "x.csv", "--out", str(tmp_path), "--epochs", "0"])
    assert info.value.code == 2
    for bad in ("0", "1", "-0.1", "half"):
        with pytest.raises(SystemExit) as info:
            main(["train", "x.csv", "--out", str(tmp_path), "--validation", bad])
        assert info.value.code == 2
    assert "expected a number between 0 and 1, got 'half'" in capsys.readouterr().err


def test_help_and_version_do_not_import_tensorflow() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from mnist_onnx.cli import main\n"
        "for argv in (['--version'], ['--help'], ['train', '--help'], ['data', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        main(argv)\n"
        "heavy = ('tensorflow', 'keras', 'tf2onnx', 'onnx', 'onnxruntime', 'pandas')\n"
        "heavy = sorted(m for m in heavy if m in sys.modules)\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_missing_train_extra_names_the_pip_command(tmp_path: Path, train_sample: Path) -> None:
    code = (
        "import sys\n"
        "sys.modules['keras'] = None  # as if the 'train' extra were not installed\n"
        "from mnist_onnx.cli import main\n"
        f"sys.exit(main(['train', {str(train_sample)!r}, '--out', {str(tmp_path)!r}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 4
    assert "pip install 'mnist-onnx[train]'" in proc.stderr and "Traceback" not in proc.stderr
